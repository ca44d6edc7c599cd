"""Tests for engine/data/health.py and `python -m engine health`: planted duplicates, near copies, label conflicts,
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
from PIL import Image, ImageDraw

from engine.data.builtin import BUILTINS, digit_images, ensure_builtin
from engine.cli import main
from engine.data.loaders import label_items
from engine.data.health import (KEEP_RULE, MIN_SIMILARITY, Cluster, candidate_pairs, components, content_thumbnails,
                           grey_thumbnails, health_check, imbalance_ratio, near_pairs, pair_similarity, phash,
                           popcount)
from engine.data.decode_pool import presize_all
from engine.data.labels import LabelRule
from engine.data.sources import scan_folder
from engine.data.split import SplitRule

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


def test_extra_copies_are_exact_copies_of_a_kept_training_file(planted_check):
    [leak] = planted_check.leaks
    assert leak.extra_copies() == []  # five.jpg is a near copy: for the user to judge, never marked
    assert planted_check.duplicates[0].extra_copies() == ["train/a/one_copy.png"]
    assert "first by path among the training images" in KEEP_RULE


def test_extra_copies_keep_one_of_each_set_of_exact_copies():
    cluster = Cluster(files=["train/a.png", "train/b.png", "valid/a.png", "valid/c.jpg"],
                      labels=["x"] * 4, splits=["train", "train", "valid", "valid"], positions=[0, 1, 2, 3],
                      exact=False, groups=[1, 1, 1, 0], similarity=0.95)
    assert cluster.extra_copies() == ["train/b.png", "valid/a.png"]  # train/a.png kept; valid/c.jpg a near copy
    valid_only = Cluster(files=["valid/b.png", "valid/a.png"], labels=["x"] * 2, splits=["valid"] * 2,
                         positions=[0, 1], exact=True)
    assert valid_only.extra_copies() == ["valid/b.png"]  # the first by path is kept when none trains


def test_near_copies_say_how_alike_they_are(planted_check):
    for cluster in planted_check.near_duplicates:
        assert MIN_SIMILARITY <= cluster.similarity <= 1
    assert all(c.similarity == 1 for c in planted_check.duplicates)
    assert planted_check.to_dict()["near_duplicates"][0]["similarity"] == round(planted_check.near_duplicates[0].similarity, 3)


# ---------------------------------------------------------------- pictures that share a template or a background

def car(colour, size: int = 96, mode: str = "RGB") -> Image.Image:
    """A small car (body, cabin, two wheels) in the middle of a white (or transparent) picture."""
    img = Image.new(mode, (size, size), (255, 255, 255, 0) if mode == "RGBA" else "white")
    d = ImageDraw.Draw(img)
    d.rectangle((30, 48, 66, 58), fill=colour)
    d.rectangle((38, 40, 58, 48), fill=colour)
    for x in (36, 60):
        d.ellipse((x - 4, 55, x + 4, 63), fill=(20, 20, 20, 255))
    return img


def sign(pictogram: str, size: int = 96) -> Image.Image:
    """A triangular road sign (red border, white inside) with a small black pictogram."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    d.polygon([(48, 10), (88, 84), (8, 84)], fill=(200, 20, 20))
    d.polygon([(48, 26), (76, 76), (20, 76)], fill="white")
    if pictogram == "fence":
        for x in (38, 44, 50, 56):
            d.rectangle((x, 52, x + 2, 70), fill="black")
        d.rectangle((36, 56, 60, 58), fill="black")
    elif pictogram == "tram":
        d.rectangle((36, 52, 60, 68), fill="black")
        d.line((48, 44, 48, 52), fill="black", width=2)
    elif pictogram == "junction":  # a road with a side road to the right
        d.rectangle((45, 42, 51, 72), fill="black")
        d.rectangle((51, 54, 64, 60), fill="black")
    else:  # crossroads: the same road crossed
        d.rectangle((45, 42, 51, 72), fill="black")
        d.rectangle((32, 54, 64, 60), fill="black")
    return img


