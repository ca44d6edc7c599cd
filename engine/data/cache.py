"""Presized pixels on disk, under LOUPE_HOME/cache/presize: decoded once, then memory-mapped by any process.

One folder per data set (its folder, presize and method) holds row files `rows-<id>.u8` (uint8
[n, 3, P, P], never changed once written) and `manifest.json`, which gives each image file, by path,
size and mtime, its row or the reason it could not be read. A changed file gets a new row; the others
are not decoded again. Writers hold the data set's lock, write `.partial` files and rename them into
place, and replace the manifest last, so a reader (which takes no lock) only sees whole files and a
crash leaves nothing that is read as valid. The cache stays under a size limit (LOUPE_CACHE_DISK_GB,
10 GB): the least recently used data sets are deleted first.

    images, got = presize_cached(paths, 460, "crop", in_memory=False)   # got.status: hit | miss | partial
    cache_size(), clear_cache()
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from filelock import FileLock, Timeout

from engine.errors import UserError, plain_reason
from engine.store.files import write_bytes, write_json
from engine.store.home import home_subdir
from engine.data.decode_pool import presize_all, presize_to_file
from engine.data.images import Decoded, PresizedImages, Progress

FORMAT = 1  # bump when the layout changes: older entries are then ignored and evicted in time
DISK_ENV = "LOUPE_CACHE_DISK_GB"
DEFAULT_DISK_GB = 10.0
MANIFEST = "manifest.json"
LAST_USED = "last-used"  # an empty file whose mtime says when the data set was last read
PARTIAL = ".partial"
MAX_ROW_FILES = 8  # a data set with more row files than this (many small re-decodes) is rewritten as one
FREE_MARGIN = 256 * 1024**2  # disk space always left free


def cache_dir() -> Path:
    """The folder of the presize cache (created if missing)."""
    path = home_subdir("cache") / "presize"
    path.mkdir(exist_ok=True)
    return path


def _settings_file() -> Path:
    return home_subdir("cache") / "settings.json"


def disk_limit_bytes() -> int:
    """How large the presize cache may grow: LOUPE_CACHE_DISK_GB, else the limit set in the app, else 10 GB."""
    if os.environ.get(DISK_ENV):
        return int(float(os.environ[DISK_ENV]) * 1024**3)
    try:
        gb = float(json.loads(_settings_file().read_text())["disk_limit_gb"])
    except (OSError, ValueError, KeyError, TypeError):
        gb = DEFAULT_DISK_GB
    return int(gb * 1024**3)


def set_disk_limit(gb: float) -> int:
    """Keep the cache under `gb` gigabytes from now on (saved under LOUPE_HOME, so a restart keeps it); evicts the
    least recently used data sets at once if it is over; returns the bytes freed."""
    if not gb > 0:
        raise UserError(f"The cache's size limit must be above 0 GB (got {gb:g}).")
    write_json(_settings_file(), {"disk_limit_gb": float(gb)})
    return evict()


@dataclass
class CacheGet:
    """What one get did: 'hit' (nothing decoded), 'miss' (every file decoded) or 'partial'."""

    status: str = "hit"
    decoded: int = 0  # files decoded
    decode_s: float = 0.0  # seconds spent decoding them
    on_disk: bool = True  # False when the pixels could not be kept on disk and were decoded into memory only


@dataclass
class CacheEntry:
    """One data set in the cache, as the Data page lists it."""

    folder: Path
    root: str  # the images' folder
    presize: int
    method: str
    images: int
    bytes: int
    last_used: float  # seconds since the epoch


# ---------------------------------------------------------------- pixels read through the OS page cache

class MappedPixels:
    """Presized pixels [N, 3, P, P] uint8 in the cache's memory-mapped row files, indexed like the tensor they stand
    for. `load` copies them into this process's memory (reads then come from there); until then, and for data sets
    over the memory budget always, each read gathers its rows from the files through the OS page cache."""

    dtype = torch.uint8

    def __init__(self, maps: list[np.ndarray], which: np.ndarray, rows: np.ndarray, size: int,
                 keep_in_memory: bool = False) -> None:
        self.maps = maps  # one [rows, 3, P, P] memmap per row file
        self.which = which  # [N] the row file of each image, -1 where it failed (zeros)
        self.rows = rows  # [N] its row in that file
        self.shape = torch.Size((len(which), 3, size, size))
        self.keep_in_memory = keep_in_memory  # within the memory budget: training copies them into memory
        self._tensor: torch.Tensor | None = None  # every row, once loaded
        self._loading = threading.Lock()
        self._loading_started = threading.Lock()
        self._loader: threading.Thread | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def numel(self) -> int:
        return self.shape.numel()

    @property
    def in_memory(self) -> bool:
        return self._tensor is not None

    @property
    def load_started(self) -> bool:
        """Whether a copy into memory was started (it may still be under way)."""
        return self._loader is not None or self._tensor is not None

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Rows `index` ([n] ints) as one [n, 3, P, P] array in memory."""
        loaded = self._tensor
        if loaded is not None:
            return loaded.numpy()[index]
        which, rows = self.which[index], self.rows[index]
        if len(self.maps) == 1 and (which == 0).all():
            return np.asarray(self.maps[0][rows])
        out = np.zeros((len(index), *self.shape[1:]), dtype=np.uint8)
        for k, rows_file in enumerate(self.maps):
            chosen = which == k
            if chosen.any():
                out[chosen] = rows_file[rows[chosen]]
        return out

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):  # pixels[i, :, 0, 0]: the rows first, then the rest on them
            rows = self[index[0]]
            return rows[index[1:]] if rows.dim() == 3 else rows[(slice(None), *index[1:])]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if index.ndim == 0:
            return torch.from_numpy(self.gather(index[None].astype(np.int64)))[0]
        return torch.from_numpy(self.gather(index.astype(np.int64)))

    def load(self) -> torch.Tensor:
        """Every row in this process's memory as a [N, 3, P, P] uint8 tensor (copied once; waits for a copy under way)."""
        with self._loading:
            if self._tensor is None:
                self._tensor = self._copy()
        return self._tensor

    def load_in_background(self) -> None:
        """Start `load` in a thread (unless loaded or loading): reads come from the files until it is done."""
        # a daemon thread, so a script may end before it is done; it copies with numpy only, because a thread
        # stopped at exit inside torch's C++ aborts the whole process
        with self._loading_started:
            if self._tensor is None and self._loader is None:
                self._loader = threading.Thread(target=self.load, daemon=True, name="loupe-load-pixels")
                self._loader.start()

    def _copy(self) -> torch.Tensor:
        arr = np.zeros(tuple(self.shape), dtype=np.uint8)
        for k, rows_file in enumerate(self.maps):
            where = np.flatnonzero(self.which == k)
            if len(where) == 0:
                continue
            rows = self.rows[where]
            if (np.diff(where) == 1).all() and (np.diff(rows) == 1).all():  # one run: a plain copy
                arr[where[0]:where[-1] + 1] = rows_file[rows[0]:rows[-1] + 1]
            else:
                for start in range(0, len(where), 1024):  # in blocks: no second full-size copy
                    arr[where[start:start + 1024]] = rows_file[rows[start:start + 1024]]
        return torch.from_numpy(arr)


