"""Tests for engine/health.py and `python -m engine health`: planted duplicates, near copies, label conflicts,
leaks, unreadable files and broken links found exactly; the phash matches imagehash's."""
from __future__ import annotations

import io
import json
import math
import os

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image

from engine.builtin import BUILTINS, digit_images, ensure_builtin
from engine.cli import main
from engine.data import label_items
from engine.health import components, grey_thumbnails, health_check, imbalance_ratio, near_pairs, phash, popcount
from engine.images import presize_all
from engine.labels import LabelRule
from engine.sources import scan_folder
from engine.split import SplitRule

PRESIZE = 58  # the built-in digits' presize for 28 px


def digit(k: int) -> Image.Image:
    """The first real 28×28 digit of class k (ten clearly different pictures)."""
    images, targets = digit_images()
    return Image.fromarray(images[int(np.flatnonzero(targets == k)[0])], "L")


def jpeg(img: Image.Image, quality: int, side: int | None = None) -> bytes:
    """`img` resized to side×side (if given) and saved as a JPEG of `quality`."""
    if side is not None:
        img = img.resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """train/ and valid/ folders of classes a and b, with one of each problem planted."""
    root = tmp_path_factory.mktemp("health")
    for d in ("train/a", "train/b", "valid/a", "valid/b"):
        (root / d).mkdir(parents=True)
    digit(1).save(root / "train/a/one.png")
    (root / "train/a/one_copy.png").write_bytes((root / "train/a/one.png").read_bytes())  # byte-identical copy
    digit(2).save(root / "train/a/two.png")
    digit(2).save(root / "train/a/two.bmp")  # the same pixels in another format
    digit(3).save(root / "train/a/three.png")
    digit(3).save(root / "train/b/three.png")  # the same picture under label b
    (root / "train/b/four.jpg").write_bytes(jpeg(digit(4), 95))
    (root / "train/b/four_small.jpg").write_bytes(jpeg(digit(4), 50, side=56))  # re-encoded and resized
    digit(5).save(root / "train/a/five.png")
    (root / "valid/a/five.jpg").write_bytes(jpeg(digit(5), 70, side=42))  # a near copy in validation
    digit(6).save(root / "valid/a/six.png")
    digit(7).save(root / "valid/b/seven.png")
    digit(8).save(root / "train/b/eight.png")
    digit(9).save(root / "train/b/nine.png")
    (root / "train/b/broken.png").write_bytes(b"not an image at all")
    os.symlink(root / "train/b/gone.png.missing", root / "train/b/gone.png")
    return root


@pytest.fixture(scope="module")
def planted_check(planted):
    scan = scan_folder(planted)
    items = label_items(scan, LabelRule(kind="folder"), SplitRule(kind="folder"))
    images = presize_all(items.scanned_paths, PRESIZE)
    return health_check(items, images, broken_links=scan.broken_links, unreadable_folders=scan.unreadable)


def files(clusters) -> list[list[str]]:
    return [c.files for c in clusters]


def test_exact_duplicates_are_the_same_pixels_whatever_the_file(planted_check):
    assert files(planted_check.duplicates) == [
        ["train/a/one.png", "train/a/one_copy.png"],
        ["train/a/three.png", "train/b/three.png"],
        ["train/a/two.bmp", "train/a/two.png"],
    ]
    assert all(c.exact for c in planted_check.duplicates)
    assert planted_check.extra_copies() == 3


def test_near_duplicates_survive_jpeg_and_resizing(planted_check):
    assert files(planted_check.near_duplicates) == [["train/a/five.png", "valid/a/five.jpg"],
                                                   ["train/b/four.jpg", "train/b/four_small.jpg"]]
    assert not any(c.exact for c in planted_check.near_duplicates)


def test_label_conflicts_and_leaks(planted_check):
    [conflict] = planted_check.label_conflicts
    assert (conflict.files, conflict.labels, conflict.splits) == (["train/a/three.png", "train/b/three.png"],
                                                                 ["a", "b"], ["train", "train"])
    [leak] = planted_check.leaks
    assert (leak.files, leak.labels, leak.splits, leak.exact) == (["train/a/five.png", "valid/a/five.jpg"],
                                                                 ["a", "a"], ["train", "valid"], False)
    assert leak.table().to_dict("list") == {"file": leak.files, "label": leak.labels, "split": leak.splits}


def test_classes_imbalance_and_unusable_files(planted_check):
    assert planted_check.classes == {"a": 8, "b": 6}  # broken.png is left out of b
    assert planted_check.imbalance_ratio == 8 / 6
    assert planted_check.n_checked == 14
    [bad] = planted_check.unreadable
    assert bad["file"] == "train/b/broken.png" and bad["reason"].startswith("not a readable image")
    assert planted_check.broken_links == ["train/b/gone.png"]


def test_to_keep_one_deletes_every_copy_but_a_training_one(planted_check):
    [leak] = planted_check.leaks
    assert leak.to_delete() == ["valid/a/five.jpg"]
    assert planted_check.duplicates[0].to_delete() == ["train/a/one_copy.png"]


