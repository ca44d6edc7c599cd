"""The run spec: one typed description of a training run, and the only place Loupe's defaults live.

The app's widgets start from it, the command line's flags override it, the job runs it, the runs
database stores it, every run folder keeps it as `spec.json`, and the exported `train.py` replays it.

    spec = RunSpec()                                   # fastai's defaults on the built-in digits
    spec = override(spec, {"train.epochs": 5})         # what a flag or a widget changes
    ready = resolve(spec)                              # source-dependent values filled in (size, label rule, …)
    RunSpec.from_dict(ready.to_dict()) == ready        # JSON-safe, versioned, unknown keys refused

A field left at None means "pick for me": `resolve` fills it from the data source (the built-in
digits are 28 px, labelled by their own rule and never flipped; a folder's rules are guessed from its
layout) or from another field (presize follows size by fastai's ratio; the LR follows the schedule).
A resolved spec is complete: it trains the same way anywhere it is read back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from engine.data.augment import AugSettings
from engine.data.builtin import BUILTINS, builtin_path, ensure_builtin
from engine.errors import UserError, plain_reason
from engine.data.label_levels import VALID_FOLDER_NAMES, guess_rule  # noqa: F401 (VALID_FOLDER_NAMES: also read from here)
from engine.data.labels import LabelRule
from engine.data.sources import FASTAI_DATASETS, FolderScan, dataset_path, download_dataset, is_downloaded, scan_folder
from engine.data.split import SplitRule

SPEC_VERSION = 1
SPEC_FILE = "spec.json"

BUILTIN_SIZE = 28  # the built-in digits are 28×28
DEFAULT_SIZE = 224  # what pretrained ImageNet models saw
DEFAULT_LR = {"fine_tune": 2e-3, "one_cycle": 1e-3}  # fastai: fine_tune's base_lr, fit_one_cycle's lr_max
SCHEDULES = ("fine_tune", "one_cycle")
PRESIZE_METHODS = ("crop", "squish")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what `auto` picks per device: engine/train/precision.py
SOURCES = ("builtin", "fastai", "folder")
NAME_PATTERN = r"^(.+)_\d+\.\w+$"  # Pets-style: label, underscore, number


@dataclass(frozen=True)
class DataSpec:
    """Which images, how each gets its label, which validate, and the sizes they are prepared at."""

    source: str = "builtin:digits-names"  # builtin:KEY, fastai:KEY (downloaded once) or a folder path
    label: LabelRule | None = None  # None: the built-in's own rule, else guessed from the folder's layout
    split: SplitRule | None = None  # None: likewise
    size: int | None = None  # side of the square images the model sees; None: 28 for built-ins, else 224
    presize: int | None = None  # side images are decoded to once; None: size × 460/224 (fastai's Resize(460) for 224)
    presize_method: str = "crop"  # "crop": centre square; "squish": the whole image, stretched
    bs: int = 64  # batch size

    @property
    def kind(self) -> str:
        """'builtin', 'fastai' or 'folder'."""
        head = self.source.split(":", 1)[0]
        return head if head in ("builtin", "fastai") and ":" in self.source else "folder"

    @property
    def key(self) -> str:
        """The built-in or fastai key ('' for a folder)."""
        return self.source.split(":", 1)[1] if self.kind != "folder" else ""

    @property
    def root(self) -> Path:
        """The folder holding the images (nothing is written or downloaded to answer this)."""
        if self.kind == "builtin":
            return builtin_path(self.key)
        if self.kind == "fastai":
            remote = FASTAI_DATASETS[self.key.upper()]
            return dataset_path(remote.key) / remote.image_subdir if remote.image_subdir else dataset_path(remote.key)
        return Path(self.source).expanduser()

    @property
    def name(self) -> str:
        """What the user calls this data set."""
        if self.kind == "builtin":
            return BUILTINS[self.key].title
        if self.kind == "fastai":
            return self.key.upper()
        return self.root.name or str(self.root)


@dataclass(frozen=True)
class ModelSpec:
    """The network: fastai's head on a small convnet or a torchvision ResNet."""

    arch: str = "small"  # small | resnet18 | resnet34 | resnet50
    pretrained: bool = True  # start from ImageNet weights where they can be had; else from scratch, said plainly