# ---------------------------------------------------------------- one data set's folder

def _entry_name(root: str, presize: int, method: str) -> str:
    """A folder name readable by a person and unique to (root, presize, method)."""
    digest = hashlib.sha1(f"{FORMAT}|{root}|{presize}|{method}".encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(root).name)[:40] or "images"
    return f"{label}-{presize}-{method}-{digest}"


def _lock(name: str, timeout: float = -1) -> FileLock:
    """The lock a writer of data set `name` holds (lock files stay: deleting one another process holds breaks it)."""
    locks = cache_dir() / "locks"
    locks.mkdir(exist_ok=True)
    return FileLock(locks / f"{name}.lock", timeout=timeout)


def _read_manifest(folder: Path, presize: int, method: str) -> dict:
    """The folder's manifest, or an empty one when there is none or it is not this format or these settings."""
    empty = {"format": FORMAT, "presize": presize, "method": method, "root": "", "chunks": {}, "files": {}}
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return empty
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("presize"), manifest.get("method")) != (
            FORMAT, presize, method):
        return empty
    return manifest


def _valid_chunks(folder: Path, manifest: dict, row_bytes: int) -> set[str]:
    """Row files the manifest names that exist whole (a file cut short by a crash or a full disk is not)."""
    valid = set()
    for name, rows in manifest["chunks"].items():
        try:
            if (folder / name).stat().st_size == rows * row_bytes:
                valid.add(name)
        except OSError:
            pass
    return valid


