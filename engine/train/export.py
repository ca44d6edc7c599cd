"""Export a trained model to a folder, and load it back to predict on new images exactly as in validation.

A run folder holds:
    model.pt            the state dict only (read back with weights_only=True: tensors, never arbitrary objects)
    labels.json         the classes, in the order of the model's outputs
    preprocessing.json  arch, n_classes, size, presize, method, mean, std, pool (the head's concat-pool order;
                        absent from older exports, whose heads pooled avg then max)
    run.json            anything else worth keeping (metrics, the epoch table), if given
    spec.json           the run spec that trained it (written by engine.train.run)

`export_zip` bundles such a folder with a standalone predict.py (torch, torchvision and pillow only), the
spec and a train.py that replays it through `python -m engine train --spec`, and a README;
`export_onnx` writes the model as ONNX for other runtimes.
"""
from __future__ import annotations

import copy
import io
import json
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from engine.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize, resize_batch
from engine.errors import UserError, plain_reason
from engine.data.images import PRESIZE_METHODS, presize, to_rgb
from engine.train.models import POOLS, AdaptiveConcatPool2d, create_model
from engine.train.scoring import score
from engine.spec import SPEC_FILE, DataSpec, RunSpec, load_spec

MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, RUN_FILE = "model.pt", "labels.json", "preprocessing.json", "run.json"
PREPROCESSING_KEYS = ("arch", "n_classes", "size", "presize", "method", "mean", "std")
LEGACY_POOL = "avg_max"  # the head of exports whose preprocessing.json has no "pool": avg then max
PREDICT_BS = 64  # images per forward pass in `predict`
PREDICT_TEMPLATE = Path(__file__).parent / "templates" / "predict.py"  # copied as is into every bundle
ONNX_OPSET = 18


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


def export_run(out_dir: Path, model: nn.Module, arch: str, classes: list[str], config: DataSpec,
               extra: dict | None = None) -> Path:
    """Write the model's weights, its classes and its preprocessing (and `extra` as run.json) to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    torch.save(state, out_dir / MODEL_FILE)
    _write_json(out_dir / LABELS_FILE, list(classes))
    _write_json(out_dir / PREPROCESSING_FILE, {
        "arch": arch, "n_classes": len(classes), "size": config.size, "presize": config.presize,
        "method": config.presize_method, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "pool": _pool_of(model),
    })
    if extra is not None:
        _write_json(out_dir / RUN_FILE, extra)
    return out_dir


def _pool_of(model: nn.Module) -> str:
    """The concat-pool order of the model's head ("max_avg" for every model Loupe builds now)."""
    return next((m.order for m in model.modules() if isinstance(m, AdaptiveConcatPool2d)), "max_avg")


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
                        "(or made by an incompatible version).") from e
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"{MODEL_FILE} in {run_dir} is not a Loupe export: it does not hold named tensors.")
    pool = prep.get("pool", LEGACY_POOL)
    if pool not in POOLS:
        raise UserError(f"{PREPROCESSING_FILE} in {run_dir} names an unknown head layout “{pool}”.")
    model, _ = create_model(prep["arch"], prep["n_classes"], pretrained=False, pool=pool)
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
        img = to_rgb(ImageOps.exif_transpose(img))  # a no-op for images opened with engine.data.images.open_image
        square = presize(img, preprocessing["presize"], preprocessing["method"])
        pixels.append(torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1))
    x = resize_batch(torch.stack(pixels), preprocessing["size"])
    return normalize(x, preprocessing["mean"], preprocessing["std"])


def predict(exported: ExportedModel, images: list[Image.Image], k: int = 5) -> list[list[tuple[str, float]]]:
    """The k most likely classes of each image with their probabilities, most likely first."""
    if not images:
        return []
    k = min(k, len(exported.classes))
    logits = score(exported.model, images, lambda batch: preprocess(batch, exported.preprocessing), bs=PREDICT_BS)
    top = logits.softmax(dim=1).topk(k, dim=1)
    return [[(exported.classes[i], p) for i, p in zip(idx, probs)]
            for probs, idx in zip(top.values.tolist(), top.indices.tolist())]


# ---------------------------------------------------------------- a zip to take away

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


TRAIN_SCRIPT = '''"""Train this model again with Loupe's command line: it replays spec.json, the run's complete settings.

Run it from the root folder of a Loupe checkout (the folder holding `engine/`), with Loupe's
requirements installed:

    cd path/to/loupe
    python path/to/train.py

It runs `python -m engine train --spec spec.json --out model` and writes the new model to ./model.
Every setting of the run is in the spec (its seed and CPU threads too); CANNOT_REPEAT lists what the
command line cannot repeat by itself, and the script prints it first.
"""
import subprocess
import sys
from pathlib import Path

SPEC = Path(__file__).resolve().with_name("spec.json")
CANNOT_REPEAT = [
{cannot_repeat}]

if __name__ == "__main__":
    for note in CANNOT_REPEAT:
        print(f"not in the spec: {{note}}", file=sys.stderr)
    sys.exit(subprocess.run([sys.executable, "-m", "engine", "train", "--spec", str(SPEC), "--out", "model"]).returncode)
'''