def shape(kind: str, size: int = 96, mode: str = "RGBA") -> Image.Image:
    """A blue disc or a blue square on a transparent background."""
    img = Image.new(mode, (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    (d.ellipse if kind == "disc" else d.rectangle)((28, 28, 68, 68), fill=(30, 60, 200, 255))
    return img


def crop(img: Image.Image, share: float, corner: bool = False) -> Image.Image:
    """`img` with `share` of its side cut off (from the top-left corner, or evenly round it)."""
    w, h = img.size
    cut = round(w * share)
    box = (cut, cut, w, h) if corner else (cut // 2, cut // 2, w - (cut - cut // 2), h - (cut - cut // 2))
    return img.crop(box)


def save(root, rel: str, img: Image.Image, quality: int = 85) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".jpg"):
        img.convert("RGB").save(path, "JPEG", quality=quality)
    else:
        img.save(path)


def check_folder(root, presize: int = 64):
    scan = scan_folder(root)
    items = label_items(scan, LabelRule(kind="folder"), SplitRule(kind="folder"))
    return health_check(items, presize_all(items.scanned_paths, presize))


def on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Different pictures that share a template or a background, and real copies of some of them."""
    root = tmp_path_factory.mktemp("templates")
    save(root, "train/cars/red.png", car((200, 30, 30)))
    save(root, "train/cars/black.png", car((15, 15, 15)))
    for name in ("fence", "tram", "junction", "crossroads"):
        save(root, f"train/signs/{name}.png", sign(name))
    save(root, "train/shapes/disc.png", shape("disc"))
    save(root, "train/shapes/square.png", shape("square"))
    save(root, "valid/cars/red_q80.jpg", car((200, 30, 30)), quality=80)  # re-encoded
    save(root, "valid/signs/fence_small.png", sign("fence").resize((72, 72), Image.Resampling.LANCZOS))  # resized
    save(root, "valid/signs/tram_crop.png", crop(sign("tram"), 0.04))  # 4 % cropped off round it
    save(root, "valid/shapes/disc_q90.jpg", on_white(shape("disc")), quality=90)  # transparency re-saved on white
    return root


def test_pictures_sharing_a_template_or_background_are_not_near_copies(templates):
    check = check_folder(templates)
    groups = sorted(c.files for c in check.near_duplicates)
    assert groups == [["train/cars/red.png", "valid/cars/red_q80.jpg"],
                      ["train/shapes/disc.png", "valid/shapes/disc_q90.jpg"],
                      ["train/signs/fence.png", "valid/signs/fence_small.png"],
                      ["train/signs/tram.png", "valid/signs/tram_crop.png"]]
    assert sorted(c.files for c in check.leaks) == groups  # leaks are confirmed the same way
    assert all(MIN_SIMILARITY <= c.similarity <= 1 for c in check.near_duplicates)
    assert check.duplicates == [] and check.label_conflicts == []


def pixels_of(*images: Image.Image, presize: int = 64) -> torch.Tensor:
    """Pictures as the check sees them: on white, square, `presize` px."""
    return torch.stack([torch.from_numpy(np.array(on_white(img).resize((presize, presize), Image.Resampling.BICUBIC)))
                        .permute(2, 0, 1) for img in images])


@pytest.mark.parametrize("a, b", [
    (car((200, 30, 30)), car((15, 15, 15))),
    (sign("fence"), sign("tram")),
    (sign("junction"), sign("crossroads")),
    (shape("disc"), shape("square")),
])
def test_the_content_comparison_rejects_what_a_mean_over_the_whole_picture_accepts(a, b):
    pixels = pixels_of(a, b)
    grey = grey_thumbnails(pixels)
    whole = np.abs(grey[0].reshape(16, 2, 16, 2).mean((1, 3)) - grey[1].reshape(16, 2, 16, 2).mean((1, 3))).mean()
    assert whole <= 8  # mostly the same background: alike on average over the whole picture
    [score] = pair_similarity(content_thumbnails(pixels), np.array([[0, 1]]))
    assert score < MIN_SIMILARITY


@pytest.mark.parametrize("copy", [
    lambda img: Image.open(io.BytesIO(jpeg(on_white(img), 70))),
    lambda img: img.resize((60, 60), Image.Resampling.BILINEAR),
    lambda img: img.resize((160, 160), Image.Resampling.BICUBIC),
    lambda img: crop(img, 0.02),
    lambda img: crop(img, 0.05),
    lambda img: crop(img, 0.03, corner=True),
], ids=["jpeg70", "smaller", "larger", "crop2", "crop5", "corner3"])
@pytest.mark.parametrize("picture", [car((200, 30, 30)), sign("junction"), shape("disc")], ids=["car", "sign", "disc"])
def test_real_copies_are_confirmed(picture, copy):
    pixels = pixels_of(picture, copy(picture))
    [score] = pair_similarity(content_thumbnails(pixels), np.array([[0, 1]]))
    assert score >= MIN_SIMILARITY


def test_the_real_digits_give_only_their_own_near_identical_pairs(tmp_path):
    """The 1,797 built-in digits have no exact copies; the few near copies found are digits of one class whose 8×8
    originals differ by about one grey level (of 16) on average: really the same drawing."""
    from sklearn.datasets import load_digits

    root = ensure_builtin("digits-names", root=tmp_path)
    builtin = BUILTINS["digits-names"]
    items = label_items(scan_folder(root), builtin.label_rule, builtin.split_rule)
    check = health_check(items, presize_all(items.scanned_paths, PRESIZE))
    assert (check.duplicates, check.label_conflicts) == ([], [])
    assert 0 < sum(len(c.files) for c in check.near_duplicates) <= 50  # of 1,797
    originals = load_digits().images
    index = {p: int(p.rsplit("_", 1)[1].split(".")[0]) for p in items.rel_paths}  # six_1045.png: digit 1045
    for cluster in check.near_duplicates:
        assert len(set(cluster.labels)) == 1
        pictures = [originals[index[f]] for f in cluster.files]
        assert min(np.abs(pictures[0] - p).mean() for p in pictures[1:]) < 1.5
    assert check.imbalance_ratio == 183 / 174  # threes / eights, scikit-learn's class counts


def test_phash_is_imagehash_phash():
    """On the same 32×32 grey image, the vectorised phash gives imagehash's bits."""
    images, _ = digit_images()
    pixels = torch.from_numpy(np.repeat(images[:40, None], 3, axis=1))  # [40, 3, 28, 28]
    grey = np.round(grey_thumbnails(pixels)).astype(np.uint8)
    ours = phash(grey.astype(np.float32))
    theirs = [int(str(imagehash.phash(Image.fromarray(g, "L"))), 16) for g in grey]
    assert ours.tolist() == theirs


def test_flat_images_hash_alike_and_the_content_tells_colours_apart():
    """A flat image's frequencies are rounding noise; it must not decide the hash. Flat greys 1 apart are copies."""
    pixels = torch.stack([torch.full((3, 40, 40), v, dtype=torch.uint8) for v in (128, 129, 200, 60)])
    hashes = phash(grey_thumbnails(pixels))
    assert len(set(hashes.tolist())) == 1
    pairs, scores = near_pairs(hashes, pixels)
    assert pairs.tolist() == [[0, 1]] and scores.tolist() == [1.0]


def test_candidate_pairs_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (40, 3)).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips[:, 0], base ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])
    expected = sorted((i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                      if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 2)
    assert sorted(map(tuple, candidate_pairs(hashes, max_distance=2).tolist())) == expected
    assert len(expected) >= 40  # every hash and its one-bit copy


def test_near_pairs_confirm_only_the_candidates_whose_content_matches():
    rng = np.random.default_rng(3)
    pictures = torch.from_numpy(rng.integers(0, 255, (4, 3, 6, 6), dtype=np.uint8))
    pixels = torch.nn.functional.interpolate(pictures.float(), size=(48, 48), mode="bicubic").clamp(0, 255).byte()
    hashes = np.zeros(5, dtype=np.uint64)  # every pair a candidate
    pairs, scores = near_pairs(hashes, torch.cat([pixels, pixels[:1]]), rows=np.array([0, 1, 2, 3, 4]))
    assert pairs.tolist() == [[0, 4]] and scores.tolist() == [1.0]


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
    [leak] = result["leaks"]
    assert leak["similarity"] >= MIN_SIMILARITY
    assert {k: v for k, v in leak.items() if k != "similarity"} == {
        "files": ["train/a/five.png", "valid/a/five.jpg"], "labels": ["a", "a"], "splits": ["train", "valid"],
        "exact": False}
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
