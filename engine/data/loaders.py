"""A data set as Loupe uses it: labelled, split items; presized pixels cached on disk and in memory; batches."""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from engine.data.resolve import data_root
from engine.data.augment import AugSettings, augment_batch, augment_preview, normalize, resize_batch
from engine.data.cache import CacheGet, MappedPixels, presize_cached
from engine.errors import UserError
from engine.data.images import PresizedImages, Progress
from engine.data.labels import LabelReport, LabelRule, apply_label_rule
from engine.data.sources import FolderScan, scan_folder
from engine.spec import DataSpec
from engine.data.split import SplitRule, apply_split_rule

MIN_PER_CLASS = 5  # fewer images than this in a class earns a warning


@dataclass
class LabelledItems:
    """The images of a data set that have a label and a split, in a stable order."""

    root: Path
    rel_paths: list[str]  # posix paths relative to root
    image_index: np.ndarray  # each item's position in `scanned` (and in the presized pixels)
    scanned: list[str]  # every image found, labelled or not: what the pixel cache holds
    labels: list[str]
    split: np.ndarray  # 'train' / 'valid' per item
    classes: list[str]  # sorted
    n_files: int  # images found
    label_report: LabelReport  # over all images found, before the split
    n_outside_split: int = 0  # labelled images the split rule left out
    skipped_files: int = 0  # non-image files ignored
    skipped_examples: list[str] = field(default_factory=list)

    @property
    def scanned_paths(self) -> list[Path]:
        """Every image found; the pixel cache is keyed on these so relabelling never re-decodes."""
        return [self.root / rel for rel in self.scanned]

    @property
    def targets(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"file": self.rel_paths, "label": self.labels, "split": self.split})

    def counts(self, mask: np.ndarray | None = None) -> pd.DataFrame:
        """Images per class (rows) and split (columns train, valid, total), of all items or those in `mask`."""
        keep = np.ones(len(self.labels), dtype=bool) if mask is None else mask
        labels = np.asarray(self.labels, dtype=object)[keep]
        table = pd.crosstab(pd.Series(labels, name="class"), pd.Series(self.split[keep], name="split"))
        table = table.reindex(index=self.classes, columns=["train", "valid"], fill_value=0)
        table["total"] = table["train"] + table["valid"]
        return table

    def warnings(self, min_per_class: int = MIN_PER_CLASS) -> list[str]:
        """Plain-language warnings about the split: tiny classes, classes missing from a split."""
        counts = self.counts()
        out = []
        few = counts.index[counts["total"] < min_per_class].tolist()
        if few:
            out.append(f"{len(few)} class(es) have fewer than {min_per_class} images: {', '.join(few[:10])}.")
        only_train = counts.index[counts["valid"] == 0].tolist()
        if only_train:
            out.append(f"{len(only_train)} class(es) have no validation images, so their accuracy cannot be measured: "
                       f"{', '.join(only_train[:10])}.")
        only_valid = counts.index[counts["train"] == 0].tolist()
        if only_valid:
            out.append(f"{len(only_valid)} class(es) appear only in validation, so the model never learns them: "
                       f"{', '.join(only_valid[:10])}.")
        if self.label_report.n_unmatched:
            out.append(f"{self.label_report.n_unmatched:,} image(s) got no label from the rule and are left out.")
        if self.n_outside_split:
            out.append(f"{self.n_outside_split:,} labelled image(s) are in neither split and are left out.")
        return out


@dataclass(frozen=True)
class DataCounts:
    """The images a run uses, per split: labelled, inside the split and readable. The one count every page shows."""

    n_train: int
    n_valid: int
    n_unreadable: int  # labelled images in a split that cannot be decoded (left out)
    classes: tuple[str, ...]


def usable(items: LabelledItems, images: PresizedImages) -> np.ndarray:
    """Per item: whether its image could be decoded (the others are left out of every run)."""
    return images.ok[items.image_index]


def usable_counts(items: LabelledItems, images: PresizedImages) -> DataCounts:
    """Training and validation images after unreadable files are dropped (what the batches hold)."""
    ok = usable(items, images)
    return DataCounts(n_train=int(((items.split == "train") & ok).sum()), n_valid=int(((items.split == "valid") & ok).sum()),
                      n_unreadable=int((~ok).sum()), classes=tuple(items.classes))


