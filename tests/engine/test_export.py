"""Tests for engine/train/export.py: a small model trained on the built-in digits, exported, loaded back and used to predict."""
import copy as copy_module
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from engine.data.augment import AugSettings
from engine.data.builtin import BUILTINS
from engine.data.loaders import DataLoaders
from engine.errors import UserError
from engine.train.export import ExportedModel, export_run, load_run, predict, preprocess
from engine.data.images import open_image
from engine.results.interpret import get_preds
from engine.train.models import create_model
from engine.spec import DataSpec

PRESIZE, SIZE = 32, 28


@pytest.fixture(scope="module")
def dls(digits_dls, one_thread) -> DataLoaders:
    return digits_dls


@pytest.fixture(scope="module")
def trained(dls, quick_train):
    """create_model('small', 10) after 60 steps of Adam on batches of 16 (quick on a CPU), and its data configuration."""
    model = quick_train(DataLoaders(dls.items, dls.images, size=SIZE, bs=16, aug=AugSettings.off(), seed=0))
    config = DataSpec(source=str(dls.items.root), label=BUILTINS["digits-names"].label_rule,
                      split=BUILTINS["digits-names"].split_rule, size=SIZE, presize=PRESIZE, presize_method="crop")
    return model, config


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dls, trained):
    model, config = trained
    out = export_run(tmp_path_factory.mktemp("runs") / "digits-small", model, "small", dls.classes, config,
                     extra={"accuracy": np.float32(0.5), "epochs": 3, "history": np.array([1.0, 0.5])})
    return out


def test_export_writes_the_files(exported, dls):
    assert sorted(p.name for p in exported.iterdir()) == ["labels.json", "model.pt", "preprocessing.json", "run.json"]
    assert json.loads((exported / "labels.json").read_text()) == dls.classes
    assert json.loads((exported / "preprocessing.json").read_text()) == {
        "arch": "small", "n_classes": 10, "size": 28, "presize": 32, "method": "crop",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "pool": "max_avg"}
    assert json.loads((exported / "run.json").read_text()) == {"accuracy": 0.5, "epochs": 3, "history": [1.0, 0.5]}
    assert isinstance(torch.load(exported / "model.pt", weights_only=True), dict)  # the state dict only


def test_load_run_gives_the_same_model_and_predictions(exported, dls, trained):
    model, _ = trained
    loaded = load_run(exported)
    assert isinstance(loaded, ExportedModel) and loaded.classes == dls.classes
    assert not any(m.training for m in loaded.model.modules())
    original, again = model.state_dict(), loaded.model.state_dict()
    assert list(original) == list(again)
    assert all(torch.equal(original[k], again[k]) for k in original)

    before, after = get_preds(model, dls), get_preds(loaded.model, dls)
    assert torch.equal(before.probs, after.probs)
    assert before.accuracy > 0.5  # it learned something: chance is 0.1


def test_preprocess_is_the_validation_path(exported, dls):
    loaded = load_run(exported)
    idx = dls.valid_idx[:20].tolist()
    images = [open_image(dls.items.root / dls.items.rel_paths[i]) for i in idx]
    x_valid, _ = next(dls.valid())
    assert torch.equal(preprocess(images, loaded.preprocessing), x_valid[:20])


def test_predict_agrees_with_get_preds(exported, dls):
    loaded = load_run(exported)
    n = 40
    images = [open_image(dls.items.root / dls.items.rel_paths[i]) for i in dls.valid_idx[:n].tolist()]
    results = predict(loaded, images, k=3)
    p = get_preds(loaded.model, dls)
    assert len(results) == n
    assert [r[0][0] for r in results] == [dls.classes[c] for c in p.preds[:n].tolist()]
    for r, probs in zip(results, p.probs[:n]):
        values = [v for _, v in r]
        assert len(r) == 3 and len({c for c, _ in r}) == 3
        assert values == sorted(values, reverse=True) and sum(values) <= 1 + 1e-6
        assert np.allclose(values, probs.sort(descending=True).values[:3].numpy(), atol=1e-5)
    everything = predict(loaded, images[:2], k=50)  # k larger than the classes: all of them
    assert [len(r) for r in everything] == [10, 10]
    assert all(abs(sum(v for _, v in r) - 1) < 1e-5 for r in everything)
    assert predict(loaded, [], k=3) == []


def test_predict_accepts_any_colour_mode(exported, dls):
    loaded = load_run(exported)
    rgb = open_image(dls.items.root / dls.items.rel_paths[dls.valid_idx[0]])
    grey, rgba = rgb.convert("L"), rgb.convert("RGBA")
    assert predict(loaded, [rgb], k=2) == predict(loaded, [grey], k=2) == predict(loaded, [rgba], k=2)


# ---------------------------------------------------------------- exports from before the fastai head

