"""Tests for engine/data/loaders.py: labelling and splitting a folder, the pixel cache, health, and batches."""
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine.data.loaders as data
import engine.data.decode_pool as pool_module
import engine.data.images as images_module
from engine.data.augment import AugSettings, normalize, resize_batch
from engine.data.builtin import BUILTINS, ensure_builtin
from engine.data.cache import CacheGet, MappedPixels
from engine.data.loaders import DataLoaders, PresizeCache, health_report, label_items
from engine.errors import UserError
from engine.data.decode_pool import presize_all
from engine.data.labels import LabelRule
from engine.data.sources import scan_folder
from engine.data.split import SplitRule

FOLDER = LabelRule(kind="folder")
BY_FOLDERS = SplitRule(kind="folder")


def make_images(root: Path, rels: list[str], mode: str = "RGB", size=(8, 6)) -> Path:
    """Write a small image at each relative path, each a different solid grey so files differ."""
    for k, rel in enumerate(rels):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 10 * k % 256).convert(mode).save(path)
    return root


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not an image")
    return path


# ---------------------------------------------------------------- label_items

def test_one_class_is_a_user_error(tmp_path):
    make_images(tmp_path, ["cat_1.png", "cat_2.png", "cat_3.png"])
    with pytest.raises(UserError, match=r"only one class \('cat'\)"):
        label_items(scan_folder(tmp_path), LabelRule(pattern=r"^(.+)_\d+\.png$"), SplitRule())


def test_no_match_is_a_user_error(tmp_path):
    make_images(tmp_path, ["a.png", "b.png"])
    with pytest.raises(UserError, match="no label to any of the 2 images"):
        label_items(scan_folder(tmp_path), LabelRule(pattern=r"^(.+)_\d+\.png$"), SplitRule())


def test_split_without_train_or_valid_is_a_user_error(tmp_path):
    make_images(tmp_path, ["cat_1.png", "dog_1.png", "cat_2.png", "dog_2.png"])
    scan = scan_folder(tmp_path)
    with pytest.raises(UserError, match="no validation images"):
        label_items(scan, LabelRule(pattern=r"^(.+)_\d+\.png$"), SplitRule(valid_pct=0.0))
    with pytest.raises(UserError, match="No file is inside a folder named 'valid'"):
        label_items(scan, LabelRule(pattern=r"^(.+)_\d+\.png$"), BY_FOLDERS)


@pytest.fixture
def mnist_like(tmp_path) -> Path:
    """train/{3,7}, valid/{3,7}, a test/ folder the split leaves out, a loose file the labeller misses."""
    rels = ([f"train/3/{i}.png" for i in range(6)] + [f"train/7/{i}.png" for i in range(5)]
            + ["valid/3/a.png", "valid/7/b.png", "valid/7/c.png"]
            + ["train/1/x.png", "train/1/y.png"]  # a tiny class, only in train
            + ["test/9/t.png", "loose.png"])
    make_images(tmp_path, rels)
    (tmp_path / "readme.txt").write_text("hi")
    return tmp_path


def test_label_items_labels_and_splits(mnist_like):
    items = label_items(scan_folder(mnist_like), FOLDER, BY_FOLDERS)
    assert items.n_files == 18 and len(items.scanned) == 18
    assert items.scanned == sorted(items.scanned)
    assert items.skipped_files == 1 and items.skipped_examples == ["readme.txt"]
    # loose.png has no folder (no label); test/9/t.png is labelled but in neither split
    assert items.label_report.n_unmatched == 1
    assert items.n_outside_split == 1
    assert len(items.rel_paths) == 16
    assert "loose.png" not in items.rel_paths and "test/9/t.png" not in items.rel_paths
    assert items.classes == ["1", "3", "7"]
    for rel, label, split in zip(items.rel_paths, items.labels, items.split):
        assert label == rel.split("/")[1] and split == rel.split("/")[0]
    assert items.targets.tolist() == [items.classes.index(label) for label in items.labels]
    counts = items.counts()
    assert counts.to_dict("index") == {"1": {"train": 2, "valid": 0, "total": 2},
                                       "3": {"train": 6, "valid": 1, "total": 7},
                                       "7": {"train": 5, "valid": 2, "total": 7}}
    assert items.table().columns.tolist() == ["file", "label", "split"]