def label_items(scan: FolderScan, label: LabelRule, split: SplitRule) -> LabelledItems:
    """Label and split the images of a scanned folder; refuses a data set with fewer than two classes."""
    root = scan.root
    all_rel = [p.relative_to(root).as_posix() for p in scan.images]
    report = apply_label_rule(label, all_rel)
    if report.n_matched == 0:
        examples = ", ".join(all_rel[:3])
        raise UserError(f"The label rule gave no label to any of the {len(all_rel):,} images (e.g. {examples}). "
                        "Adjust the rule until the tester shows matches.")
    if len(report.class_counts) < 2:
        only = next(iter(report.class_counts))
        raise UserError(f"The label rule finds only one class ('{only}'). A classifier needs at least two classes: "
                        "check the rule, or add images of another class.")
    kept = [(i, rel, lab) for i, (rel, lab) in enumerate(zip(all_rel, report.labels)) if lab is not None]
    index = np.array([i for i, _, _ in kept], dtype=np.int64)
    rel_paths, labels = [r for _, r, _ in kept], [lab for _, _, lab in kept]
    split = apply_split_rule(split, rel_paths, labels)
    inside = split != ""
    if not (split == "train").any():
        raise UserError("The split leaves no training images. Lower the validation share or check the split rule.")
    if not (split == "valid").any():
        raise UserError("The split leaves no validation images. Raise the validation share or check the split rule.")
    rel_paths = [r for r, keep in zip(rel_paths, inside) if keep]
    labels = [lab for lab, keep in zip(labels, inside) if keep]
    return LabelledItems(
        root=root, rel_paths=rel_paths, image_index=index[inside], scanned=all_rel, labels=labels, split=split[inside], classes=sorted(set(labels)),
        n_files=len(all_rel), label_report=report, n_outside_split=int((~inside).sum()),
        skipped_files=scan.skipped, skipped_examples=scan.skipped_examples,
    )


def load_items(data: DataSpec, scan: FolderScan | None = None) -> LabelledItems:
    """Scan (unless given the scan), label and split the data set a resolved data spec names."""
    if data.label is None or data.split is None:
        raise ValueError("load_items needs a resolved data spec (engine.data.resolve.resolve)")
    return label_items(scan or scan_folder(data_root(data)), data.label, data.split)


# ---------------------------------------------------------------- presized pixels, cached

RAM_BUDGET_ENV = "LOUPE_RAM_BUDGET_MB"


def memory_budget_bytes() -> int:
    """How much memory one data set's pixels may take before they are read from the disk cache instead:
    LOUPE_RAM_BUDGET_MB, else LOUPE_CACHE_GB, else a quarter of this machine's RAM."""
    if os.environ.get(RAM_BUDGET_ENV):
        return int(float(os.environ[RAM_BUDGET_ENV]) * 1024**2)
    if os.environ.get("LOUPE_CACHE_GB"):
        return int(float(os.environ["LOUPE_CACHE_GB"]) * 1024**3)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def presize_bytes(n_images: int, presize: int) -> int:
    return n_images * 3 * presize * presize