def cannot_repeat(spec: RunSpec) -> list[str]:
    """What `train --spec` needs from outside the spec to train this run again: the data, downloads, a device."""
    data, notes = spec.data, []
    if data.kind == "folder":
        notes.append(f"the pictures: read from {data.source}; on another computer, copy them to the same path")
    elif data.kind == "fastai":
        notes.append(f"the fastai data set {data.key.upper()}: downloaded on first use (the network, once)")
    for rule in (data.label, data.split):
        if rule is not None and rule.kind == "csv":
            notes.append(f"the CSV file {rule.csv_path}")
    if spec.model.pretrained and spec.model.arch != "small":
        notes.append(f"{spec.model.arch}'s ImageNet weights: downloaded on first use unless in the torch cache "
                     "(the network, once); without them the run trains from scratch")
    if spec.device.device in ("cuda", "mps"):
        notes.append(f"a {spec.device.device} device")
    if spec.train.seed is None:
        notes.append("the seed: none was recorded, so each run draws its own")
    notes.append("the same numbers: only on the same kind of processor (CPU or GPU model) with the same torch")
    return notes


def train_script(spec: RunSpec) -> str:
    """A run's train.py: replays its spec.json with the command line, and lists what the command line cannot repeat."""
    return TRAIN_SCRIPT.format(cannot_repeat="".join(f"    {note!r},\n" for note in cannot_repeat(spec)))  # repr: a
    # folder's name is data, never code


def _readme(folder: str, classes: list[str], prep: dict, has_train: bool) -> str:
    shown = ", ".join(classes[:20]) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
    text = f"""A model exported from Loupe: {prep['arch']}, {len(classes)} classes.

Classes: {shown}
Images are presized to {prep['presize']}×{prep['presize']} ({prep['method']}), then resized to {prep['size']}×{prep['size']}.

Classify images
---------------
Needs Python 3.10+ with torch, torchvision and pillow (numpy comes with torch):

    pip install torch torchvision pillow
    python {folder}/predict.py image.png [more images]
    python {folder}/predict.py --json image.png photo.jpg

It prints the 5 most likely classes of each image with their probabilities (--top N for more or fewer).
A file that is not a readable image is reported on stderr and makes the exit code 1; the others are
still classified. predict.py does not need Loupe: it rebuilds the model from the files beside it.

Files
-----
model.pt            the weights (a state dict: torch.load(..., weights_only=True))
labels.json         the classes, in the order of the model's outputs
preprocessing.json  the model and how images are prepared for it
run.json            the run's results, when Loupe recorded them
predict.py          the script above
"""
    if has_train:
        text += """spec.json           the run's complete settings (data, augmentation, model, training, seed)
train.py            trains the model again from spec.json with Loupe's command line (from a Loupe checkout)
"""
    return text


def export_zip(run_dir: Path, dest: Path | None = None, spec: RunSpec | None = None, name: str | None = None) -> bytes:
    """A zip of an exported run with predict.py, a README and, when the run's spec is known (its spec.json, or
    `spec`), spec.json and a train.py that replays it; all in a folder loupe-<name>/.

    Returns the zip's bytes, and also writes them to `dest` if given.
    """
    run_dir = Path(run_dir)
    classes = _read_json(run_dir / LABELS_FILE)
    prep = _read_json(run_dir / PREPROCESSING_FILE)
    _check_preprocessing(prep, classes, run_dir)
    if not (run_dir / MODEL_FILE).is_file():
        raise UserError(f"{MODEL_FILE} is missing from {run_dir}: this folder is not a complete exported model.")
    folder = f"loupe-{_slug(name or run_dir.name)}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in (MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, RUN_FILE):
            if (run_dir / file).is_file():  # weights hardly compress: stored as they are, which is quicker
                zf.write(run_dir / file, f"{folder}/{file}",
                         compress_type=zipfile.ZIP_STORED if file == MODEL_FILE else zipfile.ZIP_DEFLATED)
        zf.writestr(f"{folder}/predict.py", PREDICT_TEMPLATE.read_text())
        if spec is None and (run_dir / SPEC_FILE).is_file():
            spec = load_spec(run_dir / SPEC_FILE)
        if spec is not None:
            zf.writestr(f"{folder}/{SPEC_FILE}", spec.to_json())
            zf.writestr(f"{folder}/train.py", train_script(spec))
        zf.writestr(f"{folder}/README.txt", _readme(folder, classes, prep, spec is not None))
    data = buffer.getvalue()
    if dest is not None:
        Path(dest).write_bytes(data)
    return data


# ---------------------------------------------------------------- ONNX

def export_onnx(model: nn.Module, preprocessing: dict, path: Path) -> Path:
    """Write the model as ONNX: input "image" [batch, 3, size, size] normalised, output "logits" [batch, n_classes]."""
    path = Path(path)
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it; say so plainly if it is missing)
    except ImportError:
        raise UserError("Exporting to ONNX needs the packages onnx and onnxscript: pip install onnx onnxscript") from None
    size = preprocessing["size"]
    net = copy.deepcopy(model).cpu().eval()  # the model being trained or shown is left alone
    example = torch.zeros(2, 3, size, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"The ONNX file cannot be written to {path.parent} ({e.strerror or e}).") from e
    names = dict(input_names=["image"], output_names=["logits"], opset_version=ONNX_OPSET, verbose=False)
    attempts = [  # torch.export first; the older TorchScript exporter if that fails on this model or torch
        dict(dynamo=True, external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},)),
        dict(dynamo=False, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}),
    ]
    failures = []
    for options in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporters warn about internals the user cannot change
                torch.onnx.export(net, (example,), str(path), **names, **options)
            return path
        except Exception as e:  # the exporters fail in many ways; what matters is whether any of them worked
            failures.append(plain_reason(e))
    path.unlink(missing_ok=True)
    raise UserError(f"The model could not be exported to ONNX ({'; '.join(failures)}).")