def test_image_index_maps_into_scanned(mnist_like):
    items = label_items(scan_folder(mnist_like), FOLDER, BY_FOLDERS)
    assert [items.scanned[i] for i in items.image_index] == items.rel_paths
    assert items.scanned_paths == [mnist_like.resolve() / rel for rel in items.scanned]


def test_warnings(mnist_like):
    warnings = label_items(scan_folder(mnist_like), FOLDER, BY_FOLDERS).warnings()
    assert warnings == [
        "1 class(es) have fewer than 5 images: 1.",
        "1 class(es) have no validation images, so their accuracy cannot be measured: 1.",
        "1 image(s) got no label from the rule and are left out.",
        "1 labelled image(s) are in neither split and are left out.",
    ]


def test_warning_for_a_class_only_in_validation(tmp_path):
    make_images(tmp_path, [f"train/a/{i}.png" for i in range(5)] + [f"valid/a/{i}.png" for i in range(5)]
                + [f"valid/b/{i}.png" for i in range(5)])
    warnings = label_items(scan_folder(tmp_path), FOLDER, BY_FOLDERS).warnings()
    assert warnings == ["1 class(es) appear only in validation, so the model never learns them: b."]


# ---------------------------------------------------------------- PresizeCache

@pytest.fixture
def counted(monkeypatch, tmp_path):
    """The files PresizeCache decodes, in order; a fresh Loupe home, so the disk cache starts empty."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOUPE_RAM_BUDGET_MB", "1024")
    calls = []
    load = images_module._load_presized

    def counting(path, size, method):
        calls.append(Path(path).name)
        return load(path, size, method)

    monkeypatch.setattr(images_module, "_load_presized", counting)
    monkeypatch.setattr(pool_module, "default_workers", lambda: 1)  # decode here, where the count sees it
    return calls


def test_cache_returns_the_same_object_for_the_same_files(tmp_path, counted):
    paths = sorted(make_images(tmp_path / "img", ["a.png", "b.png"]).glob("*.png"))
    cache = PresizeCache()
    first = cache.get(paths, 8)
    assert cache.last_get.status == "miss" and cache.last_get.decoded == 2
    assert cache.get(list(paths), 8) is first
    assert cache.last_get == CacheGet("hit", 0, 0.0)
    assert cache.cached(paths, 8) and not cache.cached(paths, 16)
    assert counted == ["a.png", "b.png"]


def test_cache_decodes_only_the_file_that_changed(tmp_path, counted):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    make_images(tmp_path, ["a.png", "b.png"])
    cache = PresizeCache(max_entries=8)
    first = cache.get([a, b], 8)

    Image.new("RGB", (9, 6), (200, 0, 0)).save(a)  # new content: another file size and time
    second = cache.get([a, b], 8)
    assert second is not first and cache.last_get.status == "partial"
    assert second.pixels[0, :, 0, 0].tolist() == [200, 0, 0]
    assert torch.equal(second.pixels[1], first.pixels[1])

    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # only the time changes
    third = cache.get([a, b], 8)
    assert third is not second
    assert counted == ["a.png", "b.png", "a.png", "b.png"]


def test_cache_keeps_other_presize_settings_apart_and_evicts_the_oldest_from_memory(tmp_path, counted):
    paths = sorted(make_images(tmp_path, ["a.png", "b.png"]).glob("*.png"))
    cache = PresizeCache(max_entries=2)
    crop8 = cache.get(paths, 8)
    squish8 = cache.get(paths, 8, "squish")
    assert squish8 is not crop8 and squish8.method == "squish"
    assert cache.get(paths, 8) is crop8  # now the most recently used
    crop4 = cache.get(paths, 4)
    assert crop4.pixels.shape == (2, 3, 4, 4)
    assert cache.cached(paths, 8) and cache.cached(paths, 4) and not cache.cached(paths, 8, "squish")
    assert len(counted) == 6  # two files at each of three settings
    again = cache.get(paths, 8, "squish")  # out of memory, still on disk
    assert torch.equal(again.pixels.load(), squish8.pixels.load()) and len(counted) == 6 and cache.last_get.status == "hit"


def test_memory_budget(monkeypatch):
    monkeypatch.delenv("LOUPE_RAM_BUDGET_MB", raising=False)
    monkeypatch.setenv("LOUPE_CACHE_GB", "0.000001")
    assert data.memory_budget_bytes() == 1073
    monkeypatch.setenv("LOUPE_RAM_BUDGET_MB", "64")  # the newer name wins
    assert data.memory_budget_bytes() == 64 * 1024**2


def test_over_the_memory_budget_pixels_are_mapped_and_batches_are_the_same(tmp_path, counted, monkeypatch):
    root = make_images(tmp_path / "img", [f"train/{c}/{i}.png" for c in "ab" for i in range(40)]
                       + [f"valid/{c}/{i}.png" for c in "ab" for i in range(9)], size=(20, 14))
    for k, path in enumerate(sorted(root.rglob("*.png"))):  # varied pixels, so a wrong row would show
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 256, (14, 20, 3), dtype=np.uint8)).save(path)
    items = label_items(scan_folder(root), FOLDER, BY_FOLDERS)
    in_memory = PresizeCache().get(items.scanned_paths, 16)
    assert in_memory.pixels.keep_in_memory and not in_memory.pixels.load_started  # showing a batch copies nothing
    DataLoaders(items, in_memory, size=12, bs=16).show_batch()
    assert not in_memory.pixels.load_started
    next(DataLoaders(items, in_memory, size=12, bs=16).train())  # training does, in the background
    assert in_memory.pixels.load_started
    in_memory.pixels.load()  # waits for that copy
    monkeypatch.setenv("LOUPE_RAM_BUDGET_MB", "0.01")  # 10 kB: 98 images at 16 px take 75 kB
    mapped = PresizeCache().get(items.scanned_paths, 16)
    assert in_memory.in_memory and not mapped.in_memory and len(counted) == 98  # decoded once, for both
    assert isinstance(mapped.pixels, MappedPixels) and mapped.nbytes == in_memory.nbytes
    assert torch.equal(mapped.pixels[torch.arange(98)], in_memory.pixels[torch.arange(98)])

    def batches(images, **kw):
        dl = DataLoaders(items, images, size=12, bs=16, seed=3, **kw)
        return [*dl.train(), *dl.train(), *dl.valid()], dl.show_batch(), dl.show_batch(split="valid")

    for aug in (AugSettings(), AugSettings.off()):
        (a, show_a, valid_a), (b, show_b, valid_b) = batches(in_memory, aug=aug), batches(mapped, aug=aug)
        assert len(a) == len(b) == 2 * (80 // 16) + 2
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(show_a[0], show_b[0]) and show_a[1] == show_b[1]
        assert torch.equal(valid_a[0], valid_b[0])
    assert not mapped.in_memory and not mapped.pixels.load_started  # over the budget: never copied into memory


# ---------------------------------------------------------------- health_report

def test_health_report(tmp_path):
    make_images(tmp_path, [f"train/cat/{i}.png" for i in range(3)] + ["valid/cat/v.png"], mode="RGB", size=(10, 6))
    make_images(tmp_path, [f"train/dog/{i}.png" for i in range(2)] + ["valid/dog/v.png"], mode="L", size=(4, 4))
    corrupt(tmp_path / "train/dog/broken.png")
    items = label_items(scan_folder(tmp_path), FOLDER, BY_FOLDERS)
    images = presize_all(items.scanned_paths, 8)
    health = health_report(items, images)

    assert health.failures["file"].tolist() == ["train/dog/broken.png"]
    assert health.failures["reason"].tolist()[0].startswith("not a readable image")
    assert health.counts.to_dict("index") == {"cat": {"train": 3, "valid": 1, "total": 4},
                                              "dog": {"train": 2, "valid": 1, "total": 3}}
    assert health.modes == {"RGB": 4, "L": 3}
    assert sorted(map(tuple, health.sizes.values.tolist())) == [(4, 4)] * 3 + [(10, 6)] * 4
    assert health.warnings == [
        "2 class(es) have fewer than 5 images: cat, dog.",
        "1 file(s) could not be read and are left out (listed below).",
    ]


# ---------------------------------------------------------------- DataLoaders on the built-in digits

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = ensure_builtin("digits-names", root=tmp_path_factory.mktemp("builtin"))
    spec = BUILTINS["digits-names"]
    items = label_items(scan_folder(root), spec.label_rule, spec.split_rule)
    images = presize_all(items.scanned_paths, 32)
    return items, images


def loaders(digits, **kw) -> DataLoaders:
    items, images = digits
    return DataLoaders(items, images, size=28, bs=64, seed=0, **kw)


def record_indices(dl: DataLoaders) -> list[torch.Tensor]:
    """Make `dl` note which items each batch reads (batches are gathered one at a time, in order)."""
    seen = []
    read = dl._gather

    def noting(idx):
        seen.append(idx.clone())
        return read(idx)

    dl._gather = noting
    return seen


def test_digits_items(digits):
    items, images = digits
    assert len(items.rel_paths) == 1797 and images.ok.all()
    assert items.classes == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert Counter(items.split.tolist()) == {"train": 1438, "valid": 359}


def test_train_batches(digits):
    dl = loaders(digits)
    seen = record_indices(dl)
    batches = list(dl.train())
    assert (dl.n_train, dl.n_valid) == (1438, 359)
    assert len(batches) == 1438 // 64 == 22  # drop_last: the last 30 items wait for another epoch
    for (x, y), idx in zip(batches, seen):
        assert x.shape == (64, 3, 28, 28) and x.dtype == torch.float32
        assert y.shape == (64,) and y.dtype == torch.int64
        assert torch.equal(y, dl.y[idx])
    epoch = torch.cat(seen)
    assert len(set(epoch.tolist())) == 22 * 64
    assert set(epoch.tolist()) <= set(dl.train_idx.tolist())
    assert all(digits[0].split[i] == "train" for i in epoch.tolist())


def test_train_batches_are_normalised_augmentations(digits):
    x_norm, y1 = next(loaders(digits).train())
    x_raw, y2 = next(loaders(digits).train(norm=False))  # same seed: same order, same augmentation
    assert torch.equal(y1, y2)
    assert x_raw.min() >= 0 and x_raw.max() <= 1
    assert torch.allclose(x_norm, normalize(x_raw))
    assert x_norm.min() < 0  # black (0) becomes -mean/std
    # augmented, so not simply resized
    dl = loaders(digits)
    seen = record_indices(dl)
    x, _ = next(dl.train(norm=False))
    plain = resize_batch(dl.images.pixels[dl.image_index[seen[0]]], 28)
    assert not torch.allclose(x, plain, atol=1e-3)


def test_train_without_drop_last_and_reshuffled_each_epoch(digits):
    dl = loaders(digits)
    seen = record_indices(dl)
    sizes = [len(y) for _, y in dl.train(drop_last=False)]
    assert sizes == [64] * 22 + [30]
    first = torch.cat(seen)
    assert sorted(first.tolist()) == sorted(dl.train_idx.tolist())
    seen.clear()
    list(dl.train(drop_last=False))
    assert not torch.equal(torch.cat(seen), first)


def test_train_with_augmentation_off_is_the_resized_pixels(digits):
    dl = loaders(digits, aug=AugSettings.off())
    seen = record_indices(dl)
    x, _ = next(dl.train(norm=False))
    assert torch.equal(x, resize_batch(dl.images.pixels[dl.image_index[seen[0]]], 28))


def test_valid_batches_cover_every_valid_item_once_in_order(digits):
    items, images = digits
    dl = loaders(digits)
    batches = list(dl.valid())
    assert [len(y) for _, y in batches] == [64] * 5 + [39]
    valid_items = np.flatnonzero(items.split == "valid")
    assert torch.cat([y for _, y in batches]).tolist() == items.targets[valid_items].tolist()
    x_all = torch.cat([x for x, _ in batches])
    expected = normalize(resize_batch(images.pixels[items.image_index[valid_items]], 28))
    assert torch.equal(x_all, expected)
    assert torch.equal(torch.cat([x for x, _ in dl.valid()]), x_all)  # un-augmented: the same every time
    raw = torch.cat([x for x, _ in dl.valid(norm=False)])
    assert torch.equal(raw, resize_batch(images.pixels[items.image_index[valid_items]], 28))


def test_show_batch(digits):
    dl = loaders(digits)
    seen = record_indices(dl)
    x, labels = dl.show_batch()
    assert x.shape == (9, 3, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert labels == [dl.classes[int(t)] for t in dl.y[seen[0]]]
    assert len(set(seen[0].tolist())) == 9


def test_show_batch_of_validation_items_is_unaugmented(digits):
    dl = loaders(digits)
    seen = record_indices(dl)
    x, labels = dl.show_batch(max_n=4, split="valid")
    assert torch.equal(x, resize_batch(dl.images.pixels[dl.image_index[seen[0]]], 28))
    assert all(digits[0].split[i] == "valid" for i in seen[0].tolist())
    assert labels == [dl.classes[int(t)] for t in dl.y[seen[0]]]


def test_show_batch_unique_is_one_item_augmented(digits):
    dl = loaders(digits)
    seen = record_indices(dl)
    x, labels = dl.show_batch(unique=True)
    (i,) = seen[0].tolist()
    assert x.shape == (9, 3, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert labels == [dl.classes[int(dl.y[i])]] * 9
    assert len({tuple(xi.flatten().tolist()) for xi in x}) > 1  # nine different augmentations

    plain = loaders(digits, aug=AugSettings.off())
    seen = record_indices(plain)
    x, _ = plain.show_batch(unique=True)
    one = resize_batch(plain.images.pixels[plain.image_index[seen[0]]], 28)
    assert torch.equal(x, one.expand(9, -1, -1, -1))


# ---------------------------------------------------------------- unreadable files

def test_corrupt_images_are_excluded_from_batches(tmp_path):
    make_images(tmp_path, [f"train/a/{i}.png" for i in range(4)] + [f"train/b/{i}.png" for i in range(4)]
                + ["valid/a/0.png", "valid/b/0.png"])
    corrupt(tmp_path / "train/a/bad.png")
    corrupt(tmp_path / "valid/b/bad.png")
    items = label_items(scan_folder(tmp_path), FOLDER, BY_FOLDERS)
    images = presize_all(items.scanned_paths, 8)
    bad = {items.rel_paths.index("train/a/bad.png"), items.rel_paths.index("valid/b/bad.png")}
    assert int((~images.ok).sum()) == 2

    dl = DataLoaders(items, images, size=8, bs=3, seed=0)
    assert (dl.n_train, dl.n_valid) == (8, 2)
    seen = record_indices(dl)
    list(dl.train(drop_last=False))
    list(dl.valid())
    dl.show_batch(max_n=9)
    used = set(torch.cat(seen).tolist())
    assert used == set(range(len(items.rel_paths))) - bad


def test_all_validation_images_unreadable_is_a_user_error(tmp_path):
    make_images(tmp_path, ["train/a/0.png", "train/b/0.png"])
    corrupt(tmp_path / "valid/a/0.png")
    items = label_items(scan_folder(tmp_path), FOLDER, BY_FOLDERS)
    with pytest.raises(UserError, match="a split is empty"):
        DataLoaders(items, presize_all(items.scanned_paths, 8), size=8)


def test_items_and_images_must_match(tmp_path):
    make_images(tmp_path, ["train/a/0.png", "train/b/0.png", "valid/a/0.png"])
    items = label_items(scan_folder(tmp_path), FOLDER, BY_FOLDERS)
    with pytest.raises(ValueError, match="do not match"):
        DataLoaders(items, presize_all(items.scanned_paths[:2], 8), size=8)