class PresizeCache:
    """Presized pixels of the last few data sets, shared by every page and rerun (thread-safe).

    Pixels come from the disk cache (engine.data.cache), decoded only for files it does not hold as they are now.
    A data set within the memory budget is copied into memory when training starts (in the background); a
    larger one is always read from the cache files, a batch at a time.
    """

    def __init__(self, max_entries: int = 2, disk_limit: int | None = None):
        self.max_entries = max_entries
        self.disk_limit = disk_limit  # bytes; None: LOUPE_CACHE_DISK_GB or 10 GB
        self._entries: OrderedDict[str, tuple[PresizedImages, bool]] = OrderedDict()  # key: (images, in_memory)
        self._lock = threading.Lock()
        self._local = threading.local()

    @staticmethod
    def key(paths: list[Path], presize: int, method: str) -> str:
        """Changes when the file list, any file's size or time, or the presize settings change."""
        digest = hashlib.sha1(f"{presize}|{method}".encode())
        for p in paths:
            try:
                st = p.stat()
                digest.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{p}|missing\n".encode())
        return digest.hexdigest()

    def get(self, paths: list[Path], presize: int, method: str = "crop", progress: Progress | None = None) -> PresizedImages:
        """The presized pixels of these files, decoded now only if not cached (`last_get` then says what happened)."""
        key = self.key(paths, presize, method)
        in_memory = presize_bytes(len(paths), presize) <= memory_budget_bytes()
        with self._lock:
            if self._entries.get(key, (None, None))[1] == in_memory:
                self._entries.move_to_end(key)
                self._local.last = CacheGet()
                return self._entries[key][0]
            images, self._local.last = presize_cached(paths, presize, method, progress=progress, in_memory=in_memory,
                                                      limit=self.disk_limit)
            self._entries[key] = images, in_memory
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return images

    @property
    def last_get(self) -> CacheGet:
        """What this thread's last `get` did: hit, miss or partial, files decoded and the seconds it took."""
        return getattr(self._local, "last", CacheGet())

    def cached(self, paths: list[Path], presize: int, method: str = "crop") -> bool:
        """Whether these pixels are held by this cache in memory (or mapped) right now."""
        with self._lock:
            return self.key(paths, presize, method) in self._entries


# ---------------------------------------------------------------- health

@dataclass
class Health:
    """The data health panel's figures."""

    counts: pd.DataFrame  # per class: train, valid, total
    failures: pd.DataFrame  # file, reason (excluded from batches)
    sizes: pd.DataFrame  # width, height of readable images
    modes: dict[str, int]  # original colour modes and their counts
    warnings: list[str]


def health_report(items: LabelledItems, images: PresizedImages) -> Health:
    """Images per class, unreadable files, original size spread and colour modes."""
    bad = sorted(images.failures.items())
    failures = pd.DataFrame({"file": [items.scanned[i] for i, _ in bad], "reason": [r for _, r in bad]})
    ok = images.ok
    sizes = pd.DataFrame(images.sizes[ok], columns=["width", "height"])
    modes: dict[str, int] = {}
    for mode, good in zip(images.modes, ok):
        if good:
            modes[mode] = modes.get(mode, 0) + 1
    counts = items.counts(mask=usable(items, images))
    warnings = items.warnings()
    if len(failures):
        warnings.append(f"{len(failures):,} file(s) could not be read and are left out (listed below).")
    return Health(counts=counts, failures=failures, sizes=sizes, modes=modes, warnings=warnings)


# ---------------------------------------------------------------- batches

