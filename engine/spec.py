"""The run spec: one typed description of a training run, and the only place Loupe's defaults live.

The app's widgets start from it, the command line's flags override it, the job runs it, the runs
database stores it, every run folder keeps it as `spec.json`, and the exported `train.py` replays it.
Each setting carries its human name and help text (`setting_name`, `setting_help`): the command line's
flags, the pages' labels and the Runs page's settings table are made from them.

    spec = RunSpec()                                   # fastai's defaults on the built-in digits
    spec = override(spec, {"train.epochs": 5})         # what a flag or a widget changes
    ready = resolve(spec)                              # engine.data.resolve: source-dependent values filled in
    RunSpec.from_dict(ready.to_dict()) == ready        # JSON-safe, versioned, unknown keys refused

This module is the schema alone: it imports no other engine package and never scans, downloads or reads
LOUPE_HOME. A field left at None means "pick for me": engine.data.resolve fills it from the data source (the
built-in digits are 28 px, labelled by their own rule and never flipped; a folder's rules are guessed from its
layout) or from another field (presize follows size by fastai's ratio; the LR follows the schedule).
A resolved spec is complete: it trains the same way anywhere it is read back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from engine.errors import UserError, plain_reason

SPEC_VERSION = 1
SPEC_FILE = "spec.json"

BUILTIN_SIZE = 28  # the built-in digits are 28×28
DEFAULT_SIZE = 224  # what pretrained ImageNet models saw
DEFAULT_LR = {"fine_tune": 2e-3, "one_cycle": 1e-3}  # fastai: fine_tune's base_lr, fit_one_cycle's lr_max
SCHEDULES = ("fine_tune", "one_cycle")
PRESIZE_METHODS = ("crop", "squish")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what `auto` picks per device: engine/train/precision.py
ARCHS = ("small", "resnet18", "resnet34", "resnet50")  # the models engine.train.models builds (a test checks)
BUILTIN_KEYS = ("digits-names", "digits-folders")  # engine.data.builtin.BUILTINS (a test checks)
SOURCES = ("builtin", "fastai", "folder")
LABEL_KINDS = ("regex", "folder", "grandparent", "top-folder", "csv")  # engine.data.labels applies each
SPLIT_KINDS = ("random", "folder", "csv")  # engine.data.split applies each
NAME_PATTERN = r"^(.+)_\d+\.\w+$"  # Pets-style: label, underscore, number


def setting(default: Any = MISSING, *, name: str, help: str, auto: str = "", off: str = "",
            factory: Any = MISSING, choices: tuple = ()) -> Any:
    """A dataclass field that knows what people call it (`name`), what it does (`help`), what its default means
    (`auto`: for None, "pick for me", what is picked), a boolean's help when switched off, and its allowed values."""
    meta = {"name": name, "help": help, "auto": auto, "off": off, "choices": choices}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- the settings

@dataclass(frozen=True)
class LabelRule:
    """A serialisable choice of label rule, as the page and the CLI describe it (engine.data.labels applies it)."""

    kind: str = setting("regex", name="Label rule kind", help=", ".join(LABEL_KINDS), choices=LABEL_KINDS)
    pattern: str = setting(NAME_PATTERN, name="Label regex", help="regex: the first group is the label")
    on: str = setting("name", name="Regex reads", help="regex: on the file 'name' or the relative 'path'",
                      choices=("name", "path"))
    csv_path: str = setting("", name="Label CSV file", help="csv: the file listing each picture's label")
    file_col: str = setting("name", name="CSV file column", help="csv: the column naming the picture")
    label_col: str = setting("label", name="CSV label column", help="csv: the column holding the label")

    def describe(self) -> str:
        if self.kind == "regex":
            return f"regex on {'file name' if self.on == 'name' else 'relative path'}: {self.pattern}"
        if self.kind == "folder":
            return "parent folder name"
        if self.kind == "grandparent":
            return "grandparent folder name"
        if self.kind == "top-folder":
            return "top-level folder under the data folder"
        return f"CSV {Path(self.csv_path).name}: {self.file_col} → {self.label_col}"


