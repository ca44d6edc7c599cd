"""A data health check worth trusting: duplicates, near duplicates, one picture under two labels, train/valid
leaks, class imbalance, and the files that cannot be used.

    check = health_check(items, images, broken_links=scan.broken_links, unreadable_folders=scan.unreadable)
    check.leaks[0].files        # relative paths of one picture (or near copies of it) found in both splits

Everything is computed from the presized pixels the training already holds (no file is read again):

- exact duplicates have the same presized pixels and the same original size: identical to the model, which
  only ever sees the presized pixels (a difference that presizing averages away, or that lies outside the
  centre crop, never reaches it). Identical decoded files always qualify; re-decoding every file at full
  resolution would take longer than the whole check.
- near duplicates are the same picture re-encoded or resized: a perceptual hash (imagehash's phash, computed
  for all images at once) within `max_distance` bits finds candidates, and the mean difference of 16×16 grey
  thumbnails confirms them, because low-detail images (digits, icons) share hashes without being copies.
- pairs are grouped into clusters (connected components: what union-find gives), so a picture copied five
  times is one cluster, not ten pairs. Label conflicts and leaks are clusters of exact or near copies.
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

from engine.data import LabelledItems
from engine.images import PresizedImages

HASH_SIDE = 32  # phash's grey image: 32×32, of which the 8×8 lowest frequencies make the 64-bit hash
THUMB_SIDE = 16  # grey thumbnail that confirms a near duplicate
NEAR_DISTANCE = 8  # phash bits two near copies may differ in (JPEG at quality 30 and a resize: up to 6 on digits)
NEAR_DIFFERENCE = 4.0  # mean grey-level difference (0–255) of their thumbnails (copies ≤ 3.2, distinct digits ≥ 6.5)
GREY = (0.299, 0.587, 0.114)  # PIL's RGB → L weights, as imagehash sees the image
PIXEL_BLOCK = 256  # images turned to grey thumbnails at a time (bounds memory for large presizes)
PAIR_BLOCK_BYTES = 64 * 1024**2  # memory for one block of the all-pairs Hamming distances
FOLDER_REASON = "a folder Loupe may not open (its images are not checked)"

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# ---------------------------------------------------------------- the result

@dataclass
class Cluster:
    """Images that are the same picture: their relative paths, labels and splits (sorted by path)."""

    files: list[str]
    labels: list[str]
    splits: list[str]
    positions: list[int]  # positions in the items (`items.rel_paths`), e.g. for thumbnails from the presized pixels
    exact: bool  # every member has the same pixels (else some are near copies)

    def to_dict(self) -> dict:
        return {"files": self.files, "labels": self.labels, "splits": self.splits, "exact": self.exact}

    def table(self) -> pd.DataFrame:
        """One row per image: file, label, split."""
        return pd.DataFrame({"file": self.files, "label": self.labels, "split": self.splits})

    def to_delete(self) -> list[str]:
        """Every file but one to keep: the first in the training set (else the first), so no copy validates."""
        keep = next((f for f, s in zip(self.files, self.splits) if s == "train"), self.files[0])
        return [f for f in self.files if f != keep]


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
        {"files": [path], "labels": [label], "splits": ["train" | "valid"], "exact": bool}, sorted by path.
        """
        ratio = self.imbalance_ratio if math.isfinite(self.imbalance_ratio) else None
        return {"classes": self.classes, "imbalance_ratio": ratio, "unreadable": self.unreadable,
                "broken_links": self.broken_links,
                **{name: [c.to_dict() for c in getattr(self, name)]
                   for name in ("duplicates", "near_duplicates", "label_conflicts", "leaks")},
                "n_checked": self.n_checked}

    def extra_copies(self) -> int:
        """Images beyond the first of each exact cluster: what deleting exact duplicates would remove."""
        return sum(len(c.files) - 1 for c in self.duplicates)

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
            lines.append(f"{len(self.near_duplicates):,} group(s) of near duplicates (re-encoded or resized copies).")
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


def near_pairs(hashes: np.ndarray, thumbs: np.ndarray, max_distance: int = NEAR_DISTANCE,
               max_difference: float = NEAR_DIFFERENCE) -> np.ndarray:
    """Pairs (i < j) [M, 2] within max_distance phash bits whose thumbnails differ by at most max_difference.

    Every pair's Hamming distance, a block of rows at a time in numpy: 10,000 images are 50 million pairs,
    a fraction of a second.
    """
    n = len(hashes)
    flat = thumbs.reshape(n, int(np.prod(thumbs.shape[1:])))
    block = max(1, PAIR_BLOCK_BYTES // (8 * max(n, 1)))
    found = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = popcount(hashes[start:stop, None] ^ hashes[None, start:])  # [rows, n - start]
        rows, cols = np.nonzero(dist <= max_distance)
        rows, cols = rows + start, cols + start
        keep = cols > rows
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    close = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 65536):  # the thumbnail check, in chunks of pairs
        a, b = pairs[start:start + 65536].T
        close[start:start + 65536] = np.abs(flat[a] - flat[b]).mean(axis=1) <= max_difference
    return pairs[close]


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
                 max_difference: float = NEAR_DIFFERENCE) -> HealthCheck:
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

    grey = grey_thumbnails(images.pixels)[rows]  # every scanned image in slices (no copies), then the checked ones
    hashes = phash(grey)
    thumbs = grey.reshape(len(grey), THUMB_SIDE, HASH_SIDE // THUMB_SIDE, THUMB_SIDE, HASH_SIDE // THUMB_SIDE).mean((2, 4))
    group = exact_groups(images.pixels, rows, images.sizes[rows], hashes)
    # near copies are searched among one image per exact group: a thousand identical blanks are one image, not
    # half a million pairs
    _, first, group_index = np.unique(group, return_index=True, return_inverse=True)
    cluster = components(len(first), near_pairs(hashes[first], thumbs[first], max_distance, max_difference))
    cluster = cluster[group_index.reshape(-1)]

    def make(members: np.ndarray) -> Cluster:
        pos = positions[members]
        order = np.argsort([items.rel_paths[p] for p in pos], kind="stable")
        pos = pos[order]
        return Cluster(files=[items.rel_paths[p] for p in pos], labels=[items.labels[p] for p in pos],
                       splits=[str(items.split[p]) for p in pos], positions=[int(p) for p in pos],
                       exact=len(set(group[members].tolist())) == 1)

    def clusters_of(ids: np.ndarray) -> list[Cluster]:
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.diff(ids[order])) + 1
        found = [make(members) for members in np.split(order, starts) if len(members) > 1]
        return sorted(found, key=lambda c: (-len(c.files), c.files[0]))

    duplicates = clusters_of(group)
    copies = clusters_of(cluster)  # exact and near copies together
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
                lines.append("  " + ", ".join(shown) + more)
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