def test_distinct_real_digits_are_not_near_duplicates(tmp_path):
    """The 1,797 built-in digits are all different pictures: nothing is reported."""
    root = ensure_builtin("digits-names", root=tmp_path)
    builtin = BUILTINS["digits-names"]
    items = label_items(scan_folder(root), builtin.label_rule, builtin.split_rule)
    check = health_check(items, presize_all(items.scanned_paths, PRESIZE))
    assert (check.duplicates, check.near_duplicates, check.label_conflicts, check.leaks) == ([], [], [], [])
    assert check.imbalance_ratio == 183 / 174  # threes / eights, scikit-learn's class counts


def test_phash_is_imagehash_phash():
    """On the same 32×32 grey image, the vectorised phash gives imagehash's bits."""
    images, _ = digit_images()
    pixels = torch.from_numpy(np.repeat(images[:40, None], 3, axis=1))  # [40, 3, 28, 28]
    grey = np.round(grey_thumbnails(pixels)).astype(np.uint8)
    ours = phash(grey.astype(np.float32))
    theirs = [int(str(imagehash.phash(Image.fromarray(g, "L"))), 16) for g in grey]
    assert ours.tolist() == theirs


def test_flat_images_hash_alike_and_the_thumbnails_tell_greys_apart():
    """A flat image's frequencies are rounding noise; it must not decide the hash."""
    pixels = torch.stack([torch.full((3, 40, 40), v, dtype=torch.uint8) for v in (128, 129, 200, 60)])
    grey = grey_thumbnails(pixels)
    hashes = phash(grey)
    assert len(set(hashes.tolist())) == 1
    thumbs = grey.reshape(4, 16, 2, 16, 2).mean((2, 4))
    assert near_pairs(hashes, thumbs).tolist() == [[0, 1]]


def test_near_pairs_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (40, 3)).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips[:, 0], base ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])
    thumbs = np.zeros((len(hashes), 16, 16), dtype=np.float32)
    thumbs[80:90] += 10.0  # ten far-apart thumbnails: their hash matches are not confirmed
    expected = sorted((i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                      if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 2
                      and np.abs(thumbs[i] - thumbs[j]).mean() <= 4.0)
    assert sorted(map(tuple, near_pairs(hashes, thumbs, max_distance=2).tolist())) == expected
    assert len(expected) >= 40  # every hash and its one-bit copy


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    x = np.array([0, 1, 2**64 - 1, 0xF0F0], dtype=np.uint64)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert popcount(x).tolist() == [0, 1, 64, 8]


def test_components_join_chains_into_one_cluster():
    ids = components(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert ids[0] == ids[1] == ids[2] and ids[4] == ids[5] and len({ids[0], ids[3], ids[4]}) == 3


def test_imbalance_ratio():
    assert imbalance_ratio([30, 10, 20]) == 3.0
    assert imbalance_ratio([5, 0]) == math.inf
    assert math.isnan(imbalance_ratio([]))


# ---------------------------------------------------------------- the command line

def test_cli_health_json(planted, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    code = main(["health", "--data", str(planted), "--label", "folder", "--split", "folder", "--size", "28", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    result = json.loads(out[0])
    assert set(result) == {"classes", "imbalance_ratio", "unreadable", "broken_links", "duplicates",
                           "near_duplicates", "label_conflicts", "leaks", "n_checked"}
    assert result["classes"] == {"a": 8, "b": 6} and result["imbalance_ratio"] == pytest.approx(8 / 6)
    assert [u["file"] for u in result["unreadable"]] == ["train/b/broken.png"]
    assert result["broken_links"] == ["train/b/gone.png"]
    assert [c["files"] for c in result["duplicates"]] == [["train/a/one.png", "train/a/one_copy.png"],
                                                          ["train/a/three.png", "train/b/three.png"],
                                                          ["train/a/two.bmp", "train/a/two.png"]]
    assert result["leaks"] == [{"files": ["train/a/five.png", "valid/a/five.jpg"], "labels": ["a", "a"],
                                "splits": ["train", "valid"], "exact": False}]
    assert result["label_conflicts"][0]["labels"] == ["a", "b"]
    assert [c["files"] for c in result["near_duplicates"]] == [["train/a/five.png", "valid/a/five.jpg"],
                                                               ["train/b/four.jpg", "train/b/four_small.jpg"]]


def test_cli_health_report(planted, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    assert main(["health", "--data", str(planted), "--label", "folder", "--split", "folder", "--size", "28"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("14 labelled, readable images in 2 classes; largest / smallest class: 1.33.")
    assert "1 picture(s) are in both the training and the validation set" in out
    assert "train/a/five.png (a, train), valid/a/five.jpg (a, valid)" in out
    assert "train/b/gone.png" in out and "train/b/broken.png: not a readable image" in out


def test_cli_health_bad_input_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    assert main(["health", "--data", str(tmp_path / "nowhere"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The folder") and "does not exist" in err