def _match(manifest: dict, rels: list[str], keys: list[tuple[int, int] | str], valid: set[str]) -> list[list | None]:
    """Each file's record [size, mtime_ns, row file, row, width, height, mode, failure] if it is cached as the file is
    now (and its row file is whole), else None. A file that cannot be found gets a failure record, never a decode."""
    files = manifest["files"]
    found: list[list | None] = []
    for rel, key in zip(rels, keys):
        if isinstance(key, str):
            found.append([-1, -1, "", -1, 0, 0, "", key])
            continue
        rec = files.get(rel)
        ok = rec is not None and rec[0] == key[0] and rec[1] == key[1] and (not rec[2] or rec[2] in valid)
        found.append(rec if ok else None)
    return found


def _open(folder: Path, manifest: dict, records: list[list], presize: int, method: str, in_memory: bool) -> PresizedImages:
    """The pixels of these records (mapped, or copied into memory) with their sizes, modes and failures."""
    names = sorted({rec[2] for rec in records if rec[2]})
    index = {name: k for k, name in enumerate(names)}
    maps = [np.memmap(folder / name, dtype=np.uint8, mode="r", shape=(manifest["chunks"][name], 3, presize, presize))
            for name in names]
    which = np.array([index[rec[2]] if rec[2] else -1 for rec in records], dtype=np.int64).reshape(len(records))
    rows = np.array([rec[3] for rec in records], dtype=np.int64).reshape(len(records))
    mapped = MappedPixels(maps, which, rows, presize, keep_in_memory=in_memory)
    found = [Decoded(rec[4], rec[5], rec[6], rec[7]) for rec in records]
    return PresizedImages.from_decoded(mapped, found, presize, method)


def _remove_stale_files(folder: Path, manifest: dict) -> None:
    """Files a crashed writer left (.partial) and row files no manifest names. Only a lock holder may call this."""
    for path in folder.iterdir():
        if path.name.endswith(PARTIAL) or (path.name.startswith("rows-") and path.name not in manifest["chunks"]):
            path.unlink(missing_ok=True)


def _compact(folder: Path, manifest: dict, presize: int, first: list[str]) -> None:
    """Rewrite every live row into one new row file, the files in `first` first and in that order (so reading them
    back is one plain copy); the manifest then names only the new file."""
    row_shape = (3, presize, presize)
    files = manifest["files"]
    order = list(dict.fromkeys([rel for rel in first if rel in files] + list(files)))
    order = [rel for rel in order if files[rel][2]]
    name = f"rows-{uuid.uuid4().hex[:12]}.u8"
    partial = folder / (name + PARTIAL)
    sources = {n: np.memmap(folder / n, dtype=np.uint8, mode="r", shape=(rows, *row_shape))
               for n, rows in manifest["chunks"].items()}
    with open(partial, "wb") as f:
        for rel in order:
            rec = files[rel]
            f.write(sources[rec[2]][rec[3]].tobytes())
        f.flush()
        os.fsync(f.fileno())
    del sources
    os.replace(partial, folder / name)
    for row, rel in enumerate(order):
        files[rel][2:4] = [name, row]
    manifest["chunks"] = {name: len(order)}


def _dead_rows(manifest: dict) -> int:
    live = sum(1 for rec in manifest["files"].values() if rec[2])
    return sum(manifest["chunks"].values()) - live


def _stat_keys(paths: Sequence[Path]) -> list[tuple[int, int] | str]:
    """Each file's (size, mtime_ns), or why it cannot be read when it cannot even be found."""
    keys: list[tuple[int, int] | str] = []
    for p in paths:
        try:
            st = os.stat(p)
            keys.append((st.st_size, st.st_mtime_ns))
        except OSError as e:
            keys.append(f"not a readable image ({plain_reason(e)})")  # as decoding it would say
    return keys


def _touch(folder: Path) -> None:
    """Mark the data set as used now (best effort: a read-only cache is still read)."""
    try:
        (folder / LAST_USED).touch()
    except OSError:
        pass


def _relative(paths: Sequence[Path]) -> tuple[str, list[str]]:
    """The folder the paths share and each path relative to it (posix-style)."""
    strings = [os.fspath(p) for p in paths]
    try:
        root = os.path.commonpath(list({os.path.dirname(s) for s in strings}))
    except ValueError:  # different drives on Windows
        return "", [Path(s).as_posix() for s in strings]
    prefix = root if root.endswith(os.sep) else root + os.sep
    return root, [s[len(prefix):].replace(os.sep, "/") for s in strings]


