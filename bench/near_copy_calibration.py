"""How well the health check tells near copies from different pictures, on real icons (the Tango icon theme).

Prints figures only; asserts nothing. Run from the repository root (`apt-get install tango-icon-theme` first):

    .venv/bin/python bench/near_copy_calibration.py [--tango /usr/share/icons/Tango] [--presize 160]

The pictures: every real PNG of the theme (links followed once), at 16, 22, 24 and 32 px — the same icon drawn
at each size, a real resized copy (24 px is the 22 px icon on a larger canvas) — and, made from each 32 px
icon, one of each: a JPEG re-encode on white (quality 70, 80 or 90), a resize (to 20, 48 or 64 px), a 2–5 %
crop (of the icon enlarged to 128 px: 2, 3.5 or 5 % off, from the centre or one corner). Pictures with the
same category and icon name are the same picture; every other pair is a different picture — Tango's icons
share templates (documents, folders, faces, network computers, weather, arrows) and a transparent background.

Prints pair-level precision and recall of the clusters the check forms (two files of one cluster: "found
as copies"), for the phash alone, the earlier confirmation (16×16 grey thumbnails, mean difference ≤ 4) and the
content confirmation at several thresholds; recall by kind of copy; and the most similar different pictures.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections import defaultdict
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine.data.health import (MIN_SIMILARITY, NEAR_DISTANCE, candidate_pairs, components, content_thumbnails,  # noqa: E402
                           exact_groups, grey_thumbnails, pair_similarity, phash)
from engine.data.decode_pool import presize_all  # noqa: E402

SIZES = ("16x16", "22x22", "24x24", "32x32")


def on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def make_pictures(tango: Path, out: Path) -> tuple[list[Path], list[str], list[str]]:
    """The real icons and the copies made from the 32 px ones: paths, the picture each shows, how it was made."""
    paths, keys, kinds, seen = [], [], [], set()
    for size in SIZES:
        for path in sorted((tango / size).glob("*/*.png")):
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            paths.append(Path(real))
            keys.append(f"{path.parent.name}/{Path(real).stem}")  # a link's target names the picture
            kinds.append(f"tango {size}")
    originals = [(p, k) for p, k, kind in zip(paths, keys, kinds) if kind == "tango 32x32"]
    for n, (path, key) in enumerate(originals):
        img = Image.open(path)
        img.load()
        stem = out / key.replace("/", "__")
        quality = (70, 80, 90)[n % 3]
        buf = io.BytesIO()
        on_white(img).save(buf, "JPEG", quality=quality)
        (jpeg := stem.with_name(stem.name + f"_q{quality}.jpg")).write_bytes(buf.getvalue())
        side = (20, 48, 64)[n % 3]
        img.resize((side, side), Image.Resampling.LANCZOS).save(resized := stem.with_name(stem.name + f"_{side}.png"))
        big = img.resize((128, 128), Image.Resampling.LANCZOS)
        cut = round(128 * (0.02, 0.035, 0.05)[n % 3])
        box = (cut // 2, cut // 2, 128 - (cut - cut // 2), 128 - (cut - cut // 2)) if n % 2 else (cut, cut, 128, 128)
        big.crop(box).save(cropped := stem.with_name(stem.name + f"_crop{cut}.png"))
        for made, kind in ((jpeg, "re-encode (JPEG q70–90)"), (resized, "resize (20–64 px)"),
                           (cropped, "crop (2–5 %)")):
            paths.append(made)
            keys.append(key)
            kinds.append(kind)
    return paths, keys, kinds


def pair_scores(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    """Pair-level precision and recall of cluster ids `found` against picture ids `truth`, and false pairs."""
    same_found = same_truth = both = 0
    by_found: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(found):
        by_found[int(f)].append(i)
    for members in by_found.values():
        same_found += len(members) * (len(members) - 1) // 2
        for a, b in combinations(members, 2):
            both += truth[a] == truth[b]
    for t in np.unique(truth):
        k = int((truth == t).sum())
        same_truth += k * (k - 1) // 2
    return (both / same_found if same_found else 1.0), both / same_truth, same_found - both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tango", type=Path, default=Path("/usr/share/icons/Tango"))
    parser.add_argument("--presize", type=int, default=160)
    args = parser.parse_args()
    if not (args.tango / "32x32").is_dir():
        sys.exit(f"No Tango icons in {args.tango}: apt-get install tango-icon-theme")
    with tempfile.TemporaryDirectory() as tmp:
        paths, keys, kinds = make_pictures(args.tango, Path(tmp))
        images = presize_all(paths, args.presize)
    assert images.ok.all()
    rows = np.arange(len(paths))
    grey = grey_thumbnails(images.pixels)
    hashes = phash(grey)
    group = exact_groups(images.pixels, rows, images.sizes, hashes)
    # pixel-identical files under two names are one picture (the theme has a few)
    truth_names = {k: i for i, k in enumerate(sorted(set(keys)))}
    truth = np.array([truth_names[k] for k in keys])
    truth = components(len(truth_names), np.array(sorted({(truth[a], truth[b]) for g in np.unique(group)
                                                          for a, b in combinations(np.flatnonzero(group == g), 2)
                                                          if truth[a] != truth[b]}) or np.zeros((0, 2), int)))[truth]
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    print(f"{len(paths):,} pictures ({len(set(truth.tolist())):,} different pictures), presize {args.presize}; "
          + ", ".join(f"{kind}: {kinds.count(kind)}" for kind in dict.fromkeys(kinds)))

    wide = candidate_pairs(hashes[first], 14)
    distance = np.array([bin(int(hashes[first][a]) ^ int(hashes[first][b])).count("1") for a, b in wide])
    scores = pair_similarity(content_thumbnails(images.pixels, first), wide)
    thumbs = grey[first].reshape(len(first), 16, 2, 16, 2).mean((2, 4)).reshape(len(first), -1)
    old = np.abs(thumbs[wide[:, 0]] - thumbs[wide[:, 1]]).mean(1) <= 4.0

    def clusters(keep: np.ndarray) -> np.ndarray:
        return components(len(first), wide[keep])[inverse]

    index32 = {k: i for i, (k, kind) in enumerate(zip(keys, kinds)) if kind == "tango 32x32"}
    made = [(index32[k], i) for i, (k, kind) in enumerate(zip(keys, kinds)) if not kind.startswith("tango")]
    print("\nmethod                                         precision  recall: copies made  all  different pairs called copies")
    results = {}
    for name, keep in [("exact copies only", np.zeros(len(wide), bool)),
                       ("phash ≤ 8 bits alone", distance <= 8),
                       ("phash ≤ 8 + 16×16 grey mean diff ≤ 4 (before)", (distance <= 8) & old)] + [
            (f"phash ≤ {d} + content similarity ≥ {s:.2f}", (distance <= d) & (scores >= s))
            for d in (8, NEAR_DISTANCE, 12) for s in sorted({0.8, 0.85, 0.9, MIN_SIMILARITY, 0.95})]:
        found = clusters(keep)
        precision, recall, false = pair_scores(found, truth)
        results[name] = found
        mark = "  ← the check's setting" if name == f"phash ≤ {NEAR_DISTANCE} + content similarity ≥ {MIN_SIMILARITY:.2f}" else ""
        made_recall = np.mean([found[a] == found[b] for a, b in made])
        print(f"{name:<46} {precision:9.3f} {made_recall:15.3f} {recall:7.3f}  {false:6,}{mark}")

    found = results[f"phash ≤ {NEAR_DISTANCE} + content similarity ≥ {MIN_SIMILARITY:.2f}"]
    before = results["phash ≤ 8 + 16×16 grey mean diff ≤ 4 (before)"]
    print("\nrecall by kind of copy (pairs with the same icon's 32 px file), before → now:")
    for kind in dict.fromkeys(kinds):
        if kind == "tango 32x32":
            continue
        pairs = [(index32[k], i) for i, (k, kd) in enumerate(zip(keys, kinds)) if kd == kind and k in index32]
        now = np.mean([found[a] == found[b] for a, b in pairs])
        then = np.mean([before[a] == before[b] for a, b in pairs])
        print(f"  {kind:<26} {len(pairs):4}  {then:6.3f} → {now:6.3f}")

    first_truth = truth[first]
    different = truth[first][wide[:, 0]] != truth[first][wide[:, 1]]
    print("\nthe most similar different pictures (phash ≤ 12 bits; each pair of names once):")
    shown = set()
    for k in np.argsort(-np.where(different & (distance <= 12), scores, -1)):
        a, b = first[wide[k]]
        if frozenset((keys[a], keys[b])) in shown:
            continue
        if len(shown) == 12:
            break
        shown.add(frozenset((keys[a], keys[b])))
        print(f"  {scores[k]:.3f} ({distance[k]:2} bits)  {keys[a]} ({kinds[a]}) ~ {keys[b]} ({kinds[b]})")
    print("\nthe clusters that join different pictures (the largest first):")
    mixed = [(c, np.flatnonzero(found == c)) for c in np.unique(found)]
    mixed = sorted([(len(m), c, m) for c, m in mixed if len(set(truth[m].tolist())) > 1], key=lambda t: -t[0])
    for size, _, members in mixed[:10]:
        print(f"  {size:3} files: " + ", ".join(sorted({keys[i] for i in members})))
    same = ~different
    print("\nthe least similar copies (phash ≤ 12 bits):")
    for k in np.argsort(np.where(same & (distance <= 12), scores, 2))[:8]:
        a, b = first[wide[k]]
        print(f"  {scores[k]:.3f} ({distance[k]:2} bits)  {keys[a]} ({kinds[a]}) ~ {kinds[b]}")
    assert (first_truth >= 0).all()


if __name__ == "__main__":
    main()
