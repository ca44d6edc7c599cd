"""Tests for engine/data/builtin.py: the offline digits data sets, checked against sklearn's load_digits."""
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from engine.data.builtin import BUILTINS, DIGIT_WORDS, MARKER, BuiltinDataset, builtin_path, ensure_builtin
from engine.data.labels import apply_label_rule

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("builtin")


@pytest.fixture(scope="module")
def names_dir(root) -> Path:
    return ensure_builtin("digits-names", root=root)


@pytest.fixture(scope="module")
def folders_dir(root) -> Path:
    return ensure_builtin("digits-folders", root=root)


def reference_image(digits, i: int) -> np.ndarray:
    """Sample i as the data set should store it: 0..16 scaled to 0..255, upscaled 8→28 by bicubic."""
    small = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((28, 28), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------- digits-names

def test_digits_names_files(names_dir, root, digits):
    assert names_dir == root / "digits-names"
    assert (names_dir / MARKER).is_file()
    pngs = sorted(p.name for p in names_dir.iterdir() if p.suffix == ".png")
    assert len(pngs) == N_DIGITS
    expected = sorted(f"{DIGIT_WORDS[t]}_{i}.png" for i, t in enumerate(digits.target))
    assert pngs == expected
    assert [p.name for p in names_dir.iterdir() if p.suffix != ".png"] == [MARKER]


def test_digits_names_images_are_28x28_grey(names_dir):
    for name in ("zero_0.png", "seven_7.png", "eight_1796.png"):
        with Image.open(names_dir / name) as im:
            assert (im.mode, im.size) == ("L", (28, 28))


def test_digits_names_class_counts_match_sklearn(names_dir, digits):
    rels = sorted(p.name for p in names_dir.glob("*.png"))
    report = apply_label_rule(BUILTINS["digits-names"].label_rule, rels)
    assert report.n_unmatched == 0
    expected = {DIGIT_WORDS[t]: n for t, n in Counter(digits.target.tolist()).items()}
    assert report.class_counts == dict(sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])))
    assert len(report.class_counts) == 10


@pytest.mark.parametrize("i", [0, 1, 500, 1796])
def test_digits_names_pixels_equal_an_upscale_of_load_digits(names_dir, digits, i):
    word = DIGIT_WORDS[digits.target[i]]
    stored = np.asarray(Image.open(names_dir / f"{word}_{i}.png"))
    assert np.array_equal(stored, reference_image(digits, i))
    # white digit on black: the background corner is dark, the brightest pixel is near full white
    assert stored[0, 0] == 0 and stored.max() >= 240


def test_second_call_does_not_rewrite(names_dir, root):
    before = {p.name: p.stat().st_mtime_ns for p in names_dir.iterdir()}
    assert ensure_builtin("digits-names", root=root) == names_dir
    assert {p.name: p.stat().st_mtime_ns for p in names_dir.iterdir()} == before


def test_no_temporary_folders_are_left(names_dir, folders_dir, root):
    assert sorted(p.name for p in root.iterdir()) == ["digits-folders", "digits-names"]


# ---------------------------------------------------------------- digits-folders

def read_labels_csv(folders_dir: Path) -> list[dict[str, str]]:
    with open(folders_dir / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_digits_folders_layout(folders_dir, digits):
    files = sorted(p.relative_to(folders_dir).as_posix() for p in folders_dir.rglob("*.png"))
    assert len(files) == N_DIGITS
    assert {f.split("/")[0] for f in files} == {"train", "valid"}
    assert {f.split("/")[1] for f in files} == {str(d) for d in range(10)}
    # every sample i is stored once, as <split>/<its target>/<i>.png
    by_index = {int(Path(f).stem): f for f in files}
    assert sorted(by_index) == list(range(N_DIGITS))
    assert all(by_index[i].split("/")[1] == str(t) for i, t in enumerate(digits.target))


def test_digits_folders_validate_about_a_fifth_of_each_class(folders_dir, digits):
    valid = Counter(p.parent.name for p in (folders_dir / "valid").rglob("*.png"))
    totals = Counter(str(t) for t in digits.target.tolist())
    assert valid == {c: round(0.2 * n) for c, n in totals.items()}
    assert sum(valid.values()) == 359  # 36+36+35+37+36+36+36+36+35+36 for classes 0..9


def test_digits_folders_labels_csv_matches_the_folders(folders_dir, digits):
    rows = read_labels_csv(folders_dir)
    assert len(rows) == N_DIGITS
    assert list(rows[0]) == ["name", "label", "is_valid"]
    for row in rows:
        split, label, _ = row["name"].split("/")
        assert (folders_dir / row["name"]).is_file()
        assert row["label"] == label
        assert row["is_valid"] == ("True" if split == "valid" else "False")
    labels = [int(r["label"]) for r in sorted(rows, key=lambda r: int(Path(r["name"]).stem))]
    assert labels == digits.target.tolist()


def test_digits_folders_pixels(folders_dir, digits):
    rows = read_labels_csv(folders_dir)
    for row in rows[:3] + rows[-2:]:
        i = int(Path(row["name"]).stem)
        assert np.array_equal(np.asarray(Image.open(folders_dir / row["name"])), reference_image(digits, i))


# ---------------------------------------------------------------- keys, home, atomic writing

def test_unknown_key_is_a_key_error(tmp_path):
    with pytest.raises(KeyError, match="digits-names"):
        ensure_builtin("cifar", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_builtin_path_is_under_loupe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    assert builtin_path("digits-names") == tmp_path / "home" / "builtin" / "digits-names"
    assert builtin_path("digits-names", root=tmp_path / "r") == tmp_path / "r" / "digits-names"


def tiny(writer) -> BuiltinDataset:
    base = BUILTINS["digits-names"]
    return BuiltinDataset("tiny", "Tiny", "", base.label_rule, base.split_rule, writer)


def test_interrupted_earlier_attempt_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setitem(BUILTINS, "tiny", tiny(lambda dest: (dest / "a_1.png").write_bytes(b"x")))
    stale = tmp_path / "tiny"
    stale.mkdir()
    (stale / "half_written.png").write_bytes(b"")
    out = ensure_builtin("tiny", root=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a_1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_failed_writer_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(dest: Path) -> None:
        (dest / "a_1.png").write_bytes(b"x")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(BUILTINS, "tiny", tiny(boom))
    with pytest.raises(RuntimeError, match="disk on fire"):
        ensure_builtin("tiny", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