@dataclass(frozen=True)
class SplitRule:
    """A serialisable choice of split rule, as the page and the CLI describe it (engine.data.split applies it)."""

    kind: str = setting("random", name="Split kind", help=", ".join(SPLIT_KINDS), choices=SPLIT_KINDS)
    valid_pct: float = setting(0.2, name="Validation share", help="random: the share of pictures that validate")
    seed: int = setting(42, name="Split seed", help="random: the seed of the permutation (fastai's RandomSplitter)")
    stratify: bool = setting(False, name="Stratified", help="random: split each class on its own")
    train_name: str = setting("train", name="Training folder", help="folder: the folder of the training pictures")
    valid_name: str = setting("valid", name="Validation folder", help="folder: the folder of the validation pictures")
    csv_path: str = setting("", name="Split CSV file", help="csv: the file saying which pictures validate")
    file_col: str = setting("name", name="CSV file column", help="csv: the column naming the picture")
    valid_col: str = setting("is_valid", name="CSV validation column", help="csv: true where a picture validates")

    def describe(self) -> str:
        if self.kind == "random":
            return f"random {self.valid_pct:.0%} validation, seed {self.seed}" + (", stratified" if self.stratify else "")
        if self.kind == "folder":
            return f"folders '{self.train_name}' / '{self.valid_name}'"
        return f"CSV column {self.valid_col}"


@dataclass(frozen=True)
class AugSettings:
    """fastai's aug_transforms defaults (engine.data.augment applies them)."""

    do_flip: bool = setting(True, name="Augmentation: flip left-right", help="mirror pictures at random")
    flip_vert: bool = setting(False, name="Augmentation: all 8 flips and turns",
                              help="any of the 8 dihedral flips and quarter turns (fastai's Dihedral)")
    max_rotate: float = setting(10.0, name="Augmentation: rotation (±degrees)", help="rotate by up to ± this many degrees")
    min_zoom: float = setting(1.0, name="Augmentation: smallest zoom", help="the smallest zoom factor")
    max_zoom: float = setting(1.1, name="Augmentation: largest zoom", help="the largest zoom factor")
    max_lighting: float = setting(0.2, name="Augmentation: lighting change", help="brightness and contrast change, 0 to 1")
    max_warp: float = setting(0.2, name="Augmentation: warp", help="perspective warp strength")
    p_affine: float = setting(0.75, name="Augmentation: chance of rotate, zoom, warp",
                              help="chance, drawn separately for rotate, zoom and warp")
    p_lighting: float = setting(0.75, name="Augmentation: chance of lighting change",
                                help="chance, drawn separately for brightness and contrast")
    min_scale: float = setting(1.0, name="Augmentation: smallest crop (area)",
                               help="below 1: a random-resized crop of at least this share of the area")

    @classmethod
    def off(cls) -> "AugSettings":
        """Every transform disabled: training images are only resized."""
        return cls(do_flip=False, flip_vert=False, max_rotate=0.0, min_zoom=1.0, max_zoom=1.0,
                   max_lighting=0.0, max_warp=0.0, min_scale=1.0)


@dataclass(frozen=True)
class DataSpec:
    """Which images, how each gets its label, which validate, and the sizes they are prepared at."""

    source: str = setting("builtin:digits-names", name="Data set",
                          help=f"a folder, {', '.join('builtin:' + k for k in BUILTIN_KEYS)} or fastai:KEY "
                               "(downloaded once)")
    label: LabelRule | None = setting(None, name="Label rule", help="how each picture gets its label",
                                      auto="the built-in's own rule, else guessed from the folder's layout")
    split: SplitRule | None = setting(None, name="Validation split", help="which pictures validate",
                                      auto=f"the built-in's own split, else train/ and valid/ folders if there are "
                                           f"some, else random {SplitRule().valid_pct:.0%} with seed {SplitRule().seed}")
    size: int | None = setting(None, name="Image size (px)", help="side of the square images the model sees",
                               auto=f"{BUILTIN_SIZE} for the built-in digits, else {DEFAULT_SIZE}")
    presize: int | None = setting(None, name="Presize (px)", help="side images are decoded to once",
                                  auto="size × 460/224, fastai's ratio")
    presize_method: str = setting("crop", name="Presize method", choices=PRESIZE_METHODS,
                                  help="crop (the centre square) or squish (the whole image, stretched)")
    bs: int = setting(64, name="Batch size", help="pictures per training step")

    @property
    def kind(self) -> str:
        """'builtin', 'fastai' or 'folder'."""
        head = self.source.split(":", 1)[0]
        return head if head in ("builtin", "fastai") and ":" in self.source else "folder"

    @property
    def key(self) -> str:
        """The built-in or fastai key ('' for a folder)."""
        return self.source.split(":", 1)[1] if self.kind != "folder" else ""


@dataclass(frozen=True)
class ModelSpec:
    """The network: fastai's head on a small convnet or a torchvision ResNet."""

    arch: str = setting("small", name="Model", help=" | ".join(ARCHS), choices=ARCHS)
    pretrained: bool = setting(True, name="Start from ImageNet weights",
                               help="start from ImageNet weights where they can be had; else from scratch, said plainly",
                               off="train from scratch")


