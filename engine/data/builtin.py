"""Built-in offline data sets, made at first use from scikit-learn's 1,797 real 8×8 handwritten digits."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from engine.data.augment import AugSettings
from engine.store.home import home_subdir
from engine.data.labels import LabelRule
from engine.data.split import SplitRule, random_splitter

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 28  # like MNIST
MARKER = ".loupe-complete"


def digit_images(size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as white-on-black uint8 images [N, size, size] and their targets [N]."""
    from sklearn.datasets import load_digits  # ships with scikit-learn, no download

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 → 0..255
    big = np.stack([np.asarray(Image.fromarray(im, "L").resize((size, size), Image.Resampling.BICUBIC)) for im in small])
    return big, digits.target.astype(np.int64)


def _write_digits_names(dest: Path) -> None:
    """One folder, Pets-style names: seven_123.png."""
    images, targets = digit_images()
    for i, (im, t) in enumerate(zip(images, targets)):
        Image.fromarray(im, "L").save(dest / f"{DIGIT_WORDS[t]}_{i}.png")


def _write_digits_folders(dest: Path) -> None:
    """MNIST_SAMPLE layout train/<digit>/<i>.png, valid/<digit>/<i>.png, plus labels.csv (name,label,is_valid)."""
    images, targets = digit_images()
    rule = SplitRule()  # the spec's default random split
    split = random_splitter(len(targets), rule.valid_pct, rule.seed, labels=[str(t) for t in targets])
    rows = ["name,label,is_valid"]
    for i, (im, t, s) in enumerate(zip(images, targets, split)):
        rel = f"{s}/{t}/{i}.png"
        (dest / s / str(t)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im, "L").save(dest / rel)
        rows.append(f"{rel},{t},{s == 'valid'}")
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")


@dataclass(frozen=True)
class BuiltinDataset:
    key: str
    title: str
    description: str
    label_rule: LabelRule
    split_rule: SplitRule
    writer: Callable[[Path], None]
    # fastai's defaults, but no flips: a mirrored digit is a different shape
    aug: AugSettings = field(default_factory=lambda: AugSettings(do_flip=False))


BUILTINS: dict[str, BuiltinDataset] = {
    "digits-names": BuiltinDataset(
        key="digits-names",
        title="Digits — file names",
        description="1,797 handwritten digits (28×28) in one folder, named like seven_123.png: label them with a regex.",
        label_rule=LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$", on="name"),
        split_rule=SplitRule(kind="random"),
        writer=_write_digits_names,
    ),
    "digits-folders": BuiltinDataset(
        key="digits-folders",
        title="Digits — folders",
        description="The same digits in MNIST_SAMPLE's layout train/<digit>/…, valid/<digit>/…, plus labels.csv.",
        label_rule=LabelRule(kind="folder"),
        split_rule=SplitRule(kind="folder", train_name="train", valid_name="valid"),
        writer=_write_digits_folders,
    ),
}


def builtin_path(key: str, root: Path | None = None) -> Path:
    """Where a built-in data set lives: LOUPE_HOME/builtin/<key>."""
    return (root or home_subdir("builtin")) / key


def ensure_builtin(key: str, root: Path | None = None) -> Path:
    """The folder of a built-in data set, written on first use (atomically: a half-written one never shows)."""
    if key not in BUILTINS:
        raise KeyError(f"unknown built-in data set {key!r}; known: {', '.join(BUILTINS)}")
    dest = builtin_path(key, root)
    if (dest / MARKER).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        BUILTINS[key].writer(tmp)
        (tmp / MARKER).write_text("made from sklearn.datasets.load_digits\n")
        if dest.exists():  # an interrupted earlier attempt
            shutil.rmtree(dest)
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / MARKER).exists():
            raise
        # else another session finished the same data set a moment earlier: use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