def presize_cached(paths: Sequence[Path], presize: int, method: str = "crop", progress: Progress | None = None,
                   in_memory: bool = True, limit: int | None = None, workers: int | None = None) -> tuple[PresizedImages, CacheGet]:
    """Presized pixels of `paths` from the disk cache, decoding (and storing) only files not cached as they are now.

    `in_memory`: the pixels are to be held in this process's memory: training copies them there in the background
    (a page that shows a few is not kept waiting); else they are always read from the cache files.
    `limit`: the cache's size limit in bytes (default LOUPE_CACHE_DISK_GB). A data set that cannot be kept on
    disk (larger than the limit, or no free space) is decoded into memory, or refused when `in_memory` is False.
    """
    if not paths:
        return presize_all([], presize, method), CacheGet()
    limit = disk_limit_bytes() if limit is None else limit
    row_bytes = 3 * presize * presize
    root, rels = _relative(paths)
    keys = _stat_keys(paths)
    name = _entry_name(root, presize, method)
    try:
        folder = cache_dir() / name
        manifest = _read_manifest(folder, presize, method)
        records = _match(manifest, rels, keys, _valid_chunks(folder, manifest, row_bytes))
        if all(rec is not None for rec in records):
            try:
                images = _open(folder, manifest, records, presize, method, in_memory)
                _touch(folder)
                return images, CacheGet()
            except (OSError, ValueError):  # a writer replaced or evicted the files since: look again under the lock
                pass
        if len(paths) * row_bytes > limit:
            why = f"it is larger than the disk cache may grow ({limit / 1024**3:.1f} GB, {DISK_ENV})"
            return _in_memory_only(paths, presize, method, progress, in_memory, why, workers)
        incoming = sum(rec is None for rec in records) * row_bytes
        evict(limit, keep=[name], incoming=incoming)
        if shutil.disk_usage(cache_dir()).free < incoming + FREE_MARGIN:
            return _in_memory_only(paths, presize, method, progress, in_memory, "the disk is nearly full", workers)
        with _lock(name):
            return _fill(folder, paths, rels, keys, root, presize, method, progress, in_memory, workers)
    except OSError as e:  # a disk that filled up meanwhile, a read-only home…
        return _in_memory_only(paths, presize, method, progress, in_memory, f"writing it failed ({plain_reason(e)})", workers)


def _in_memory_only(paths, presize, method, progress, in_memory, why, workers) -> tuple[PresizedImages, CacheGet]:
    """Decode into memory without the disk cache, or say why the data set fits neither."""
    gb = len(paths) * 3 * presize * presize / 1024**3
    if not in_memory:
        raise UserError(f"Presizing {len(paths):,} images to {presize}×{presize} takes {gb:.1f} GB: more than Loupe "
                        f"keeps in memory, and it cannot be cached on disk because {why}. Choose a smaller presize, "
                        f"or raise the limits (LOUPE_RAM_BUDGET_MB, {DISK_ENV}).")
    start = time.perf_counter()
    images = presize_all(paths, presize, method, progress=progress, workers=workers)
    return images, CacheGet("miss", len(paths), time.perf_counter() - start, on_disk=False)