@dataclass(frozen=True)
class TrainSpec:
    """How the network is trained: fastai's fine_tune or fit_one_cycle, and what is kept."""

    schedule: str = setting("fine_tune", name="Schedule", choices=SCHEDULES,
                            help="fine_tune: head first, then every layer; one_cycle: every layer, one cycle")
    epochs: int = setting(3, name="Epochs", help="epochs (fine_tune adds its head-only epochs)")
    lr: float | None = setting(None, name="Learning rate", help="fine_tune's base_lr or one_cycle's lr_max",
                               auto=", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()))
    lr_slice: tuple[float, float] | None = setting(
        None, name="Learning rates (earliest : head)", auto="none",
        help="one_cycle only: every layer unfrozen, LRs spread from LOW (first layers) to HIGH (head), as fastai's "
             "fit_one_cycle(n, slice(LOW, HIGH))")
    freeze_epochs: int = setting(1, name="Head-only epochs first",
                                 help="fine_tune: epochs of the head alone first (pretrained bodies only)")
    lr_mult: float = setting(100.0, name="Layer LR spread (lr_mult)",
                             help="fine_tune: once unfrozen, the earliest layers train at lr / lr_mult")
    wd: float = setting(0.01, name="Weight decay",
                        help="decoupled weight decay (never on BatchNorm and bias parameters, as fastai)")
    patience: int = setting(0, name="Early stopping patience", auto="off",
                            help="early stopping: epochs without a lower validation loss")
    keep_best: bool = setting(True, name="Keep the epoch with the lowest validation loss",
                              help="end with the weights of the epoch with the lowest validation loss",
                              off="end with the last epoch's weights")
    seed: int | None = setting(None, name="Seed", help="seed for weights, batch order and augmentation",
                               auto="drawn when the run starts, and recorded")


@dataclass(frozen=True)
class DeviceSpec:
    """Where the arithmetic happens."""

    device: str = setting("auto", name="Device", choices=DEVICES,
                          help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    threads: int = setting(0, name="CPU threads", help="CPU threads", auto="every core for the command line, all "
                                                                             "but one for the app")
    precision: str = setting("auto", name="Precision", choices=PRECISIONS,
                             help="number format of the arithmetic: auto (mixed bf16/fp16 on CUDA, fp32 on a CPU, "
                                  "where bf16 measured slower), fp32, bf16 or fp16 (mixed precision: weights stay "
                                  "fp32); a run reports the one used")


@dataclass(frozen=True)
class RunSpec:
    """One training run, completely: data, augmentation, model, training and device."""

    data: DataSpec = setting(name="Data", help="which images, their labels, split and sizes", factory=DataSpec)
    augment: AugSettings | None = setting(None, name="Augmentation", help="fastai's aug_transforms, or none",
                                          auto="fastai's aug_transforms, no flips for the built-in digits")
    model: ModelSpec = setting(name="Model settings", help="the network", factory=ModelSpec)
    train: TrainSpec = setting(name="Training", help="the schedule and what is kept", factory=TrainSpec)
    device: DeviceSpec = setting(name="Device settings", help="where the arithmetic happens", factory=DeviceSpec)
    version: int = setting(SPEC_VERSION, name="Spec version", help="the spec format's version")

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


@dataclass(frozen=True)
class LRFindSpec:
    """fastai's LR finder: the learning rate grows exponentially from start_lr to end_lr over num_it batches."""

    start_lr: float = setting(1e-7, name="Start learning rate", help="the finder's first learning rate")
    end_lr: float = setting(10.0, name="End learning rate", help="the finder's last learning rate")
    num_it: int = setting(100, name="Steps", help="batches the finder tries (fewer if the loss diverges)")


# ---------------------------------------------------------------- what a setting is called and does

def schema_field(dotted: str, root: type = RunSpec) -> dataclasses.Field | None:
    """The dataclass field a dotted name ("data.size") points at; None if there is none."""
    return _lookup(dotted, root)[0]


def setting_type(dotted: str, root: type = RunSpec) -> Any:
    """A setting's type ("train.lr" → float | None); None for an unknown name."""
    return _lookup(dotted, root)[1]


def _lookup(dotted: str, root: type) -> tuple[dataclasses.Field | None, Any]:
    cls: Any = root
    found = None
    for part in dotted.split("."):
        cls = _dataclass_of(cls)
        by_name = {f.name: f for f in fields(cls)} if cls is not None else {}
        if part not in by_name:
            return None, None
        found = by_name[part]
        cls = typing.get_type_hints(cls)[part]
    return found, cls


def _dataclass_of(t: Any) -> type | None:
    """The dataclass a type hint holds (`X`, or `X | None`), else None."""
    if is_dataclass(t):
        return t
    options = [o for o in typing.get_args(t) if is_dataclass(o)]
    return options[0] if options else None


def setting_name(dotted: str, root: type = RunSpec) -> str:
    """A setting's human name ("data.size" → "Image size (px)"); an unknown one is spelled out from its own name."""
    f = schema_field(dotted, root)
    if f is not None and f.metadata.get("name"):
        return f.metadata["name"]
    return dotted.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def setting_help(dotted: str, root: type = RunSpec) -> str:
    """A setting's help text, ending with its default ("…(default: 64)")."""
    f = schema_field(dotted, root)
    if f is None:
        return ""
    return f"{f.metadata.get('help', '')} (default: {default_text(f)})"


def default_text(f: dataclasses.Field) -> str:
    """A field's default as people read it: the value, then what it means ("0, off"); for None, what is picked."""
    value = f.default if f.default is not MISSING else None
    auto = f.metadata.get("auto", "")
    if value is None:
        return auto or "automatic"
    shown = f"{value:g}" if isinstance(value, float) else ("yes" if value is True else "no" if value is False
                                                           else str(value))
    return f"{shown}, {auto}" if auto else shown


def settings(root: type = RunSpec, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf setting by dotted name, in the order of the dataclasses (a rule or the augmentation counts once)."""
    out: dict[str, dataclasses.Field] = {}
    hints = typing.get_type_hints(root)
    for f in fields(root):
        t = hints[f.name]
        if is_dataclass(t):  # a part of the spec (data, model…), not a value
            out.update(settings(t, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


SETTING_NAMES: dict[str, str] = {  # every dotted name (rules and augmentation's parts too) → its human name
    name: setting_name(name) for name in [*settings(), *(f"data.label.{f.name}" for f in fields(LabelRule)),
                                          *(f"data.split.{f.name}" for f in fields(SplitRule)),
                                          *(f"augment.{f.name}" for f in fields(AugSettings))]}


def default_size(data: DataSpec) -> int:
    """The image size a data source gets when none is set: 28 px for the built-in digits, else 224."""
    return BUILTIN_SIZE if data.kind == "builtin" else DEFAULT_SIZE


def default_lr(schedule: str) -> float:
    """fastai's learning rate for a schedule: fine_tune's base_lr, fit_one_cycle's lr_max."""
    return DEFAULT_LR.get(schedule, DEFAULT_LR["fine_tune"])


def default_presize(size: int) -> int:
    """fastai's ratio: Resize(460) for 224 px batches."""
    return max(size, (size * 460 + 112) // 224)  # rounded to the nearest pixel, in whole numbers


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


def check_builtin(data: DataSpec) -> None:
    """UserError for a built-in data set that does not exist (engine.data.resolve.check_source checks fastai's too)."""
    if data.kind == "builtin" and data.key not in BUILTIN_KEYS:
        raise UserError(f"Unknown built-in data set “{data.key}”. Choose one of: {', '.join(BUILTIN_KEYS)}.")


def with_seed(spec: RunSpec) -> RunSpec:
    """The spec with its seed drawn now if it had none (so the run can be replayed)."""
    if spec.train.seed is not None:
        return spec
    return replace(spec, train=replace(spec.train, seed=secrets.randbelow(2**31 - 1)))


def validate(spec: RunSpec) -> None:
    """UserError with a plain message for a setting no run can use (engine.data.resolve.check_source: the source)."""
    d, t = spec.data, spec.train
    check_builtin(d)
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
    """Best reading of a run recorded before spec.json existed (its data, model and train columns); what they did not
    record is left at the spec's defaults."""
    def pick(cls, values: dict | None, renamed: dict[str, str] | None = None) -> dict:
        names = {f.name for f in fields(cls)}
        values = {(renamed or {}).get(k, k): v for k, v in (values or {}).items()}
        return {k: v for k, v in values.items() if k in names and v is not None}

    root = Path(data.get("root", ""))
    key = root.name if root.parent.name == "builtin" and root.name in BUILTIN_KEYS else None
    return RunSpec.from_dict({
        "data": {**pick(DataSpec, data, {"method": "presize_method"}), "source": f"builtin:{key}" if key else str(root),
                 "label": pick(LabelRule, data.get("label")), "split": pick(SplitRule, data.get("split"))},
        "augment": pick(AugSettings, data.get("aug")),
        "model": pick(ModelSpec, {"arch": train.get("arch") or model.get("arch"), "pretrained": train.get("pretrained")}),
        "train": pick(TrainSpec, train, {"method": "schedule", "save_best": "keep_best"}),
    })
