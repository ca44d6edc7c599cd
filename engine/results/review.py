"""A finished run's model on its data as it is now: what the Interpret, Clean and Predict pages look at.

The data is read again from disk (it may have been cleaned since the run), with the run's own data
settings; its classes are matched to the model's by name, so relabelling or deleting images never
misaligns targets and outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from engine.data.augment import AugSettings, resize_batch
from engine.data.loaders import DataLoaders, PresizeCache, load_items
from engine.errors import UserError
from engine.train.export import ExportedModel, load_run
from engine.results.gradcam import grad_cam
from engine.results.interpret import Predictions
from engine.train.scoring import EVAL_BS, item_inputs, score
from engine.data.sources import scan_folder
from engine.data.resolve import data_root, resolve
from engine.spec import DataSpec


def load_run_model(run: dict) -> ExportedModel:
    """The exported model of a run from the run history; UserError if it kept none."""
    if not run.get("weights_path"):
        raise UserError(f"Run #{run['id']} has no saved model (it ended before its first epoch finished).")
    return load_run(run["weights_path"])


@dataclass
class RunReview:
    """A run's model, its data loaders (no augmentation) and its predictions on the validation images."""

    run_id: int
    config: DataSpec  # the run's data part, resolved
    dls: DataLoaders
    exported: ExportedModel
    preds: Predictions  # validation items, in dls.valid_idx order; preds.pos are their dls positions

    @property
    def classes(self) -> list[str]:
        return self.exported.classes

    @property
    def valid_pos(self) -> torch.Tensor:
        """Position in dls of each prediction's item (the same as preds.pos)."""
        return self.preds.pos

    def images(self, pos: torch.Tensor | list[int]) -> torch.Tensor:
        """Items at dls positions `pos` as the model sees them: [n, 3, size, size] in [0, 1]."""
        pos = torch.as_tensor(pos, dtype=torch.long)
        if len(pos) == 0:
            return torch.zeros(0, 3, self.dls.size, self.dls.size)
        return resize_batch(self.dls._pixels(pos), self.dls.size).cpu()

    def model_input(self, pos: torch.Tensor | list[int]) -> torch.Tensor:
        """Items at dls positions `pos` as the model takes them (normalised), exactly as they are scored."""
        pos = torch.as_tensor(pos, dtype=torch.long)
        if len(pos) == 0:
            return torch.zeros(0, 3, self.dls.size, self.dls.size)
        return item_inputs(self.dls, pos).cpu()

    def grad_cam(self, pos: torch.Tensor | list[int], targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """Grad-CAM maps [n, size, size] of the items at dls positions `pos`, for `targets` (default: the prediction)."""
        x = self.model_input(pos)
        if len(x) == 0:
            return torch.zeros(0, self.dls.size, self.dls.size)
        return grad_cam(self.exported.model, x, None if targets is None else torch.as_tensor(targets, dtype=torch.long))


def _targets_for_model(dls: DataLoaders, classes: list[str]) -> torch.Tensor:
    """Each item's class as an index into the model's classes; UserError for classes the model never learned."""
    unknown = sorted(set(dls.classes) - set(classes))
    if unknown:
        raise UserError(f"The data now has class(es) this model never learned: {', '.join(unknown[:10])}. "
                        "Train a new model on the Train page to review it.")
    remap = torch.tensor([classes.index(c) for c in dls.classes], dtype=torch.long)
    return remap[dls.y]


def score_items(exported: ExportedModel, dls: DataLoaders, pos: torch.Tensor) -> Predictions:
    """The model's predictions for the items at dls positions `pos` (resized, never augmented)."""
    targets = _targets_for_model(dls, exported.classes)
    logits = score(exported.model, pos, partial(item_inputs, dls))
    items = [dls.items.rel_paths[i] for i in pos.tolist()]
    return Predictions.from_logits(logits, targets[pos], exported.classes, items, pos=pos)


def review_run(run: dict, cache: PresizeCache) -> RunReview:
    """Load a run's model and its data (as it is on disk now) and predict every validation image."""
    exported = load_run_model(run)
    config = resolve(run["spec"]).data
    prep = exported.preprocessing
    items = load_items(config)
    images = cache.get(items.scanned_paths, prep["presize"], prep["method"])
    dls = DataLoaders(items, images, size=prep["size"], bs=EVAL_BS, aug=AugSettings.off(), device="cpu", seed=0)
    preds = score_items(exported, dls, dls.valid_idx)
    return RunReview(run_id=run["id"], config=config, dls=dls, exported=exported, preds=preds)


def loss_table(review: RunReview, split: str | None = None, label: str | None = None) -> pd.DataFrame:
    """Every readable item (of one split and label, if given) with its prediction and loss, largest loss first.

    Columns: item, label, split, predicted, probability (of the prediction), loss, pos (position in review.dls).
    """
    dls = review.dls
    pos = torch.cat([dls.train_idx, dls.valid_idx]).sort().values
    labels = [dls.items.labels[i] for i in pos.tolist()]
    splits = dls.items.split[pos.numpy()]
    keep = torch.tensor([(split is None or s == split) and (label is None or lab == label)
                         for s, lab in zip(splits, labels)], dtype=torch.bool)
    pos = pos[keep]
    p = score_items(review.exported, dls, pos)
    table = pd.DataFrame({
        "item": p.items,
        "label": [dls.items.labels[i] for i in pos.tolist()],
        "split": dls.items.split[pos.numpy()].tolist(),
        "predicted": [p.classes[c] for c in p.preds.tolist()],
        "probability": p.probs.gather(1, p.preds[:, None]).squeeze(1).tolist() if len(p) else [],
        "loss": p.losses.tolist(),
        "pos": p.pos.tolist(),
    })
    return table.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def data_fingerprint(config: DataSpec) -> str:
    """Changes whenever an image of the data set is added, removed, renamed or rewritten, or the label CSV changes."""
    scan = scan_folder(data_root(config))
    paths = list(scan.images)
    for csv_path in (config.label.csv_path if config.label.kind == "csv" else "",
                     config.split.csv_path if config.split.kind == "csv" else ""):
        if csv_path:
            paths.append(Path(csv_path))
    return PresizeCache.key(paths, 0, "")