def _fill(folder, paths, rels, keys, root, presize, method, progress, in_memory, workers) -> tuple[PresizedImages, CacheGet]:
    """Decode what is missing into a new row file, record it in the manifest, and open the data set (lock held)."""
    folder.mkdir(parents=True, exist_ok=True)
    row_bytes = 3 * presize * presize
    manifest = _read_manifest(folder, presize, method)  # again: another process may have filled it meanwhile
    _remove_stale_files(folder, manifest)
    before = set(manifest["chunks"])
    valid = _valid_chunks(folder, manifest, row_bytes)
    records = _match(manifest, rels, keys, valid)
    missing = [i for i, rec in enumerate(records) if rec is None]
    stats = CacheGet()
    if missing:
        chunk = f"rows-{uuid.uuid4().hex[:12]}.u8"
        partial = folder / (chunk + PARTIAL)
        try:
            start = time.perf_counter()
            found = presize_to_file(partial, [paths[i] for i in missing], presize, method, progress, workers)
            stats = CacheGet("miss" if len(missing) == len(paths) else "partial", len(missing), time.perf_counter() - start)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())  # the rows are on disk before any manifest names them
            os.replace(partial, folder / chunk)
        finally:
            partial.unlink(missing_ok=True)
        manifest["chunks"][chunk] = len(missing)
        before.add(chunk)  # compacting may replace it at once
        for row, (i, d) in enumerate(zip(missing, found)):
            manifest["files"][rels[i]] = [*keys[i], chunk if d.ok else "", row if d.ok else -1, *d]
        _forget_gone_files(manifest, root, set(rels), valid | {chunk})
        if len(manifest["chunks"]) > MAX_ROW_FILES or _dead_rows(manifest) > sum(manifest["chunks"].values()) // 2:
            _compact(folder, manifest, presize, rels)
        manifest["root"] = root
        write_bytes(folder / MANIFEST, json.dumps(manifest, separators=(",", ":")).encode(), temp_suffix=PARTIAL)
        records = _match(manifest, rels, keys, set(manifest["chunks"]))
    for gone in before - set(manifest["chunks"]):
        (folder / gone).unlink(missing_ok=True)  # a reader that mapped it keeps reading it
    images = _open(folder, manifest, records, presize, method, in_memory)
    _touch(folder)
    return images, stats


def _forget_gone_files(manifest: dict, root: str, requested: set[str], valid: set[str]) -> None:
    """Drop the records of files not asked for now that were deleted or changed, and of rows lost to a crash."""
    files = manifest["files"]
    for rel in [rel for rel in files if rel not in requested]:
        rec = files[rel]
        try:
            st = os.stat(os.path.join(root, rel))
            keep = (st.st_size, st.st_mtime_ns) == (rec[0], rec[1]) and (not rec[2] or rec[2] in valid)
        except OSError:
            keep = False
        if not keep:
            del files[rel]
    used = {rec[2] for rec in files.values() if rec[2]}
    manifest["chunks"] = {n: rows for n, rows in manifest["chunks"].items() if n in used}


# ---------------------------------------------------------------- size, eviction, clearing

def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def _last_used(folder: Path) -> float:
    for path in (folder / LAST_USED, folder):
        try:
            return path.stat().st_mtime
        except OSError:
            pass
    return 0.0


def _entry_folders() -> list[Path]:
    return [p for p in cache_dir().iterdir() if p.is_dir() and p.name != "locks"]


def cache_size() -> int:
    """Bytes the presize cache takes on disk."""
    return _folder_bytes(cache_dir())


def cache_entries() -> list[CacheEntry]:
    """The data sets in the cache, most recently used first."""
    entries = []
    for folder in _entry_folders():
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            root, presize, method = manifest["root"], manifest["presize"], manifest["method"]
            images = len(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError):
            root, presize, method, images = "", 0, "", 0
        entries.append(CacheEntry(folder, root, presize, method, images, _folder_bytes(folder), _last_used(folder)))
    return sorted(entries, key=lambda e: e.last_used, reverse=True)


def _remove_entry(folder: Path) -> int:
    """Delete one data set's folder unless a writer holds it; the bytes freed."""
    try:
        with _lock(folder.name, timeout=0):
            size = _folder_bytes(folder)
            (folder / MANIFEST).unlink(missing_ok=True)  # first: no reader trusts the row files from here on
            shutil.rmtree(folder, ignore_errors=True)
            return size - (_folder_bytes(folder) if folder.exists() else 0)
    except Timeout:
        return 0


def evict(limit: int | None = None, keep: Sequence[str] = (), incoming: int = 0) -> int:
    """Delete least recently used data sets until the cache plus `incoming` bytes fits `limit`; the bytes freed."""
    limit = disk_limit_bytes() if limit is None else limit
    folders = sorted(_entry_folders(), key=_last_used)
    sizes = {f: _folder_bytes(f) for f in folders}
    total, freed = sum(sizes.values()), 0
    for folder in folders:
        if total + incoming <= limit:
            break
        if folder.name in keep:
            continue
        gone = _remove_entry(folder)
        total, freed = total - gone, freed + gone
    return freed


def clear_cache() -> int:
    """Delete every data set in the presize cache (except any being written right now); the bytes freed."""
    return sum(_remove_entry(folder) for folder in _entry_folders())
