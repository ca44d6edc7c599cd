"""Tests for engine/results/review.py: a run's model re-scored on its data as it is on disk now."""
import pytest
import torch

from engine.data.augment import normalize
from engine.data.builtin import BUILTINS, DIGIT_WORDS
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.train.export import export_run
from engine.results.gradcam import grad_cam
from engine.results.interpret import get_preds, top_losses
from engine.train.models import create_model
from engine.results.review import loss_table, review_run
from engine.data.resolve import resolve
from engine.spec import DataSpec, RunSpec

SPEC = BUILTINS["digits-names"]


@pytest.fixture
def digits_root(tmp_path, write_digits):
    (tmp_path / "digits").mkdir()
    return write_digits(tmp_path / "digits", per_class=12)


@pytest.fixture
def run(tmp_path, digits_root, one_thread):
    """An untrained small model exported for a run on 120 real digits (its predictions are what they are)."""
    torch.manual_seed(0)
    spec = RunSpec(data=DataSpec(source=str(digits_root), label=SPEC.label_rule, split=SPEC.split_rule, size=28,
                                 presize=32), augment=SPEC.aug)
    model, _ = create_model("small", 10)
    out = export_run(tmp_path / "run", model, "small", sorted(DIGIT_WORDS), spec.data)
    return {"id": 7, "spec": spec, "weights_path": str(out)}, spec.data, model


def test_the_review_reads_the_run_spec_data(run):
    record, config, _ = run
    assert review_run(record, PresizeCache()).config == resolve(record["spec"]).data == config


def test_review_matches_get_preds(run):
    record, config, model = run
    review = review_run(record, PresizeCache())
    model.eval()
    reference = get_preds(model, review.dls)
    assert review.preds.items == reference.items
    assert torch.equal(review.preds.targets, reference.targets)
    assert torch.allclose(review.preds.probs, reference.probs, atol=1e-6)
    assert len(review.preds) == review.dls.n_valid == len(review.valid_pos)
    assert torch.equal(review.preds.pos, review.dls.valid_idx) and torch.equal(review.valid_pos, review.preds.pos)
    assert torch.equal(reference.pos, review.preds.pos)
    worst = top_losses(review.preds, 3)
    assert worst["pos"].tolist() == review.valid_pos[worst["index"].tolist()].tolist()  # no translation left to pages
    images = review.images(worst["pos"].tolist())
    assert images.shape == (3, 3, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_model_input_and_grad_cam_take_dls_positions(run):
    record, _, model = run
    review = review_run(record, PresizeCache())
    pos = review.preds.pos[:4]
    x = review.model_input(pos)
    assert torch.equal(x, normalize(review.images(pos)))
    model.eval()
    with torch.no_grad():  # the input the scores came from
        assert torch.allclose(model(x).softmax(1), review.preds.probs[:4], atol=1e-6)
    assert torch.equal(review.grad_cam(pos), grad_cam(review.exported.model, x))
    targets = [1, 2, 3, 4]
    assert torch.equal(review.grad_cam(pos, targets), grad_cam(review.exported.model, x, torch.tensor(targets)))
    assert review.grad_cam([]).shape == (0, 28, 28) and review.model_input([]).shape == (0, 3, 28, 28)


def test_loss_table_filters_and_sorts(run):
    record, _, _ = run
    review = review_run(record, PresizeCache())
    table = loss_table(review)
    assert len(table) == review.dls.n_train + review.dls.n_valid
    assert table["loss"].is_monotonic_decreasing
    sevens = loss_table(review, split="train", label="seven")
    assert set(sevens["label"]) == {"seven"} and set(sevens["split"]) == {"train"}
    assert sorted(sevens["item"]) == sorted(table[(table.label == "seven") & (table.split == "train")]["item"])
    expected = review.preds.losses[review.preds.items.index(table[table.split == "valid"].iloc[0]["item"])].item()
    assert table[table.split == "valid"].iloc[0]["loss"] == pytest.approx(expected, abs=1e-6)
    items = review.dls.items.rel_paths
    assert all(items[pos] == item for pos, item in zip(table["pos"], table["item"]))
    assert len(loss_table(review, label="no such class")) == 0


def test_classes_are_matched_by_name_after_a_class_disappears(run, digits_root):
    record, _, _ = run
    before = review_run(record, PresizeCache())
    for f in digits_root.glob("zero_*.png"):
        f.unlink()
    after = review_run(record, PresizeCache())
    assert "zero" not in after.dls.classes and after.classes == before.classes  # the model keeps its 10 outputs
    labels = [after.classes[t] for t in after.preds.targets.tolist()]
    truth = [after.dls.items.labels[i] for i in after.valid_pos.tolist()]
    assert labels == truth


def test_a_class_the_model_never_learned_is_a_user_error(run, digits_root):
    record, _, _ = run
    for f in list(digits_root.glob("nine_*.png"))[:6]:
        f.rename(f.with_name(f.name.replace("nine", "ten")))
    with pytest.raises(UserError, match="never learned: ten"):
        review_run(record, PresizeCache())


def test_a_run_without_weights_is_a_user_error(run):
    record, _, _ = run
    with pytest.raises(UserError, match="no saved model"):
        review_run({**record, "weights_path": None}, PresizeCache())
