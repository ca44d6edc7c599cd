"""Tests for engine/results/interpret.py: hand-made predictions with known answers, then real ones on the built-in digits."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from engine.data.loaders import DataLoaders
from engine.results.interpret import (Predictions, cell_items, confusion_matrix, get_preds, items_in_cell, most_confused,
                              most_unsure, per_class_metrics, top_losses)

CLASSES = ["cat", "dog", "fox"]
#            probabilities         target   prediction
ROWS = [([0.70, 0.20, 0.10], 0),  # cat      cat
        ([0.65, 0.25, 0.10], 0),  # cat      cat
        ([0.30, 0.60, 0.10], 0),  # cat      dog
        ([0.10, 0.80, 0.10], 1),  # dog      dog
        ([0.50, 0.40, 0.10], 1),  # dog      cat
        ([0.20, 0.70, 0.10], 2),  # fox      dog
        ([0.60, 0.35, 0.05], 2),  # fox      cat
        ([0.20, 0.70, 0.10], 2)]  # fox      dog   (same row as item 5: an exact tie in loss)
# fox is never predicted: its precision has nothing to divide by
POS = [12, 3, 7, 30, 5, 21, 9, 14]  # where each item sits in its DataLoaders


@pytest.fixture
def hand() -> tuple[Predictions, torch.Tensor]:
    logits = torch.tensor([r for r, _ in ROWS]).log()
    targets = torch.tensor([t for _, t in ROWS])
    items = [f"img{i}.png" for i in range(8)]
    return Predictions.from_logits(logits, targets, CLASSES, items, pos=torch.tensor(POS)), logits


def test_predictions_from_logits(hand):
    p, logits = hand
    assert torch.allclose(p.probs, torch.tensor([r for r, _ in ROWS]), atol=1e-6)
    assert torch.allclose(p.probs.sum(1), torch.ones(8))
    assert torch.equal(p.losses, F.cross_entropy(logits, p.targets, reduction="none"))
    assert torch.allclose(p.losses, -torch.tensor([r[t] for r, t in ROWS]).log(), atol=1e-6)
    assert p.preds.tolist() == [0, 0, 1, 1, 0, 1, 0, 1]
    assert p.accuracy == 3 / 8
    assert len(p) == 8
    assert p.pos.tolist() == POS


def test_positions_default_to_the_order_of_the_items():
    p = Predictions.from_logits(torch.zeros(3, 2), torch.tensor([0, 1, 0]), ["a", "b"], ["x", "y", "z"])
    assert p.pos.tolist() == [0, 1, 2]
    assert top_losses(p, 3)["pos"].tolist() == top_losses(p, 3)["index"].tolist()


def test_nothing_scored_gives_empty_predictions():
    p = Predictions.from_logits(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), CLASSES, [], pos=torch.zeros(0))
    assert len(p) == 0 and p.probs.shape == (0, 3) and p.pos.dtype == torch.long
    assert len(top_losses(p)) == 0 and confusion_matrix(p).sum() == 0


def test_top_losses(hand):
    p, _ = hand
    top = top_losses(p, k=3)
    assert list(top.columns) == ["item", "actual", "predicted", "loss", "probability", "index", "pos"]
    assert top["index"].tolist() == [6, 5, 7]  # 5 and 7 tie: validation order
    assert top["pos"].tolist() == [POS[6], POS[5], POS[7]]
    assert top["item"].tolist() == ["img6.png", "img5.png", "img7.png"]
    assert top["actual"].tolist() == ["fox"] * 3
    assert top["predicted"].tolist() == ["cat", "dog", "dog"]
    assert np.allclose(top["loss"], [-math.log(0.05), -math.log(0.1), -math.log(0.1)], atol=1e-5)
    assert np.allclose(top["probability"], [0.6, 0.7, 0.7], atol=1e-6)
    assert top_losses(p, k=100)["index"].tolist() == [6, 5, 7, 2, 4, 1, 0, 3]


def test_confusion_matrix_matches_sklearn(hand):
    p, _ = hand
    cm = confusion_matrix(p)
    assert cm.tolist() == [[2, 1, 0],
                           [1, 1, 0],
                           [1, 2, 0]]
    assert np.array_equal(cm, sk_confusion_matrix(p.targets.numpy(), p.preds.numpy(), labels=[0, 1, 2]))


def test_most_confused(hand):
    p, _ = hand
    assert most_confused(p) == [("fox", "dog", 2), ("cat", "dog", 1), ("dog", "cat", 1), ("fox", "cat", 1)]
    assert most_confused(p, min_val=2) == [("fox", "dog", 2)]
    assert most_confused(p, min_val=3) == []


def test_per_class_metrics_match_sklearn(hand):
    p, _ = hand
    m = per_class_metrics(p)
    assert list(m.index) == CLASSES and list(m.columns) == ["precision", "recall", "f1", "support"]
    assert np.allclose(m["precision"], [2 / 4, 1 / 4, 0])
    assert np.allclose(m["recall"], [2 / 3, 1 / 2, 0])
    assert np.allclose(m["f1"], [4 / 7, 1 / 3, 0])
    assert m["support"].tolist() == [3, 2, 3]
    precision, recall, f1, support = precision_recall_fscore_support(
        p.targets.numpy(), p.preds.numpy(), labels=[0, 1, 2], zero_division=0)
    assert np.allclose(m["precision"], precision) and np.allclose(m["recall"], recall) and np.allclose(m["f1"], f1)
    assert np.array_equal(m["support"], support)


def test_most_unsure(hand):
    p, _ = hand
    unsure = most_unsure(p, k=4)
    assert list(unsure.columns) == ["item", "actual", "predicted", "loss", "probability",
                                    "runner_up", "runner_up_probability", "margin", "index", "pos"]
    assert unsure["index"].tolist() == [4, 6, 2, 1]  # margins .10, .25, .30, .40
    assert unsure["pos"].tolist() == [POS[4], POS[6], POS[2], POS[1]]
    assert unsure["predicted"].tolist() == ["cat", "cat", "dog", "cat"]
    assert unsure["runner_up"].tolist() == ["dog", "dog", "cat", "dog"]
    assert np.allclose(unsure["margin"], [0.10, 0.25, 0.30, 0.40], atol=1e-6)
    assert np.allclose(unsure["runner_up_probability"], [0.40, 0.35, 0.30, 0.25], atol=1e-6)


def test_most_unsure_with_a_tie_names_two_different_classes():
    p = Predictions(probs=torch.tensor([[0.5, 0.5], [0.9, 0.1]]), targets=torch.tensor([1, 0]),
                    losses=torch.zeros(2), classes=["a", "b"], items=["x", "y"])
    unsure = most_unsure(p, k=1)
    assert unsure.loc[0, ["predicted", "runner_up", "margin"]].tolist() == ["a", "b", 0.0]


def test_items_in_cell(hand):
    p, _ = hand
    assert items_in_cell(p, "fox", "dog") == [5, 7]
    assert items_in_cell(p, "cat", "cat") == [0, 1]
    assert items_in_cell(p, "fox", "fox") == []
    cm = confusion_matrix(p)
    assert all(len(items_in_cell(p, a, b)) == cm[i, j] for i, a in enumerate(CLASSES) for j, b in enumerate(CLASSES))
    with pytest.raises(KeyError, match="wolf"):
        items_in_cell(p, "wolf", "dog")


def test_cell_items_are_a_top_losses_table_of_one_cell(hand):
    p, _ = hand
    cell = cell_items(p, "cat", "cat")
    assert list(cell.columns) == list(top_losses(p).columns)
    assert cell["index"].tolist() == [1, 0]  # losses -log .65 > -log .70
    assert cell["pos"].tolist() == [POS[1], POS[0]] and cell["item"].tolist() == ["img1.png", "img0.png"]
    assert cell_items(p, "fox", "dog")["index"].tolist() == [5, 7]  # an exact tie keeps validation order
    assert len(cell_items(p, "fox", "fox")) == 0
    everything = top_losses(p, k=len(p))
    for a in CLASSES:
        for b in CLASSES:  # the same rows as top_losses restricted to the cell
            rows = everything[(everything.actual == a) & (everything.predicted == b)]
            assert cell_items(p, a, b).to_dict("list") == rows.to_dict("list")


# ---------------------------------------------------------------- get_preds on the built-in digits

@pytest.fixture(scope="module")
def dls(digits_dls, one_thread) -> DataLoaders:
    return digits_dls


@pytest.fixture(scope="module")
def trained(dls) -> nn.Module:
    """A linear model with dropout (so eval mode matters), trained for a few steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 28 * 28, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        for x, y in dls.train():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def test_get_preds_on_digits(dls, trained):
    trained.train()
    trained[1].eval()  # a mixed state, as with a frozen body: restored module by module
    p = get_preds(trained, dls)
    assert [m.training for m in trained.modules()] == [True, True, False, True]

    assert len(p) == dls.n_valid == 359 and p.probs.shape == (359, 10)
    assert p.classes == dls.classes
    assert p.items == [dls.items.rel_paths[i] for i in dls.valid_idx.tolist()]
    assert torch.equal(p.pos, dls.valid_idx)
    assert torch.equal(p.targets, dls.y[dls.valid_idx])
    assert torch.allclose(p.probs.sum(1), torch.ones(359), atol=1e-5)
    assert p.accuracy == (p.preds == p.targets).float().mean().item()
    assert p.accuracy > 0.5  # it learned something: chance is 0.1

    # an independent computation: the whole validation set at once, in eval mode
    x_all = torch.cat([x for x, _ in dls.valid()])
    trained.eval()
    with torch.no_grad():
        logits = trained(x_all)
    assert torch.allclose(p.probs, logits.softmax(1), atol=1e-6)
    assert torch.allclose(p.losses, F.cross_entropy(logits, p.targets, reduction="none"), atol=1e-5)
    assert torch.equal(get_preds(trained, dls).probs, p.probs)  # dropout was off: the same every time
    assert not trained.training  # eval stays eval


def test_digits_metrics_match_sklearn(dls, trained):
    p = get_preds(trained, dls)
    labels = list(range(10))
    assert np.array_equal(confusion_matrix(p), sk_confusion_matrix(p.targets, p.preds, labels=labels))
    precision, recall, f1, support = precision_recall_fscore_support(p.targets, p.preds, labels=labels, zero_division=0)
    m = per_class_metrics(p)
    assert np.allclose(m[["precision", "recall", "f1"]].to_numpy(), np.stack([precision, recall, f1], 1))
    assert m["support"].tolist() == support.tolist()
    assert sum(n for *_, n in most_confused(p)) == int((p.preds != p.targets).sum())
    worst = top_losses(p, k=5)
    assert worst["loss"].is_monotonic_decreasing and worst["loss"].iloc[0] == p.losses.max().item()
