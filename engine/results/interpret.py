"""Interpretation, as in fastai's ClassificationInterpretation: predictions on the validation set, in order.

Every function returns tensors, arrays or data frames; plotting lives elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from engine.data.loaders import DataLoaders
from engine.train.scoring import item_inputs, score


@dataclass
class Predictions:
    """The model's view of some items of a data set: probabilities, target and loss, with each item's dls position.

    Prediction i is item `items[i]`, at position `pos[i]` of the DataLoaders it came from (what
    `RunReview.images` and the galleries take); tables give both as "index" and "pos".
    """

    probs: torch.Tensor  # [N, C] softmax probabilities
    targets: torch.Tensor  # [N] long
    losses: torch.Tensor  # [N] per-item cross-entropy
    classes: list[str]
    items: list[str]  # relative path of each item
    pos: torch.Tensor | None = None  # [N] long: position in the DataLoaders of each item (0..N-1 if not given)

    def __post_init__(self) -> None:
        self.pos = torch.arange(len(self.targets)) if self.pos is None else torch.as_tensor(self.pos, dtype=torch.long)

    @classmethod
    def from_logits(cls, logits: torch.Tensor, targets: torch.Tensor, classes: list[str], items: list[str],
                    pos: torch.Tensor | None = None) -> "Predictions":
        """Probabilities and per-item losses from raw model outputs [N, C]."""
        logits = logits.detach().float().cpu()
        if not len(logits):
            logits = torch.zeros(0, len(classes))  # nothing was scored: [0, 0] -> [0, C]
        targets = targets.detach().long().cpu()
        return cls(probs=logits.softmax(dim=1), targets=targets,
                   losses=F.cross_entropy(logits, targets, reduction="none"), classes=list(classes), items=list(items),
                   pos=None if pos is None else pos.detach().long().cpu())

    @property
    def preds(self) -> torch.Tensor:
        """[N] the predicted class of each item."""
        return self.probs.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return (self.preds == self.targets).float().mean().item()

    def __len__(self) -> int:
        return len(self.targets)


def get_preds(model: nn.Module, dls: DataLoaders) -> Predictions:
    """Predictions of `model` on the validation items, in `dls.valid_idx` order; its modes are left as found."""
    pos = dls.valid_idx
    logits = score(model, pos, partial(item_inputs, dls), bs=dls.bs)  # the batches of dls.valid()
    items = [dls.items.rel_paths[i] for i in pos.tolist()]
    return Predictions.from_logits(logits, dls.y[pos], dls.classes, items, pos=pos)


def _table(p: Predictions, idx: torch.Tensor) -> pd.DataFrame:
    """item, actual, predicted, loss, probability (of the prediction), index (into `p`), pos (in the dls) of `idx`."""
    idx = idx.long()
    preds = p.preds[idx]
    return pd.DataFrame({
        "item": [p.items[i] for i in idx.tolist()],
        "actual": [p.classes[t] for t in p.targets[idx].tolist()],
        "predicted": [p.classes[c] for c in preds.tolist()],
        "loss": p.losses[idx].tolist(),
        "probability": p.probs[idx, preds].tolist(),
        "index": idx.tolist(),
        "pos": p.pos[idx].tolist(),
    })


def top_losses(p: Predictions, k: int = 9) -> pd.DataFrame:
    """The k items with the largest loss, largest first (ties keep validation order)."""
    order = torch.sort(p.losses, descending=True, stable=True).indices
    return _table(p, order[:k])


def confusion_matrix(p: Predictions) -> np.ndarray:
    """[C, C] counts: rows actual class, columns predicted class."""
    c = len(p.classes)
    return torch.bincount(p.targets * c + p.preds, minlength=c * c).view(c, c).numpy()


def most_confused(p: Predictions, min_val: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) off the diagonal with count >= min_val, largest first, then by names."""
    cm = confusion_matrix(p)
    pairs = [(p.classes[a], p.classes[b], int(cm[a, b]))
             for a in range(len(p.classes)) for b in range(len(p.classes)) if a != b and cm[a, b] >= min_val]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def per_class_metrics(p: Predictions) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (a ratio with nothing to divide by is 0)."""
    cm = confusion_matrix(p).astype(np.int64)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros(len(num), dtype=np.float64), where=den > 0)

    return pd.DataFrame({
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, support),
        "f1": ratio(2 * tp, predicted + support),  # = 2PR / (P + R)
        "support": support,
    }, index=pd.Index(p.classes, name="class"))


def most_unsure(p: Predictions, k: int = 9) -> pd.DataFrame:
    """The k items whose two most likely classes are closest in probability, closest first."""
    first = p.probs.gather(1, p.preds[:, None]).squeeze(1)
    others = p.probs.scatter(1, p.preds[:, None], float("-inf"))  # the prediction masked out (argmax breaks ties)
    second, runner_up = others.max(dim=1)
    margin = first - second
    idx = torch.sort(margin, stable=True).indices[:k]
    table = _table(p, idx)
    table.insert(5, "runner_up", [p.classes[c] for c in runner_up[idx].tolist()])
    table.insert(6, "runner_up_probability", second[idx].tolist())
    table.insert(7, "margin", margin[idx].tolist())
    return table


def items_in_cell(p: Predictions, actual: str, predicted: str) -> list[int]:
    """Indices (into `p`) of the items of class `actual` predicted as `predicted`, in order."""
    unknown = [c for c in (actual, predicted) if c not in p.classes]
    if unknown:
        raise KeyError(f"no class named {unknown[0]!r}; the classes are {', '.join(p.classes)}")
    a, b = p.classes.index(actual), p.classes.index(predicted)
    return torch.nonzero((p.targets == a) & (p.preds == b)).flatten().tolist()


def cell_items(p: Predictions, actual: str, predicted: str) -> pd.DataFrame:
    """The items of one confusion-matrix cell as a `top_losses` table, largest loss first (ties keep their order)."""
    idx = torch.tensor(items_in_cell(p, actual, predicted), dtype=torch.long)
    order = torch.sort(p.losses[idx], descending=True, stable=True).indices
    return _table(p, idx[order])