class DataLoaders:
    """Training and validation batches from presized pixels, augmented on the device a batch at a time."""

    def __init__(self, items: LabelledItems, images: PresizedImages, size: int, bs: int = 64,
                 aug: AugSettings = AugSettings(), device: torch.device | str = "cpu", seed: int | None = None):
        if len(items.scanned) != images.pixels.shape[0]:
            raise ValueError("items and presized images do not match")
        self.items, self.images, self.size, self.bs, self.aug = items, images, size, bs, aug
        self.device = torch.device(device)
        self.classes = items.classes
        self.y = torch.from_numpy(items.targets)
        self.image_index = torch.from_numpy(items.image_index)
        usable_items = usable(items, images)
        self.train_idx = torch.from_numpy(np.flatnonzero((items.split == "train") & usable_items))
        self.valid_idx = torch.from_numpy(np.flatnonzero((items.split == "valid") & usable_items))
        if len(self.train_idx) == 0 or len(self.valid_idx) == 0:
            raise UserError("After leaving out unreadable files, a split is empty: there is nothing to train or validate on.")
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.aug_generator = self.generator  # one stream for order and augmentation, unless sharded
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> None:
        """From now on yield only this process's part (torchrun): of every training batch, the rank-th of world_size
        equal parts (a remainder of bs % world_size is left out), in the order every process draws alike from the
        shared seed; of the validation set, the rank-th of world_size near-equal parts. Augmentation draws per rank."""
        if min(self.bs, self.n_train, self.n_valid) < world_size:
            raise UserError(f"{world_size} processes need a batch size and at least as many training and validation "
                            f"images as processes (batch size {self.bs}, {self.n_train} training and {self.n_valid} "
                            "validation images).")
        self.rank, self.world_size = rank, world_size
        self.valid_idx = self.valid_idx.tensor_split(world_size)[rank]
        # from the seed, not drawn from the shared stream: that one now only shuffles, alike on every rank
        self.aug_generator = torch.Generator().manual_seed(
            (self.generator.initial_seed() * (world_size + 1) + rank + 1) % 2**63)

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def n_valid(self) -> int:
        return len(self.valid_idx)

    def _pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """Presized uint8 pixels of items `idx`, on the device."""
        return self._gather(idx).to(self.device, non_blocking=True)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Presized uint8 pixels of items `idx` in memory, gathered with numpy (a plain copy that leaves torch's
        threads to the model when it runs in the prefetch thread)."""
        rows = self.image_index[idx].numpy()
        pixels = self.images.pixels
        return torch.from_numpy(pixels.numpy()[rows] if isinstance(pixels, torch.Tensor) else pixels.gather(rows))

    def _prefetched(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(idx, pixels on the device) per batch; the next batch's pixels are gathered while the caller uses these."""
        def start(idx: torch.Tensor):
            try:
                return _prefetch_pool().submit(self._gather, idx)
            except RuntimeError:  # the interpreter is shutting down (its pools take no new work): gather here
                return None

        ahead = start(batches[0]) if batches else None
        for k, idx in enumerate(batches):
            pixels = ahead.result() if ahead is not None else self._gather(idx)
            if k + 1 < len(batches):
                ahead = start(batches[k + 1])
            yield idx, pixels.to(self.device, non_blocking=True)

    def train(self, shuffle: bool = True, drop_last: bool = True, norm: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Augmented training batches (x [B,3,size,size] float, y [B] long), reshuffled each call."""
        pixels = self.images.pixels
        if isinstance(pixels, MappedPixels) and pixels.keep_in_memory:
            pixels.load_in_background()  # meanwhile batches come from the cache files: the same pixels
        order = self.train_idx[torch.randperm(self.n_train, generator=self.generator)] if shuffle else self.train_idx
        stop = len(order) - (len(order) % self.bs if drop_last and len(order) >= self.bs else 0)
        batches = []
        for start in range(0, stop, self.bs):
            idx = order[start:start + self.bs]
            if self.world_size > 1:  # this rank's part of the batch
                part = len(idx) // self.world_size
                idx = idx[self.rank * part:(self.rank + 1) * part]
            batches.append(idx)
        for idx, pixels in self._prefetched(batches):
            x = augment_batch(pixels, self.size, self.aug, self.aug_generator)
            yield (normalize(x) if norm else x), self.y[idx].to(self.device)

    def valid(self, norm: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation batches in order: resized only, never augmented."""
        batches = [self.valid_idx[start:start + self.bs] for start in range(0, self.n_valid, self.bs)]
        for idx, pixels in self._prefetched(batches):
            x = resize_batch(pixels, self.size)
            yield (normalize(x) if norm else x), self.y[idx].to(self.device)

    def show_batch(self, max_n: int = 9, split: str = "train", unique: bool = False) -> tuple[torch.Tensor, list[str]]:
        """Images in [0, 1] as the model sees them (before normalisation) with their labels, like fastai's show_batch."""
        pool = self.train_idx if split == "train" else self.valid_idx
        if unique:
            i = pool[torch.randint(len(pool), (1,), generator=self.generator)]
            x = augment_preview(self._pixels(i)[0], max_n, self.size, self.aug, self.generator)
            return x.cpu(), [self.classes[self.y[i[0]]]] * max_n
        idx = pool[torch.randperm(len(pool), generator=self.generator)[:max_n]]
        pixels = self._pixels(idx)
        x = augment_batch(pixels, self.size, self.aug, self.generator) if split == "train" else resize_batch(pixels, self.size)
        return x.cpu(), [self.classes[int(t)] for t in self.y[idx]]


_prefetcher: ThreadPoolExecutor | None = None
_prefetcher_lock = threading.Lock()


def _prefetch_pool() -> ThreadPoolExecutor:
    """The threads that gather batches ahead, shared by every DataLoaders (an abandoned iterator leaves no thread)."""
    global _prefetcher
    with _prefetcher_lock:
        if _prefetcher is None:
            _prefetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loupe-prefetch")
        return _prefetcher