@dataclass(frozen=True)
class TrainSpec:
    """How the network is trained: fastai's fine_tune or fit_one_cycle, and what is kept."""

    schedule: str = "fine_tune"  # "fine_tune": head first, then every layer; "one_cycle": every layer, one cycle
    epochs: int = 3
    lr: float | None = None  # fine_tune's base_lr or one_cycle's lr_max; None: fastai's (2e-3, 1e-3)
    lr_slice: tuple[float, float] | None = None  # one_cycle only: unfreeze, LRs spread from lo (first layers) to hi (head)
    freeze_epochs: int = 1  # fine_tune: epochs of the head alone (pretrained bodies only)
    lr_mult: float = 100.0  # fine_tune: once unfrozen, the earliest layers train at lr / lr_mult
    wd: float = 0.01  # decoupled weight decay (not on BatchNorm and bias parameters, as fastai)
    patience: int = 0  # early stopping: epochs without a lower validation loss; 0 = off
    keep_best: bool = True  # end with the weights of the epoch with the lowest validation loss
    seed: int | None = None  # None: drawn when the run starts, and recorded


@dataclass(frozen=True)
class DeviceSpec:
    """Where the arithmetic happens."""

    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda or mps
    threads: int = 0  # CPU threads; 0: every core for the command line, all but one for the app
    precision: str = "auto"  # auto (CUDA: mixed bf16/fp16; CPU: fp32), fp32, bf16 or fp16; a run reports the one used