def legacy_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Loupe's forward before its head matched fastai: the concat pool put the average first, then the max."""
    features = model[0](x)
    pooled = torch.cat([features.mean((2, 3), keepdim=True), features.amax((2, 3), keepdim=True)], dim=1)
    return model[1][1:](pooled)


def make_legacy(run_dir):
    """An export as Loupe wrote it before the head matched fastai: no "pool" in preprocessing.json."""
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    del prep["pool"]
    (run_dir / "preprocessing.json").write_text(json.dumps(prep))
    return run_dir


def test_an_export_without_a_pool_marker_predicts_as_before(exported, tmp_path, dls, trained):
    legacy = make_legacy(shutil.copytree(exported, tmp_path / "legacy"))
    loaded = load_run(legacy)
    assert loaded.model[1][0].order == "avg_max" and "pool" not in loaded.preprocessing
    reference = copy_module.deepcopy(trained[0]).eval()  # the same weights
    x, _ = next(dls.valid())
    with torch.no_grad():
        before = legacy_forward(reference, x)
        assert torch.equal(loaded.model(x), before)
        assert not torch.allclose(load_run(exported).model(x), before)  # read with fastai's head, it would differ
    images = [open_image(dls.items.root / dls.items.rel_paths[i]) for i in dls.valid_idx[:8].tolist()]
    probs = legacy_forward(reference, preprocess(images, loaded.preprocessing)).softmax(dim=1)
    top = probs.topk(3, dim=1)
    assert predict(loaded, images, k=3) == [[(dls.classes[i], p) for i, p in zip(idx, values)]
                                            for idx, values in zip(top.indices.tolist(), top.values.tolist())]


def test_the_pool_marker_follows_the_model(tmp_path, dls, trained):
    _, config = trained
    model, _ = create_model("small", 10, pool="avg_max")
    run = export_run(tmp_path / "run", model, "small", dls.classes, config)
    assert json.loads((run / "preprocessing.json").read_text())["pool"] == "avg_max"
    assert load_run(run).model[1][0].order == "avg_max"


# ---------------------------------------------------------------- damaged exports

UNPICKLED = {"flag": False}


def _set_flag():
    UNPICKLED["flag"] = True


class Evil:
    """Unpickling this calls _set_flag: what a malicious model file could do with plain torch.load."""

    def __reduce__(self):
        return _set_flag, ()


@pytest.fixture
def copy(exported, tmp_path):
    return shutil.copytree(exported, tmp_path / "run")


def test_random_bytes_as_model_is_a_user_error(copy):
    (copy / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UserError, match="model.pt .* cannot be read safely"):
        load_run(copy)


@pytest.mark.parametrize("save", [lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=2)), torch.save])
def test_a_pickle_that_runs_code_is_refused_unrun(copy, save):
    save({"weights": Evil()}, copy / "model.pt")
    with pytest.raises(UserError, match="cannot be read safely"):
        load_run(copy)
    assert UNPICKLED["flag"] is False
    pickle.loads(pickle.dumps(Evil()))  # the payload is real: plain unpickling does run it
    assert UNPICKLED["flag"] is True
    UNPICKLED["flag"] = False


def test_weights_that_do_not_fit_are_a_user_error(copy):
    state = torch.load(copy / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, copy / "model.pt")
    with pytest.raises(UserError, match="does not fit a small model with 10 classes"):
        load_run(copy)


def test_missing_files_are_user_errors(copy):
    (copy / "labels.json").unlink()
    with pytest.raises(UserError, match="labels.json is missing"):
        load_run(copy)
    shutil.rmtree(copy)
    with pytest.raises(UserError, match="There is no folder"):
        load_run(copy)


def test_missing_model_is_a_user_error(copy):
    (copy / "model.pt").unlink()
    with pytest.raises(UserError, match="model.pt is missing"):
        load_run(copy)


def test_garbled_json_is_a_user_error(copy):
    (copy / "preprocessing.json").write_text("{not json")
    with pytest.raises(UserError, match="preprocessing.json .* not valid JSON"):
        load_run(copy)
    (copy / "preprocessing.json").write_text(json.dumps({"arch": "small"}))
    with pytest.raises(UserError, match="lacks n_classes, size, presize, method, mean, std"):
        load_run(copy)
    (copy / "labels.json").write_text(json.dumps(["only-one"]))
    with pytest.raises(UserError, match="at least two class names"):
        load_run(copy)


def test_an_unknown_pool_is_a_user_error(copy):
    prep = json.loads((copy / "preprocessing.json").read_text())
    (copy / "preprocessing.json").write_text(json.dumps({**prep, "pool": "min_max"}))
    with pytest.raises(UserError, match="unknown head layout “min_max”"):
        load_run(copy)
