"""A data health check worth trusting: duplicates, near duplicates, one picture under two labels, train/valid
leaks, class imbalance, and the files that cannot be used.

    check = health_check(items, images, broken_links=scan.broken_links, unreadable_folders=scan.unreadable)
    check.leaks[0].files        # relative paths of one picture (or near copies of it) found in both splits

Everything is computed from the presized pixels the training already holds (no file is read again):

- exact duplicates have the same presized pixels and the same original size: identical to the model, which
  only ever sees the presized pixels (a difference that presizing averages away, or that lies outside the
  centre crop, never reaches it). Identical decoded files always qualify; re-decoding every file at full
  resolution would take longer than the whole check.
- near duplicates are the same picture re-encoded, resized or slightly cropped: a perceptual hash (imagehash's
  phash, computed for all images at once) within `max_distance` bits finds candidates, and a stricter comparison
  of the pictures' content confirms them, because pictures that share a template or a plain background (icons,
  clip art, digits) share hashes without being copies. It compares 32×32 colour thumbnails lined up by the
  best shift of up to one pixel (and each picture's centre 96 % against the other, so a copy cropped by 2–5 %
  lines up): the *similarity* is the share of the pixels that hold content in either picture (away from the
  picture's border colour, or unmatched) whose colours match, an unmatched solid part counting more than the
  thin line a moved edge leaves (`similarity`). The background counts for nothing, so a small red car and a
  small black car on white are not alike where a mean over all pixels would call them 97 % alike. Calibrated
  on real icons: bench/near_copy_calibration.py.
- pairs are grouped into clusters (connected components: what union-find gives), so a picture copied five
  times is one cluster, not ten pairs. Label conflicts and leaks are clusters of exact or near copies, confirmed
  the same way. A cluster's `similarity` is the lowest similarity of the confirmed pairs that joined it (1 for
  exact copies): how sure the check is.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.data.loaders import LabelledItems
from engine.data.images import PresizedImages

HASH_SIDE = 32  # phash's grey image: 32×32, of which the 8×8 lowest frequencies make the 64-bit hash
NEAR_DISTANCE = 10  # phash bits two near copies may differ in (a 2–5 % crop of an icon: up to 10; JPEG and resize: 6)
CONTENT_SIDE = 32  # side of the colour thumbnails that confirm a near copy
MAX_SHIFT = 1  # thumbnail pixels two copies are shifted by at most, to line them up (crops move the content)
CROP_KEEP = 0.96  # the centre share of a picture compared too, so a copy cropped by 2–5 % lines up
COLOUR_TOLERANCE = 24.0  # a pixel matches the other picture's when they are this close in R, G and B (0–255)
BACKGROUND_TOLERANCE = 24.0  # a pixel this close to its picture's border colour (in R, G and B) is background
EDGE_SLACK = 0.75  # where both pictures have an edge, colours may differ by this many pixels' worth of its slope
PART_WEIGHT = 3.0  # extra weight of an unmatched pixel inside a solid 2×2 block of unmatched pixels
MIN_SIMILARITY = 0.92  # share of the content that must match for a near copy (see bench/near_copy_calibration.py)
GREY = (0.299, 0.587, 0.114)  # PIL's RGB → L weights, as imagehash sees the image
PIXEL_BLOCK = 256  # images turned to grey thumbnails at a time (bounds memory for large presizes)
PAIR_BLOCK_BYTES = 64 * 1024**2  # memory for one block of the all-pairs Hamming distances
FOLDER_REASON = "a folder Loupe may not open (its images are not checked)"

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# ---------------------------------------------------------------- the result

KEEP_RULE = ("of each set of exact copies, the first by path among the training images is kept (the first by path "
             "if none trains), so no copy is left to validate")


@dataclass
class Cluster:
    """Images that are the same picture: their relative paths, labels and splits (sorted by path)."""

    files: list[str]
    labels: list[str]
    splits: list[str]
    positions: list[int]  # positions in the items (`items.rel_paths`), e.g. for thumbnails from the presized pixels
    exact: bool  # every member has the same pixels (else some are near copies)
    groups: list[int] | None = None  # per file, which set of exact copies within the cluster it is in (0, 1, …)
    similarity: float = 1.0  # lowest similarity of the confirmed pairs that joined it (1: exact copies only)

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = [0 if self.exact else i for i in range(len(self.files))]

    def to_dict(self) -> dict:
        return {"files": self.files, "labels": self.labels, "splits": self.splits, "exact": self.exact,
                "similarity": round(float(self.similarity), 3)}

    def table(self) -> pd.DataFrame:
        """One row per image: file, label, split."""
        return pd.DataFrame({"file": self.files, "label": self.labels, "split": self.splits})

    def extra_copies(self) -> list[str]:
        """The exact copies of a file that is kept (by `KEEP_RULE`): what deleting exact copies would remove.

        Near copies are not among them: they are a different file of the same picture, for the user to judge.
        """
        kept: dict[int, str] = {}
        for f, s, g in sorted(zip(self.files, self.splits, self.groups), key=lambda m: (m[1] != "train", m[0])):
            kept.setdefault(g, f)
        return [f for f, g in zip(self.files, self.groups) if kept[g] != f]


@dataclass
class HealthCheck:
    """What the health check found; every file is a path relative to the data folder."""

    classes: dict[str, int]  # readable images per class, in class order
    imbalance_ratio: float  # images of the largest class / of the smallest (inf if a class has none readable)
    unreadable: list[dict[str, str]]  # {"file", "reason"} per file (or subfolder) that cannot be used, sorted
    broken_links: list[str]  # links that lead nowhere, sorted
    duplicates: list[Cluster]  # exact copies, largest cluster first
    near_duplicates: list[Cluster]  # near copies (clusters that are not all one exact copy), largest first
    label_conflicts: list[Cluster]  # clusters of copies that carry more than one label
    leaks: list[Cluster]  # clusters of copies with members in both train and valid
    n_checked: int = 0  # labelled, readable images compared with each other

    def to_dict(self) -> dict:
        """JSON-safe, every path relative to the data folder:

        classes: {class: readable images}; imbalance_ratio: largest / smallest class, or None when a class has
        no readable image; unreadable: [{"file", "reason"}]; broken_links: [path]; n_checked: images compared;
        duplicates, near_duplicates, label_conflicts, leaks: [cluster], largest first, where a cluster is
        {"files": [path], "labels": [label], "splits": ["train" | "valid"], "exact": bool, "similarity": 0–1 (the
        lowest share of content that matched between two copies it joined; 1 for exact copies)}, sorted by path.
        """
        ratio = self.imbalance_ratio if math.isfinite(self.imbalance_ratio) else None
        return {"classes": self.classes, "imbalance_ratio": ratio, "unreadable": self.unreadable,
                "broken_links": self.broken_links,
                **{name: [c.to_dict() for c in getattr(self, name)]
                   for name in ("duplicates", "near_duplicates", "label_conflicts", "leaks")},
                "n_checked": self.n_checked}

    def extra_copies(self) -> int:
        """Images beyond the first of each exact cluster: what deleting exact duplicates would remove."""
        return sum(len(c.extra_copies()) for c in self.duplicates)

    def summary(self) -> list[str]:
        """One plain sentence per finding, the most harmful first."""
        lines = []
        if self.leaks:
            n = sum(len(c.files) for c in self.leaks)
            lines.append(f"{len(self.leaks):,} picture(s) are in both the training and the validation set "
                         f"({n:,} files): validation accuracy will look better than it is.")
        if self.label_conflicts:
            lines.append(f"{len(self.label_conflicts):,} picture(s) appear under more than one label.")
        if self.duplicates:
            lines.append(f"{len(self.duplicates):,} group(s) of exact duplicates ({self.extra_copies():,} extra copies).")
        if self.near_duplicates:
            lines.append(f"{len(self.near_duplicates):,} group(s) of near duplicates (re-encoded, resized or cropped "
                         "copies, confirmed by their content).")
        if self.unreadable:
            lines.append(f"{len(self.unreadable):,} file(s) cannot be read and are left out.")
        if self.broken_links:
            lines.append(f"{len(self.broken_links):,} link(s) lead nowhere and are left out.")
        if math.isinf(self.imbalance_ratio):
            lines.append("A class has no readable image.")
        elif self.imbalance_ratio >= 10:
            lines.append(f"The largest class has {self.imbalance_ratio:.1f} times as many images as the smallest.")
        return lines


# ---------------------------------------------------------------- hashes

def grey_thumbnails(pixels: torch.Tensor, side: int = HASH_SIDE, block: int = PIXEL_BLOCK) -> np.ndarray:
    """[N, 3, P, P] uint8 pixels → [N, side, side] float32 grey images (antialiased resize, then PIL's L weights)."""
    weights = torch.tensor(GREY, dtype=torch.float32).view(1, 3, 1, 1)
    out = np.empty((len(pixels), side, side), dtype=np.float32)
    for start in range(0, len(pixels), block):
        # resizing the uint8 pixels first is several times faster than converting them to float first
        small = F.interpolate(pixels[start:start + block], size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False)
        out[start:start + block] = (small.float() * weights).sum(1).numpy()
    return out


def _dct_matrix(n: int, k: int) -> np.ndarray:
    """The first k rows of the unnormalised DCT-II of length n (scipy.fftpack.dct's default)."""
    return 2 * np.cos(np.pi * np.arange(k)[:, None] * (2 * np.arange(n)[None, :] + 1) / (2 * n))


def phash(grey: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """imagehash.phash of [N, S, S] grey images already at S = hash_size × 4: [N] uint64, first bit highest."""
    c = _dct_matrix(grey.shape[-1], hash_size)
    low = (c @ grey.astype(np.float64) @ c.T).reshape(len(grey), hash_size * hash_size)  # lowest frequencies
    low = np.round(low, 6)  # a flat image's frequencies are rounding noise around 0: made 0, all flat images agree
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2
        return np.bitwise_count(x)
    return _POPCOUNT8[x[..., None].view(np.uint8)].sum(-1, dtype=np.uint8)


def candidate_pairs(hashes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """Pairs (i < j) [M, 2] whose phashes differ in at most max_distance bits.

    Every pair's Hamming distance, a block of rows at a time in numpy: 10,000 images are 50 million pairs,
    a fraction of a second.
    """
    n = len(hashes)
    block = max(1, PAIR_BLOCK_BYTES // (8 * max(n, 1)))
    found = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = popcount(hashes[start:stop, None] ^ hashes[None, start:])  # [rows, n - start]
        rows, cols = np.nonzero(dist <= max_distance)
        rows, cols = rows + start, cols + start
        keep = cols > rows
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


def content_thumbnails(pixels: torch.Tensor, rows: np.ndarray | None = None, side: int = CONTENT_SIDE,
                       keep: float = CROP_KEEP, block: int = PIXEL_BLOCK) -> torch.Tensor:
    """Rows `rows` (all if None) of [N, 3, P, P] uint8 pixels → [n, 2, 3, side, side] uint8 colour thumbnails:
    the whole picture and its centre `keep` (read a block of rows at a time)."""
    rows = np.arange(len(pixels)) if rows is None else np.asarray(rows, dtype=np.int64)
    p = pixels.shape[-1]
    side, margin = min(side, p), round(p * (1 - keep) / 2)
    out = torch.empty(len(rows), 2, 3, side, side, dtype=torch.uint8)
    for start in range(0, len(rows), block):
        x = pixels[rows[start:start + block]]
        for k, part in enumerate((x, x[..., margin:p - margin, margin:p - margin])):
            out[start:start + block, k] = F.interpolate(part, size=(side, side), mode="bilinear", antialias=True,
                                                        align_corners=False)
    return out


def _content(thumbs: torch.Tensor) -> torch.Tensor:
    """[M, 3, S, S] → [M, S, S] bool: pixels away from their picture's border colour (its median on the border)."""
    border = torch.cat([thumbs[..., 0, :], thumbs[..., -1, :], thumbs[..., 1:-1, 0], thumbs[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # [M, 3, 1, 1]
    return ((thumbs - background).abs() > BACKGROUND_TOLERANCE).any(1)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """[M, 3, S, S] blurred by a 3×3 binomial kernel, so a resampled edge and a sharp one meet halfway."""
    m, c, s, _ = x.shape
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16)[None, None]
    return F.conv2d(F.pad(x.reshape(m * c, 1, s, s), (1, 1, 1, 1), mode="replicate"), kernel).reshape(m, c, s, s)


def _edges(x: torch.Tensor) -> torch.Tensor:
    """[M, 3, S, S] → [M, 3, S, S] how steeply each colour changes at each pixel (per pixel, the larger axis)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]).abs() / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]).abs() / 2
    return torch.maximum(gx, gy)


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[M] share of two pictures' content that matches, from their [M, 3, S, S] colour thumbnails (1: the same).

    The pictures are lined up by the best whole-pixel shift (up to `MAX_SHIFT` each way: resizes and crops move
    edges); a pixel matches when its colour is within `COLOUR_TOLERANCE` in R, G and B, plus `EDGE_SLACK` pixels'
    worth of the slope where both pictures have an edge there (an edge moved by part of a pixel). Content is every pixel
    away from its picture's border colour in either picture, or unmatched: a plain background (white,
    transparent, any colour) weighs nothing. An unmatched pixel inside a solid 2×2 block of them counts
    `PART_WEIGHT` times more: a part of the picture that differs (another pictogram on the same sign), not the
    thin line a resampled edge leaves. Two flat pictures of one colour are alike (1).
    """
    a, b = _smooth(a.float()), _smooth(b.float())
    s, r = a.shape[-1], MAX_SHIFT
    content_a, content_b = _content(a), F.pad(_content(b), (r, r, r, r))
    padded, edges_b = F.pad(b, (r, r, r, r), mode="replicate"), F.pad(_edges(b), (r, r, r, r), mode="replicate")
    edges_a = _edges(a)
    best = torch.zeros(len(a))
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            # where both pictures have an edge, a shift of a fraction of a pixel changes its colours a lot
            slack = EDGE_SLACK * torch.minimum(edges_a, edges_b[..., dy:dy + s, dx:dx + s])
            unmatched = ((a - padded[..., dy:dy + s, dx:dx + s]).abs() > COLOUR_TOLERANCE + slack).any(1)
            blocks = F.avg_pool2d(unmatched[:, None].float(), 2, stride=1) >= 1  # [M, 1, S-1, S-1] solid 2×2 blocks
            solid = F.max_pool2d(blocks.float(), 2, stride=1, padding=1)[:, 0] > 0  # the pixels of those blocks
            total = (content_a | content_b[..., dy:dy + s, dx:dx + s] | unmatched).sum((1, 2)).float()
            bad = unmatched.sum((1, 2)).float() + PART_WEIGHT * solid.sum((1, 2)).float()
            share = torch.where(total > 0, (1 - bad / total.clamp(min=1)).clamp(min=0), 1.0)
            best = torch.maximum(best, share)
    return best


def pair_similarity(thumbs: torch.Tensor, pairs: np.ndarray, block: int = 4096) -> np.ndarray:
    """[M] similarity of each pair (i, j) of `content_thumbnails`, the best of the whole pictures and of one
    picture against the other's centre (a crop of 2–5 %)."""
    scores = np.zeros(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), block):
        i, j = (torch.as_tensor(c) for c in pairs[start:start + block].T)
        best = torch.stack([similarity(thumbs[i, 0], thumbs[j, 0]), similarity(thumbs[i, 1], thumbs[j, 0]),
                            similarity(thumbs[i, 0], thumbs[j, 1])]).amax(0)
        scores[start:start + block] = best.numpy()
    return scores


def near_pairs(hashes: np.ndarray, pixels: torch.Tensor, rows: np.ndarray | None = None,
               max_distance: int = NEAR_DISTANCE,
               min_similarity: float = MIN_SIMILARITY) -> tuple[np.ndarray, np.ndarray]:
    """Near copies among images with these [n] phashes, at `rows` (all if None) of [N, 3, P, P] uint8 pixels:
    pairs (i < j) [M, 2] of positions in `hashes` and their similarity [M]. Candidates by the hash, confirmed by
    the content (thumbnails are made of the candidates only)."""
    pairs = candidate_pairs(hashes, max_distance)
    if not len(pairs):
        return pairs, np.zeros(0, dtype=np.float32)
    rows = np.arange(len(hashes)) if rows is None else np.asarray(rows, dtype=np.int64)
    involved, local = np.unique(pairs, return_inverse=True)
    scores = pair_similarity(content_thumbnails(pixels, rows[involved]), local.reshape(pairs.shape))
    close = scores >= min_similarity
    return pairs[close], scores[close]


def exact_groups(pixels: torch.Tensor, rows: np.ndarray, sizes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """A group id per image `rows` of the pixels; images share one only if their pixels and sizes are identical.

    Identical pixels have identical phashes, so only images whose (phash, size) is shared are hashed in full.
    """
    n = len(hashes)
    keys = np.stack([hashes.view(np.int64), sizes[:, 0], sizes[:, 1]], axis=1) if n else np.zeros((0, 3), np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = inverse.reshape(-1).astype(np.int64)
    digests: dict[bytes, int] = {}
    for i in np.flatnonzero(counts[group] > 1):
        digest = hashlib.blake2b(pixels[int(rows[i])].numpy().tobytes(), digest_size=16).digest()
        group[i] = digests.setdefault(digest + keys[i].tobytes(), n + len(digests))
    return group


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Cluster id per node of a graph with `n` nodes and edges `pairs` [M, 2] (union-find's answer)."""
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ---------------------------------------------------------------- the check

def imbalance_ratio(counts: Sequence[int]) -> float:
    """Largest count / smallest; inf when the smallest is 0, nan for no classes."""
    if not len(counts):
        return math.nan
    lo, hi = min(counts), max(counts)
    return math.inf if lo == 0 else hi / lo


def health_check(items: LabelledItems, images: PresizedImages, broken_links: Sequence[str] = (),
                 unreadable_folders: Sequence[str] = (), max_distance: int = NEAR_DISTANCE,
                 min_similarity: float = MIN_SIMILARITY) -> HealthCheck:
    """Duplicates, near duplicates, label conflicts, leaks, imbalance and unusable files of a labelled data set.

    Compares the labelled, readable images (`items`, presized in `images`, which covers `items.scanned`);
    `broken_links` and `unreadable_folders` come from the folder scan (`FolderScan.broken_links`, `.unreadable`).
    """
    if len(items.scanned) != len(images.pixels):
        raise ValueError("items and presized images do not match")
    readable = images.ok[items.image_index]
    positions = np.flatnonzero(readable)  # positions in items
    rows = items.image_index[positions]  # rows of the presized pixels
    labels = np.asarray(items.labels, dtype=object)

    counts = pd.Series(labels[positions]).value_counts() if len(positions) else pd.Series(dtype=int)
    classes = {c: int(counts.get(c, 0)) for c in items.classes}

    hashes = phash(grey_thumbnails(images.pixels)[rows])  # every scanned image in slices, then the checked ones
    group = exact_groups(images.pixels, rows, images.sizes[rows], hashes)
    # near copies are searched among one image per exact group: a thousand identical blanks are one image, not
    # half a million pairs
    _, first, group_index = np.unique(group, return_index=True, return_inverse=True)
    pairs, scores = near_pairs(hashes[first], images.pixels, rows[first], max_distance, min_similarity)
    cluster = components(len(first), pairs)
    lowest = pd.Series(scores).groupby(cluster[pairs[:, 0]]).min() if len(pairs) else pd.Series(dtype=float)
    group_index = group_index.reshape(-1)
    cluster = cluster[group_index]

    def make(members: np.ndarray, near: bool) -> Cluster:
        order = np.argsort([items.rel_paths[p] for p in positions[members]], kind="stable")
        members = members[order]
        pos = positions[members]
        _, sets = np.unique(group[members], return_inverse=True)
        exact = len(set(group[members].tolist())) == 1
        return Cluster(files=[items.rel_paths[p] for p in pos], labels=[items.labels[p] for p in pos],
                       splits=[str(items.split[p]) for p in pos], positions=[int(p) for p in pos], exact=exact,
                       groups=[int(g) for g in sets.reshape(-1)],
                       similarity=1.0 if exact or not near else float(lowest[cluster[members[0]]]))

    def clusters_of(ids: np.ndarray, near: bool) -> list[Cluster]:
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.diff(ids[order])) + 1
        found = [make(members, near) for members in np.split(order, starts) if len(members) > 1]
        return sorted(found, key=lambda c: (-len(c.files), c.files[0]))

    duplicates = clusters_of(group, near=False)
    copies = clusters_of(cluster, near=True)  # exact and near copies together
    unreadable = [{"file": items.scanned[i], "reason": reason} for i, reason in images.failures.items()]
    unreadable += [{"file": folder, "reason": FOLDER_REASON} for folder in unreadable_folders]
    return HealthCheck(
        classes=classes, imbalance_ratio=imbalance_ratio(list(classes.values())),
        unreadable=sorted(unreadable, key=lambda u: u["file"]), broken_links=sorted(broken_links),
        duplicates=duplicates, near_duplicates=[c for c in copies if not c.exact],
        label_conflicts=[c for c in copies if len(set(c.labels)) > 1],
        leaks=[c for c in copies if {"train", "valid"} <= set(c.splits)],
        n_checked=len(positions),
    )


def report_text(check: HealthCheck, max_clusters: int = 5) -> str:
    """A short readable report: counts, findings, and a few clusters of each kind."""
    lines = [f"{check.n_checked:,} labelled, readable images in {len(check.classes)} classes; "
             + (f"largest / smallest class: {check.imbalance_ratio:.2f}" if math.isfinite(check.imbalance_ratio)
                else "a class has no readable image") + "."]
    found = check.summary()
    lines += [f"- {line}" for line in found] or ["- No duplicates, leaks, label conflicts or unusable files found."]
    for title, clusters in (("Leaks (train and valid)", check.leaks), ("Label conflicts", check.label_conflicts),
                            ("Exact duplicates", check.duplicates), ("Near duplicates", check.near_duplicates)):
        if clusters:
            lines.append(f"{title}:")
            for c in clusters[:max_clusters]:
                shown = [f"{f} ({lab}, {s})" for f, lab, s in zip(c.files, c.labels, c.splits)][:max_clusters]
                more = f", … {len(c.files) - len(shown):,} more" if len(c.files) > len(shown) else ""
                sure = "" if c.exact else f" ({c.similarity:.0%} of their content matches)"
                lines.append("  " + ", ".join(shown) + more + sure)
            if len(clusters) > max_clusters:
                lines.append(f"  … and {len(clusters) - max_clusters:,} more")
    for title, entries in (("Unreadable", [f"{u['file']}: {u['reason']}" for u in check.unreadable]),
                           ("Broken links", check.broken_links)):
        if entries:
            lines.append(f"{title}:")
            lines += [f"  {e}" for e in entries[:max_clusters * 2]]
            if len(entries) > max_clusters * 2:
                lines.append(f"  … and {len(entries) - max_clusters * 2:,} more")
    return "\n".join(lines)
