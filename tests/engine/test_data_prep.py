"""Tests for engine/data/data_prep.py and the one count of usable images: background reads and health checks, kept by
what they depend on, and the counts every page shows."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.data.clean import DELETE, Change, apply_changes
from engine.data.loaders import DataLoaders, PresizeCache, health_report, label_items, usable_counts
from engine.data.data_prep import DataPrep, clean_stamp, folder_stamp, read_now
from engine.errors import UserError
from engine.store.jobs import CANCELLED, DONE, FAILED
from engine.data.labels import LabelRule
from engine.data.split import SplitRule

NAMES = LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$", on="name")
SPLIT = SplitRule(valid_pct=0.25, seed=1)


@pytest.fixture(scope="module")
def template(tmp_path_factory, write_digits) -> Path:
    """40 real digits, 3 of them broken files with a digit's name (they get a label but cannot be decoded)."""
    root = write_digits(tmp_path_factory.mktemp("prep"), count=40)
    for p in sorted(root.glob("*.png"))[:3]:
        p.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    return root


@pytest.fixture
def digits(tmp_path, template) -> Path:
    return Path(shutil.copytree(template, tmp_path / "digits"))


@pytest.fixture
def prep(tmp_path, monkeypatch) -> DataPrep:
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    return DataPrep(PresizeCache(max_entries=2))


def test_usable_counts_leave_out_unreadable_files_as_the_batches_do(digits, prep):
    read = read_now(prep, digits, 16)
    items = label_items(read.scan, NAMES, SPLIT)
    counts = usable_counts(items, read.images)
    assert counts.n_unreadable == 3 and counts.n_train + counts.n_valid == 37
    assert ((items.split == "train").sum(), (items.split == "valid").sum()) == (30, 10)  # before: 40 labelled
    dls = DataLoaders(items, read.images, size=16, bs=4)
    assert (dls.n_train, dls.n_valid) == (counts.n_train, counts.n_valid)
    table = health_report(items, read.images).counts
    assert (int(table["train"].sum()), int(table["valid"].sum())) == (counts.n_train, counts.n_valid)
    assert counts.classes == tuple(items.classes)


def test_a_read_is_kept_until_the_cleaner_changes_the_folder(digits, prep):
    read = read_now(prep, digits, 16)
    assert prep.read(digits, 16) is read  # a rule change redraws from the same scan and pixels
    assert read.job.state == DONE and read.job.last("read").data["got"] == "miss"
    stamp = clean_stamp(digits)
    victim = sorted(p.name for p in digits.glob("*.png"))[-1]
    apply_changes(digits, NAMES, [Change(victim, DELETE)])
    assert clean_stamp(digits) != stamp
    again = read_now(prep, digits, 16)
    assert again is not read and len(again.scan.images) == len(read.scan.images) - 1
    before = usable_counts(label_items(read.scan, NAMES, SPLIT), read.images)
    after = usable_counts(label_items(again.scan, NAMES, SPLIT), again.images)
    assert after.n_train + after.n_valid == before.n_train + before.n_valid - 1


def test_a_picture_added_to_a_class_folder_is_read_at_once(digits, prep):
    """A camera shot or a file dropped into a class folder: the counts follow now, not after READ_FRESH_S."""
    classes = digits / "classes"
    for p in sorted(digits.glob("*.png"))[3:13]:  # ten readable digits, in one folder per digit name
        (classes / p.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, classes / p.name.split("_")[0] / p.name)
    read = read_now(prep, classes, 16)
    stamp = folder_stamp(classes)
    assert prep.read(classes, 16) is read and folder_stamp(classes) == stamp  # nothing changed: the same read
    first = next(d for d in sorted(classes.iterdir()) if d.is_dir())
    shutil.copy(next(first.iterdir()), first / "one_more.png")  # into a class folder: the data set's root is as it was
    assert folder_stamp(classes) != stamp
    again = read_now(prep, classes, 16)
    assert again is not read and len(again.scan.images) == len(read.scan.images) + 1


def test_another_presize_reuses_a_fresh_scan(digits, prep):
    read = read_now(prep, digits, 16)
    other = read_now(prep, digits, 20)
    assert other is not read and other.scan is read.scan and other.images.size == 20


def test_a_folder_that_cannot_be_read_fails_with_the_users_message(tmp_path, prep):
    read = prep.read(tmp_path / "missing", 16)
    assert read.wait_scanned(60) and read.scan is None
    assert read.job.state == FAILED and "does not exist" in read.failed
    with pytest.raises(UserError, match="does not exist"):
        read_now(prep, tmp_path / "missing", 16)


def test_health_checks_are_kept_per_rules_and_run_apart_from_reads(digits, prep):
    read = read_now(prep, digits, 16)
    items = label_items(read.scan, NAMES, SPLIT)
    key = PresizeCache.key(items.scanned_paths, 16, "crop")
    run = prep.check(key, "names", items, read.images, read.scan)
    assert run.wait(120) and run.job.state == DONE and run.check is not None
    assert prep.check(key, "names", items, read.images, read.scan) is run
    other = label_items(read.scan, NAMES, SplitRule(valid_pct=0.5, seed=2))
    assert prep.check(key, "half", other, read.images, read.scan) is not run


def test_a_newer_request_cancels_the_queued_ones(digits, prep, tmp_path):
    """Reads run one at a time: a read asked for while another runs waits, and is dropped once a newer one is asked."""
    import threading

    held = threading.Event()
    original = prep.cache.get

    def slow_get(*args, **kwargs):
        held.wait(60)  # the first read holds here until the test lets it go
        return original(*args, **kwargs)

    prep.cache.get = slow_get
    second = Path(shutil.copytree(digits, tmp_path / "second"))
    third = Path(shutil.copytree(digits, tmp_path / "third"))
    first = prep.read(digits, 16)
    assert first.wait_scanned(60)
    queued = prep.read(second, 16)
    newest = prep.read(third, 16)
    assert queued.job.state == CANCELLED  # nobody waits for it any more
    held.set()
    assert newest.wait(120) and newest.job.state == DONE and first.job.state == DONE
    assert prep.read(second, 16) is not queued  # asked for again: read afresh