@dataclass(frozen=True)
class RunSpec:
    """One training run, completely: data, augmentation, model, training and device."""

    data: DataSpec = field(default_factory=DataSpec)
    augment: AugSettings | None = None  # None: fastai's aug_transforms (no flips for the built-in digits)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    device: DeviceSpec = field(default_factory=DeviceSpec)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict:
        """JSON-safe nested dict (tuples become lists)."""
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """Read a spec back; unknown keys, wrong types and newer versions are refused with a clear message."""
        if not isinstance(d, dict):
            raise UserError("A run spec must be a JSON object (a {…} of settings).")
        version = d.get("version", SPEC_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise UserError(f"The spec's version must be a whole number (got {version!r}).")
        if version > SPEC_VERSION:
            raise UserError(f"This spec was written by a newer Loupe (spec version {version}; this Loupe reads up to "
                            f"{SPEC_VERSION}). Update Loupe to use it.")
        return _build(cls, {**d, "version": SPEC_VERSION}, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise UserError(f"The spec is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}).") from None

    def flat(self) -> dict[str, Any]:
        """Every setting by its dotted name ("train.epochs": 3), in the order of the dataclasses."""
        return _flatten(self.to_dict())


SETTING_NAMES: dict[str, str] = {  # what people call each setting (the Runs page's settings table)
    "data.source": "Data set", "data.label": "Label rule", "data.split": "Validation split",
    "data.size": "Image size (px)", "data.presize": "Presize (px)", "data.presize_method": "Presize method",
    "data.bs": "Batch size", "augment": "Augmentation",
    "augment.do_flip": "Augmentation: flip left-right", "augment.flip_vert": "Augmentation: all 8 flips and turns",
    "augment.max_rotate": "Augmentation: rotation (±degrees)", "augment.min_zoom": "Augmentation: smallest zoom",
    "augment.max_zoom": "Augmentation: largest zoom", "augment.max_lighting": "Augmentation: lighting change",
    "augment.max_warp": "Augmentation: warp", "augment.p_affine": "Augmentation: chance of rotate, zoom, warp",
    "augment.p_lighting": "Augmentation: chance of lighting change",
    "augment.min_scale": "Augmentation: smallest crop (area)",
    "model.arch": "Model", "model.pretrained": "Start from ImageNet weights", "train.schedule": "Schedule",
    "train.epochs": "Epochs", "train.lr": "Learning rate", "train.lr_slice": "Learning rates (earliest : head)",
    "train.freeze_epochs": "Head-only epochs first", "train.lr_mult": "Layer LR spread (lr_mult)",
    "train.wd": "Weight decay", "train.patience": "Early stopping patience", "train.keep_best":
    "Keep the epoch with the lowest validation loss", "train.seed": "Seed", "device.device": "Device",
    "device.threads": "CPU threads", "device.precision": "Precision", "version": "Spec version",
}


def setting_name(dotted: str) -> str:
    """A setting's human name ("data.size" → "Image size (px)"); an unlisted one is spelled out from its own name."""
    if dotted in SETTING_NAMES:
        return SETTING_NAMES[dotted]
    return dotted.rsplit(".", 1)[-1].replace("_", " ").capitalize()


# ---------------------------------------------------------------- reading and writing

def load_spec(path: str | Path) -> RunSpec:
    """A spec from a JSON file (a run folder's spec.json, or one written by hand)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"There is no spec file {path}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"The spec file {path} cannot be read ({plain_reason(e)}).") from None
    try:
        return RunSpec.from_json(text)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def save_spec(spec: RunSpec, path: str | Path) -> Path:
    """Write `spec` as JSON to the file `path` (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: two windows (or processes) saving the same file at once never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(spec.to_json())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _to_jsonable(value):
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _type_name(t) -> str:
    if t is type(None):
        return "null"
    if typing.get_origin(t) is tuple:
        return "a pair of numbers"
    if is_dataclass(t):
        return "a {…} of settings"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(t, getattr(t, "__name__", str(t)))


def _convert(t, value, where: str):
    """`value` (from JSON) as type `t`, or UserError naming the setting."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(t)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # X | None: X's own message says what is wrong
            return _convert(real[0], value, where)
        for option in real:
            try:
                return _convert(option, value, where)
            except UserError:
                pass
        raise UserError(f"“{where}” must be {' or '.join(_type_name(o) for o in options)} (got {value!r}).")
    if is_dataclass(t):
        if not isinstance(value, dict):
            raise UserError(f"“{where}” must be a {{…}} of settings (got {value!r}).")
        return _build(t, value, where + ".")
    if origin is tuple:
        args = typing.get_args(t)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise UserError(f"“{where}” must be a pair of numbers such as [1e-6, 1e-4] (got {value!r}).")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif t is str:
        if isinstance(value, str):
            return value
    raise UserError(f"“{where}” must be {_type_name(t)} (got {value!r}).")


def _build(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise UserError(f"Unknown setting{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join('“' + prefix + str(k) + '”' for k in unknown)} in the spec. "
                        f"Known settings{' of “' + prefix[:-1] + '”' if prefix else ''}: {', '.join(known)}.")
    return cls(**{k: _convert(hints[k], v, prefix + k) for k, v in values.items()})


# ---------------------------------------------------------------- changing a spec

# what a new data source puts back to automatic: a learning rate found for one data set is not another's
SOURCE_DEPENDENT = ("data.label", "data.split", "data.size", "data.presize", "augment", "train.lr")


def override(spec: RunSpec, changes: dict[str, Any]) -> RunSpec:
    """A copy of `spec` with settings changed by dotted name ("train.epochs", "data.label", "augment").

    Changing `data.source` puts the settings that depend on the source (label, split, size, presize,
    augmentation, learning rate) back to automatic, unless `changes` sets them too.
    """
    d = spec.to_dict()
    if "data.source" in changes and changes["data.source"] != spec.data.source:
        for name in SOURCE_DEPENDENT:
            if name not in changes:
                _set(d, name, None)
    for name, value in changes.items():
        if is_dataclass(value):
            value = _to_jsonable(dataclasses.asdict(value))
        _set(d, name, _to_jsonable(value))
    return RunSpec.from_dict(d)


def _set(d: dict, name: str, value) -> None:
    *parents, last = name.split(".")
    node = d
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise UserError(f"Unknown setting “{name}”.")
        node = node[p]
    if last not in node:
        raise UserError(f"Unknown setting “{name}”.")
    node[last] = value


def get(spec: RunSpec, name: str):
    """A setting by its dotted name."""
    value: Any = spec
    for part in name.split("."):
        value = getattr(value, part)
    return value


# ---------------------------------------------------------------- filling in what depends on the source

def suggest_rules(scan: FolderScan) -> tuple[LabelRule, SplitRule]:
    """Guess a label and split rule from a folder's layout, as a starting point the user can change.

    train/ and valid/ (or val/) folders → label by parent folder, split by those folders;
    names like `beagle_12.jpg` → regex on the name, random split; otherwise the folder level that
    engine.data.label_levels.guess_level picks (never classes inside other classes: a nested category/subcategory
    collection is read by its top-level folders, Tango's <size>/<category>/ by the parent), random split;
    the parent folder (or the top-level one, if the parent's classes nest) when no level fits.
    """
    rel = [p.relative_to(scan.root).as_posix() for p in scan.images]
    tops = {r.split("/", 1)[0] for r in rel if "/" in r}
    valid_name = next((v for v in VALID_FOLDER_NAMES if v in tops), None)
    if "train" in tops and valid_name:
        return LabelRule(kind="folder"), SplitRule(kind="folder", train_name="train", valid_name=valid_name)
    sample = [r.rsplit("/", 1)[-1] for r in rel[:: max(1, len(rel) // 200)]]
    named = sum(1 for name in sample if re.match(NAME_PATTERN, name))
    if sample and named >= 0.9 * len(sample):
        return LabelRule(kind="regex", pattern=NAME_PATTERN, on="name"), SplitRule(kind="random")
    return guess_rule(rel), SplitRule(kind="random")


def default_augment(data: DataSpec) -> AugSettings:
    """fastai's aug_transforms, without flips for the built-in digits (a mirrored digit is another shape)."""
    builtin = BUILTINS.get(data.key) if data.kind == "builtin" else None
    return builtin.aug if builtin is not None else AugSettings()


def default_presize(size: int) -> int:
    """fastai's ratio: Resize(460) for 224 px batches."""
    return max(size, (size * 460 + 112) // 224)  # rounded to the nearest pixel, in whole numbers


def check_source(source: str) -> None:
    """UserError for a built-in or fastai key that does not exist."""
    data = DataSpec(source=source)
    if data.kind == "builtin" and data.key not in BUILTINS:
        raise UserError(f"Unknown built-in data set “{data.key}”. Choose one of: {', '.join(BUILTINS)}.")
    if data.kind == "fastai" and data.key.upper() not in FASTAI_DATASETS:
        raise UserError(f"Unknown fastai data set “{data.key}”. Choose one of: {', '.join(FASTAI_DATASETS)}.")


def prepare_source(spec: RunSpec, progress=None) -> Path:
    """Make the data folder exist: write a built-in set, download a fastai one (once); returns the folder."""
    check_source(spec.data.source)
    data = spec.data
    if data.kind == "builtin":
        return ensure_builtin(data.key)
    if data.kind == "fastai":
        download_dataset(data.key.upper(), progress=progress)
    return data.root


def resolve(spec: RunSpec, scan: FolderScan | None = None, guess_rules: bool = True) -> RunSpec:
    """Fill every automatic (None) setting except the seed; a folder is scanned only if its rules must be guessed.

    A fastai data set that is not downloaded yet keeps its label and split rules automatic, and so does a
    folder with `guess_rules=False` (which never scans).
    """
    check_source(spec.data.source)
    data, augment, train = spec.data, spec.augment, spec.train
    builtin = BUILTINS.get(data.key) if data.kind == "builtin" else None
    label, split = data.label, data.split
    if builtin is not None:
        label, split = label or builtin.label_rule, split or builtin.split_rule
    elif (label is None or split is None) and guess_rules:
        if data.kind != "fastai" or is_downloaded(data.key.upper()):
            guessed = suggest_rules(scan or scan_folder(data.root))
            label, split = label or guessed[0], split or guessed[1]
    size = data.size or (BUILTIN_SIZE if builtin is not None else DEFAULT_SIZE)
    data = replace(data, label=label, split=split, size=size, presize=data.presize or default_presize(size))
    train = replace(train, lr=train.lr if train.lr is not None else DEFAULT_LR.get(train.schedule, DEFAULT_LR["fine_tune"]))
    return replace(spec, data=data, augment=augment or default_augment(data), train=train)


def with_seed(spec: RunSpec) -> RunSpec:
    """The spec with its seed drawn now if it had none (so the run can be replayed)."""
    if spec.train.seed is not None:
        return spec
    return replace(spec, train=replace(spec.train, seed=secrets.randbelow(2**31 - 1)))


def validate(spec: RunSpec) -> None:
    """UserError with a plain message for a setting no run can use."""
    from engine.train.models import ARCHS  # torchvision is slow to import: only when checking

    d, t = spec.data, spec.train
    check_source(d.source)
    for name, value in (("data.size", d.size), ("data.presize", d.presize), ("data.bs", d.bs), ("train.epochs", t.epochs)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive number (got {value}).")
    if d.size and d.presize and d.presize < d.size:
        raise UserError(f"The presize ({d.presize} px) must be at least the size the model sees ({d.size} px).")
    if d.presize_method not in PRESIZE_METHODS:
        raise UserError(f"data.presize_method must be one of {', '.join(PRESIZE_METHODS)} (got “{d.presize_method}”).")
    if spec.model.arch not in ARCHS:
        raise UserError(f"Unknown model “{spec.model.arch}”; choose one of {', '.join(ARCHS)}.")
    if t.schedule not in SCHEDULES:
        raise UserError(f"train.schedule must be one of {', '.join(SCHEDULES)} (got “{t.schedule}”).")
    if t.lr is not None and not t.lr > 0:
        raise UserError(f"The learning rate must be above 0 (got {t.lr}).")
    if t.lr_slice is not None:
        lo, hi = t.lr_slice
        if not 0 < lo <= hi:
            raise UserError(f"A learning-rate slice goes from a low rate to a higher one, both above 0 (got {lo:g}:{hi:g}).")
        if t.schedule != "one_cycle":
            raise UserError("A learning-rate slice (discriminative rates, every layer unfrozen) goes with the one_cycle "
                            "schedule; fine_tune spreads its rates with lr_mult.")
    for name, value in (("train.freeze_epochs", t.freeze_epochs), ("train.patience", t.patience)):
        if value < 0:
            raise UserError(f"{name} cannot be negative (got {value}).")
    if not t.lr_mult >= 1:
        raise UserError(f"train.lr_mult must be at least 1 (got {t.lr_mult}).")
    if not t.wd >= 0:
        raise UserError(f"train.wd cannot be negative (got {t.wd}).")
    if spec.device.device not in DEVICES:
        raise UserError(f"device.device must be one of {', '.join(DEVICES)} (got “{spec.device.device}”).")
    if spec.device.threads < 0:
        raise UserError(f"device.threads cannot be negative (got {spec.device.threads}).")
    if spec.device.precision not in PRECISIONS:
        raise UserError(f"device.precision must be one of {', '.join(PRECISIONS)} (got “{spec.device.precision}”).")


def total_epochs(spec: RunSpec) -> int:
    """Epochs the run trains: fine_tune's head-only epochs come first."""
    return spec.train.epochs + (spec.train.freeze_epochs if spec.train.schedule == "fine_tune" else 0)


# ---------------------------------------------------------------- runs recorded before the spec existed

def legacy_spec(data: dict, model: dict, train: dict) -> RunSpec:
    """Best reading of a run recorded before spec.json existed (its data, model and train columns)."""
    def pick(cls, values):
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in (values or {}).items() if k in names})

    root = Path(data.get("root", ""))
    key = root.name if root.parent.name == "builtin" and root.name in BUILTINS else None
    source = f"builtin:{key}" if key else str(root)
    spec = RunSpec(
        data=DataSpec(source=source, label=pick(LabelRule, data.get("label")), split=pick(SplitRule, data.get("split")),
                      size=data.get("size"), presize=data.get("presize"), presize_method=data.get("method", "crop"),
                      bs=data.get("bs", 64)),
        augment=pick(AugSettings, data.get("aug")),
        model=ModelSpec(arch=train.get("arch") or model.get("arch", "small"), pretrained=bool(train.get("pretrained", True))),
        train=TrainSpec(schedule=train.get("method", "fine_tune"), epochs=train.get("epochs", 3), lr=train.get("lr"),
                        freeze_epochs=train.get("freeze_epochs", 1), lr_mult=float(train.get("lr_mult", 100.0)),
                        patience=train.get("patience", 0), keep_best=bool(train.get("save_best", True)),
                        seed=train.get("seed")),
    )
    return spec
