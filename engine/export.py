"""Export a trained model to a folder, and load it back to predict on new images exactly as in validation.

A run folder holds:
    model.pt            the state dict only (read back with weights_only=True: tensors, never arbitrary objects)
    labels.json         the classes, in the order of the model's outputs
    preprocessing.json  arch, n_classes, size, presize, method, mean, std
    run.json            anything else worth keeping (metrics, settings), if given
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from engine.augment import IMAGENET_MEAN, IMAGENET_STD, normalize, resize_batch
from engine.data import DataConfig
from engine.errors import UserError
from engine.images import PRESIZE_METHODS, presize, to_rgb
from engine.models import create_model

MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, RUN_FILE = "model.pt", "labels.json", "preprocessing.json", "run.json"
PREPROCESSING_KEYS = ("arch", "n_classes", "size", "presize", "method", "mean", "std")
PREDICT_BS = 64  # images per forward pass in `predict`


@dataclass
class ExportedModel:
    """A model loaded from a run folder, in eval mode on the CPU, with what it needs to predict."""

    model: nn.Module
    classes: list[str]
    preprocessing: dict


def _jsonable(value):
    """json.dumps fallback for the numpy scalars, tensors and paths that metrics tend to contain."""
    if isinstance(value, (np.generic, torch.Tensor)) and value.ndim == 0:
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be written to JSON")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")


def export_run(out_dir: Path, model: nn.Module, arch: str, classes: list[str], config: DataConfig,
               extra: dict | None = None) -> Path:
    """Write the model's weights, its classes and its preprocessing (and `extra` as run.json) to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    torch.save(state, out_dir / MODEL_FILE)
    _write_json(out_dir / LABELS_FILE, list(classes))
    _write_json(out_dir / PREPROCESSING_FILE, {
        "arch": arch, "n_classes": len(classes), "size": config.size, "presize": config.presize,
        "method": config.method, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
    })
    if extra is not None:
        _write_json(out_dir / RUN_FILE, extra)
    return out_dir


def _read_json(path: Path):
    if not path.is_file():
        raise UserError(f"{path.name} is missing from {path.parent}: this folder is not a complete exported model.")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path.name} in {path.parent} is damaged: it is not valid JSON ({e}).") from e


def _check_preprocessing(prep, classes, folder: Path) -> None:
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise UserError(f"{LABELS_FILE} in {folder} is damaged: it should list at least two class names.")
    missing = [k for k in PREPROCESSING_KEYS if not isinstance(prep, dict) or k not in prep]
    if missing:
        raise UserError(f"{PREPROCESSING_FILE} in {folder} is damaged: it lacks {', '.join(missing)}.")
    if prep["n_classes"] != len(classes):
        raise UserError(f"{PREPROCESSING_FILE} says {prep['n_classes']} classes but {LABELS_FILE} lists {len(classes)}.")
    if prep["method"] not in PRESIZE_METHODS:
        raise UserError(f"{PREPROCESSING_FILE} names an unknown presize method {prep['method']!r}.")
    sizes_ok = all(isinstance(prep[k], int) and prep[k] > 0 for k in ("size", "presize"))
    stats_ok = all(isinstance(prep[k], list) and len(prep[k]) == 3 for k in ("mean", "std"))
    if not (sizes_ok and stats_ok):
        raise UserError(f"{PREPROCESSING_FILE} in {folder} is damaged: size, presize, mean or std are not valid.")


def load_run(run_dir: Path) -> ExportedModel:
    """Rebuild an exported model from its folder, in eval mode on the CPU; UserError if anything is missing or damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"There is no folder {run_dir}.")
    classes = _read_json(run_dir / LABELS_FILE)
    prep = _read_json(run_dir / PREPROCESSING_FILE)
    _check_preprocessing(prep, classes, run_dir)
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        raise UserError(f"{MODEL_FILE} is missing from {run_dir}: this folder is not a complete exported model.")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a bad or unsafe file; all mean the same to the user
        raise UserError(f"{MODEL_FILE} in {run_dir} cannot be read safely: it is damaged or not a Loupe export "
                        f"({type(e).__name__}).") from e
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"{MODEL_FILE} in {run_dir} is not a Loupe export: it does not hold named tensors.")
    model, _ = create_model(prep["arch"], prep["n_classes"], pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing, unexpected or mis-shaped layers
        raise UserError(f"{MODEL_FILE} in {run_dir} does not fit a {prep['arch']} model with "
                        f"{prep['n_classes']} classes (its layers do not match).") from e
    model.eval()
    return ExportedModel(model=model, classes=classes, preprocessing=prep)


def preprocess(images: list[Image.Image], preprocessing: dict) -> torch.Tensor:
    """PIL images -> normalised float batch [B, 3, size, size], by the validation path: RGB, presize, resize, normalize."""
    pixels = []
    for img in images:
        img = to_rgb(ImageOps.exif_transpose(img))  # a no-op for images opened with engine.images.open_image
        square = presize(img, preprocessing["presize"], preprocessing["method"])
        pixels.append(torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1))
    x = resize_batch(torch.stack(pixels), preprocessing["size"])
    return normalize(x, preprocessing["mean"], preprocessing["std"])


def predict(exported: ExportedModel, images: list[Image.Image], k: int = 5) -> list[list[tuple[str, float]]]:
    """The k most likely classes of each image with their probabilities, most likely first."""
    if not images:
        return []
    k = min(k, len(exported.classes))
    model = exported.model  # in eval mode, as load_run leaves it
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), PREDICT_BS):
            x = preprocess(images[start:start + PREDICT_BS], exported.preprocessing).to(device)
            top = model(x).float().softmax(dim=1).topk(k, dim=1)
            for probs, idx in zip(top.values.cpu().tolist(), top.indices.cpu().tolist()):
                out.append([(exported.classes[i], p) for i, p in zip(idx, probs)])
    return out
