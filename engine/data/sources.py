"""Where images come from: a folder on disk, an uploaded zip, or a fastai data set downloaded once."""
from __future__ import annotations

import gzip
import http.client
import io
import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from filelock import FileLock, Timeout

from engine.errors import UserError, plain_reason
from engine.store.home import home_subdir

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TRASH_DIR = ".loupe-trash"
COMPLETE_MARKER = ".loupe-complete"
CHUNK = 1024 * 1024  # 1 MiB
S3_BASE = "https://s3.amazonaws.com"
EXTRACT_PREFIX = ".loupe-extract-"  # hidden folders archives are unpacked into before they move into place
MAX_SCAN_ENTRIES = 1_000_000  # files and folders a scan looks at before it gives up
SCAN_PROGRESS_EVERY = 1_000  # entries between two progress calls
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")  # hold no images; listing them can be endless or hang

ScanProgress = Callable[[int, int], None]  # (files and folders looked at, images found)


def _size_text(n: int) -> str:
    """Bytes for people: '512 KB', '4.3 GB'."""
    for unit, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


# ---------------------------------------------------------------- folders

class ScanStopped(UserError):
    """The user stopped a folder scan (the page may show this more gently than an error)."""


@dataclass
class FolderScan:
    root: Path
    images: list[Path]  # sorted, absolute, recursive
    skipped: int  # non-image files ignored (e.g. Pets' .mat files)
    skipped_examples: list[str]  # up to 5 relative paths of skipped files
    broken_links: list[str] = field(default_factory=list)  # relative paths of links to nothing (or looping), sorted
    unreadable: list[str] = field(default_factory=list)  # relative paths of subfolders Loupe may not read, sorted


def _is_ignored_name(name: str) -> bool:
    # hidden files and folders (this covers .loupe-trash) and macOS zip litter
    return name.startswith(".") or name == "__MACOSX" or name == TRASH_DIR


def _refuse_root(given: Path, root: Path) -> None:
    """Refuse folders that are not worth scanning: a whole disk, or a system folder of virtual files."""
    if root.parent == root:
        raise UserError(f"'{given}' is the top of the whole disk; scanning all of it would take very long. "
                        "Choose the folder that holds your images.")
    system = next((s for s in SYSTEM_FOLDERS if root.is_relative_to(s)), None) if sys.platform != "win32" else None
    if system:
        raise UserError(f"Loupe does not scan {system} ('{given}'): it holds the system's virtual files, not images. "
                        "Choose the folder that holds your images.")


def scan_folder(path: str | Path, max_files: int = MAX_SCAN_ENTRIES, progress: ScanProgress | None = None,
                stop: threading.Event | None = None) -> FolderScan:
    """Find every image under a folder (recursively), counting the other files that were skipped.

    Gives up with a UserError after looking at `max_files` files and folders; `progress(looked_at, images)`
    is called every SCAN_PROGRESS_EVERY entries; setting `stop` ends the scan with ScanStopped.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise UserError(f"The folder '{given}' does not exist. Check the path for typos "
                        "(you can copy it from your file browser).")
    if not given.is_dir():
        raise UserError(f"'{given}' is a file, not a folder. Give the folder that holds your images.")
    root = given.resolve()
    _refuse_root(given, root)
    real_root = os.path.realpath(root)

    images: list[Path] = []
    skipped_examples: list[str] = []
    skipped = 0
    broken: list[str] = []
    unreadable: list[str] = []
    looked_at = 0
    visited = {real_root}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        entries = []
        try:
            with os.scandir(folder) as listing:
                for entry in listing:  # counted one by one: a single folder may hold millions
                    looked_at += 1
                    if looked_at > max_files:
                        raise UserError(f"The folder '{given}' holds more than {max_files:,} files and folders, "
                                        "more than Loupe scans. Choose a smaller folder, e.g. one that holds "
                                        "only your images.")
                    if stop is not None and stop.is_set():
                        raise ScanStopped(f"The scan of '{given}' was stopped after {looked_at:,} files and "
                                          "folders; nothing was loaded.")
                    if progress is not None and looked_at % SCAN_PROGRESS_EVERY == 0:
                        progress(looked_at, len(images))
                    entries.append(entry)
        except OSError as e:
            if folder == str(root):
                why = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e))
                raise UserError(f"Loupe cannot read the folder '{given}' ({why}). Choose a folder you may open, "
                                "or change its permissions.") from None
            unreadable.append(Path(folder).relative_to(root).as_posix())
            continue  # unreadable folder: nothing to take from it
        # real entries before links, so a link to a folder already here is the one skipped
        for entry in sorted(entries, key=lambda e: (e.is_symlink(), e.name)):
            if _is_ignored_name(entry.name):
                continue
            try:
                # only links need the costly checks: do they lead anywhere, stay inside the root, loop?
                if entry.is_symlink():
                    if not os.path.exists(entry.path):  # a link to nothing, or a loop of links
                        broken.append(Path(entry.path).relative_to(root).as_posix())
                        continue
                    real = os.path.realpath(entry.path)
                    if not Path(real).is_relative_to(real_root):
                        continue
                    if os.path.isdir(real):
                        if real not in visited:
                            visited.add(real)
                            stack.append(entry.path)
                        continue
                    if not os.path.isfile(real):
                        continue  # a link to a socket, device or fifo
                elif entry.is_dir(follow_symlinks=False):
                    real = os.path.realpath(entry.path)
                    if real not in visited:
                        visited.add(real)
                        stack.append(entry.path)
                    continue
                elif not entry.is_file(follow_symlinks=False):
                    continue  # sockets, devices, fifos
            except OSError:
                continue  # vanished or unreadable while we looked
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(Path(entry.path))
            else:
                skipped += 1
                if len(skipped_examples) < 5:
                    skipped_examples.append(Path(entry.path).relative_to(root).as_posix())
    if progress is not None:
        progress(looked_at, len(images))

    if not images:
        if skipped:
            raise UserError(
                f"The folder '{given}' holds no images (found {skipped} other files such as "
                f"{', '.join(skipped_examples[:3])}). Loupe reads {', '.join(sorted(IMAGE_EXTENSIONS))} "
                "files; choose a folder that contains photos (they may sit in subfolders).")
        if unreadable:
            raise UserError(f"The folder '{given}' holds no images Loupe may read: {len(unreadable):,} of its "
                            f"subfolders are not readable (e.g. {unreadable[0]}). Check their permissions.")
        raise UserError(f"The folder '{given}' holds no images (it is empty). "
                        "Choose a folder that contains photos (they may sit in subfolders).")
    images.sort()
    return FolderScan(root=root, images=images, skipped=skipped, skipped_examples=skipped_examples,
                      broken_links=sorted(broken), unreadable=sorted(unreadable))


# ---------------------------------------------------------------- uploaded zips

@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 100_000
    max_total_bytes: int = 4 * 1024**3  # uncompressed
    max_ratio: float = 200.0  # per-entry compression ratio (zip bomb)
    ratio_min_bytes: int = 1024 * 1024  # small files may compress very well; only judge the ratio above this
    max_total_ratio: float = 100.0  # the whole archive: unpacked bytes / zip bytes (a bomb of many small entries)
    total_ratio_min_bytes: int = 64 * 1024**2  # only judge the whole archive's ratio when it unpacks to more
    disk_margin_bytes: int = 1024**3  # free space that must remain on the disk after unpacking


def safe_folder_name(name: str, default: str = "upload") -> str:
    """A file name turned into a plain folder name: 'my pets.zip' -> 'my-pets'."""
    stem = unicodedata.normalize("NFC", PurePosixPath(name.replace("\\", "/")).name)
    stem = re.sub(r"\.(zip|tgz|tar\.gz|tar)$", "", stem, flags=re.IGNORECASE)
    stem = re.sub(r"[^\w.-]+", "-", stem).strip("-._")[:64].strip("-._")
    return stem or default


def _refuse(entry: str, why: str) -> UserError:
    return UserError(f"This zip was refused: the entry '{entry}' {why}. Nothing was extracted.")


def _bad_path_reason(name: str) -> str | None:
    """Why an archive member name is unsafe to write, or None if it is fine."""
    if "\\" in name:
        return "uses backslashes in its path, which could place it outside its folder"
    if "\x00" in name:
        return "has a broken name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path and would be written outside its folder"
    if ".." in name.split("/"):
        return "would be written outside its folder"
    return None


def _zip_entry_parts(info: zipfile.ZipInfo) -> list[str]:
    return [p for p in info.filename.split("/") if p not in ("", ".")]


def _is_image_entry(info: zipfile.ZipInfo) -> bool:
    parts = _zip_entry_parts(info)
    return (not info.is_dir() and bool(parts) and not any(_is_ignored_name(p) for p in parts)
            and PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS)


def _check_zip(zf: zipfile.ZipFile, limits: ZipLimits, packed_bytes: int | None = None,
               free_bytes: int | None = None) -> list[zipfile.ZipInfo]:
    """Validate every entry and the totals before anything is written; return the entries to extract."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise UserError(f"This zip was refused: it holds {len(infos):,} entries, more than the limit of "
                        f"{limits.max_files:,}. Split it into smaller zips. Nothing was extracted.")
    total = compressed = 0
    for info in infos:
        name = info.filename
        why = _bad_path_reason(name)
        if why:
            raise _refuse(name, why)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _refuse(name, "is a symbolic link, which Loupe does not accept")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _refuse(name, "is a special file (not a plain file or folder)")
        if info.flag_bits & 0x1:
            raise _refuse(name, "is password-protected; unzip it yourself and choose the folder instead")
        if info.is_dir():
            continue
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise UserError(f"This zip was refused: unpacked it would take more than "
                            f"{limits.max_total_bytes / 1024**3:.1f} GB (reached at the entry '{name}'). "
                            "Nothing was extracted.")
        if (info.file_size >= limits.ratio_min_bytes
                and info.file_size / max(info.compress_size, 1) > limits.max_ratio):
            raise _refuse(name, f"is compressed {info.file_size / max(info.compress_size, 1):,.0f} times, "
                                "which looks like a zip bomb")
    # entries may claim the same compressed bytes, so the zip's own size caps what they can hold
    packed = max(1, min(compressed, packed_bytes if packed_bytes is not None else compressed))
    if total >= limits.total_ratio_min_bytes and total / packed > limits.max_total_ratio:
        raise UserError(f"This zip was refused: its {_size_text(packed)} unpack to {_size_text(total)}, "
                        f"{total / packed:,.0f} times as much, which looks like a zip bomb (Loupe allows "
                        f"{limits.max_total_ratio:,.0f} times). If it is genuine, unzip it yourself and choose the "
                        "folder instead. Nothing was extracted.")
    if free_bytes is not None and total > free_bytes - limits.disk_margin_bytes:
        raise UserError(f"This zip was refused: unpacked it takes {_size_text(total)}, but the disk has "
                        f"{_size_text(max(free_bytes, 0))} free and Loupe keeps {_size_text(limits.disk_margin_bytes)} "
                        "of it free. Free some space and try again. Nothing was extracted.")
    kept = [i for i in infos if not (_zip_entry_parts(i) and _zip_entry_parts(i)[0] == "__MACOSX")]
    if not any(_is_image_entry(i) for i in kept):
        others = [i.filename for i in kept if not i.is_dir()]
        found = (f"only {len(others):,} other file{'s' if len(others) != 1 else ''} such as {', '.join(others[:3])}"
                 if others else "no files")
        raise UserError(f"This zip holds no images ({found}). Loupe reads {', '.join(sorted(IMAGE_EXTENSIONS))} "
                        "files. Nothing was extracted.")
    return kept


def _copy_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
                    written: int, limits: ZipLimits) -> int:
    """Stream one entry to disk, counting bytes as they come; return the new running total."""
    entry_bytes = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            entry_bytes += len(chunk)
            written += len(chunk)
            if entry_bytes > info.file_size:
                raise _refuse(info.filename, "holds more data than its header says")
            if written > limits.max_total_bytes:
                raise UserError(f"This zip was refused: unpacked it would take more than "
                                f"{limits.max_total_bytes / 1024**3:.1f} GB. Nothing was extracted.")
            dst.write(chunk)
    return written


def _claim_child(parent: Path, base: str) -> Path:
    """A new empty folder parent/base (or base-2, base-3…), made atomically so no two unpackings share one."""
    for n in range(1, 10_000):
        candidate = parent / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"There are too many uploads named '{base}' already; rename the zip and try again.")


@contextmanager
def _extraction_dir(parent: Path) -> Iterator[Path]:
    """A new hidden folder in parent to unpack into, locked while in use (see clean_stale_extractions), removed after."""
    name = f"{EXTRACT_PREFIX}{secrets.token_hex(8)}"
    lock = FileLock(parent / f"{name}.lock")
    lock.acquire()  # before the folder exists, so a cleaner never sees it unlocked
    tmp = parent / name
    try:
        tmp.mkdir()
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already empty or gone when its contents moved into place
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


def clean_stale_extractions(folder: Path | None = None) -> int:
    """Remove the unpacking folders a crash left in folder (default: Loupe's uploads and data sets); return how many.

    A folder that a live unpacking (in this or another Loupe process) holds the lock of is left alone.
    """
    folders = [Path(folder)] if folder is not None else [home_subdir("uploads"), home_subdir("datasets")]
    removed = 0
    for parent in folders:
        if not parent.is_dir():
            continue
        names = sorted({p.name.removesuffix(".lock") for p in parent.iterdir() if p.name.startswith(EXTRACT_PREFIX)})
        for name in names:
            lock = FileLock(parent / f"{name}.lock")
            try:
                lock.acquire(timeout=0)
            except (Timeout, OSError):
                continue  # still being unpacked into, or not ours to touch
            try:
                if (parent / name).is_dir():
                    shutil.rmtree(parent / name, ignore_errors=True)
                    removed += 1
            finally:
                lock.release()
                (parent / f"{name}.lock").unlink(missing_ok=True)
    return removed


def _archive_bytes(data: bytes | BinaryIO | Path) -> int | None:
    """The size of the zip itself, or None if it cannot be told."""
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    try:
        if isinstance(data, (str, os.PathLike)):
            return os.stat(data).st_size
        here = data.tell()
        end = data.seek(0, os.SEEK_END)
        data.seek(here)
        return end
    except (AttributeError, OSError, ValueError):
        return None


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def extract_zip(data: bytes | BinaryIO | Path, name: str, limits: ZipLimits = ZipLimits(),
                dest_root: Path | None = None) -> Path:
    """Safely unpack an uploaded zip into a new folder under dest_root (default: Loupe's uploads) and return it."""
    dest_root = Path(dest_root) if dest_root is not None else home_subdir("uploads")
    dest_root.mkdir(parents=True, exist_ok=True)
    packed_bytes = _archive_bytes(data)
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise UserError(f"'{name}' is not a zip file (or it is damaged). Upload a .zip file made by "
                        "your computer's 'Compress' command.") from None

    with zf:
        entries = _check_zip(zf, limits, packed_bytes, _free_bytes(dest_root))
        try:
            with _extraction_dir(dest_root) as tmp:
                real_tmp = os.path.realpath(tmp)
                written = 0
                for info in entries:
                    parts = _zip_entry_parts(info)
                    if not parts:
                        continue
                    target = tmp.joinpath(*parts)
                    if not Path(os.path.realpath(target)).is_relative_to(real_tmp):  # belt and braces
                        raise _refuse(info.filename, "would be written outside its folder")
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    written = _copy_zip_entry(zf, info, target, written, limits)
                final = _claim_child(dest_root, safe_folder_name(name))
                try:
                    for child in list(tmp.iterdir()):
                        os.rename(child, final / child.name)
                except OSError:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
        except (zipfile.BadZipFile, EOFError, RuntimeError, zlib.error) as e:
            raise UserError(f"'{name}' is damaged and could not be unpacked ({e}). "
                            "Make the zip again and re-upload it. Nothing was extracted.") from None
        except OSError as e:
            raise UserError(f"Could not unpack '{name}': {e.strerror or e}. Is the disk full? "
                            "Nothing was extracted.") from None
    return final


def move_to_loupe_trash(path: Path, tag: str) -> Path:
    """Move a file or folder into a new folder of its own in Loupe's trash (never deleted); return its new path."""
    trash = home_subdir("trash")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        holder = trash / (f"{tag}-{stamp}" if n == 0 else f"{tag}-{stamp}-{n}")
        try:
            holder.mkdir()  # atomic: two processes trashing at once never share a holder
        except FileExistsError:
            continue
        return Path(shutil.move(str(path), str(holder / Path(path).name)))  # a rename on one disk; copies across disks
    raise UserError(f"Could not move '{path}' to Loupe's trash: too many items named '{tag}' went there this second.")


def delete_upload(folder: str | Path, uploads_dir: Path | None = None) -> Path:
    """Move an uploaded data set from Loupe's uploads into Loupe's trash (never deleted); return where it went."""
    uploads = Path(uploads_dir) if uploads_dir is not None else home_subdir("uploads")
    folder = Path(folder)
    if (folder.is_symlink() or not folder.is_dir() or _is_ignored_name(folder.name)
            or os.path.realpath(folder.parent) != os.path.realpath(uploads)):
        raise UserError(f"'{folder}' is not a data set in Loupe's uploads folder ({uploads}), so Loupe will not move it.")
    try:
        return move_to_loupe_trash(folder, "upload")
    except OSError as e:
        raise UserError(f"Could not move '{folder.name}' to Loupe's trash ({e.strerror or e}); "
                        "it is still in the uploads folder.") from None


# ---------------------------------------------------------------- fastai data sets

@dataclass(frozen=True)
class RemoteDataset:
    key: str  # "PETS"
    title: str  # shown to the user
    url: str
    folder: str  # folder name inside the archive after extraction
    label_hint: str  # "folder" (label = parent folder name) or "regex:<pattern on file names>"
    image_subdir: str  # subfolder holding the images; "" for the whole folder


# URLs as in fastai's fastai/data/external.py `URLs` class.
FASTAI_DATASETS: dict[str, RemoteDataset] = {d.key: d for d in [
    RemoteDataset("PETS", "Oxford-IIIT Pets (37 breeds, 7,390 photos, 811 MB)",
                  f"{S3_BASE}/fast-ai-imageclas/oxford-iiit-pet.tgz", "oxford-iiit-pet",
                  r"regex:^(.+)_\d+\.jpg$", "images"),
    RemoteDataset("MNIST_SAMPLE", "MNIST sample (handwritten 3s and 7s, 14,434 images, 3 MB)",
                  f"{S3_BASE}/fast-ai-sample/mnist_sample.tgz", "mnist_sample", "folder", ""),
    RemoteDataset("MNIST_TINY", "MNIST tiny (handwritten 3s and 7s, about 1,400 images, 0.3 MB)",
                  f"{S3_BASE}/fast-ai-sample/mnist_tiny.tgz", "mnist_tiny", "folder", ""),
    RemoteDataset("IMAGENETTE_160", "Imagenette 160 px (10 ImageNet classes, 13,394 photos, 94 MB)",
                  f"{S3_BASE}/fast-ai-imageclas/imagenette2-160.tgz", "imagenette2-160", "folder", ""),
]}

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _dataset(key: str) -> RemoteDataset:
    if key not in FASTAI_DATASETS:
        raise UserError(f"Unknown data set '{key}'. Choose one of: {', '.join(FASTAI_DATASETS)}.")
    return FASTAI_DATASETS[key]


def _datasets_root(root: Path | None) -> Path:
    return Path(root) if root is not None else home_subdir("datasets")


def dataset_path(key: str, root: Path | None = None) -> Path:
    """Where a fastai data set lives once extracted."""
    return _datasets_root(root) / _dataset(key).folder


def is_downloaded(key: str, root: Path | None = None) -> bool:
    """True when the data set was downloaded and fully extracted."""
    return (dataset_path(key, root) / COMPLETE_MARKER).is_file()


def dataset_url(key: str) -> str:
    """The registry URL, with https://s3.amazonaws.com replaced by $LOUPE_DATASETS_URL when that is set."""
    url = _dataset(key).url
    base = os.environ.get("LOUPE_DATASETS_URL")
    if base and url.startswith(S3_BASE):
        url = base.rstrip("/") + url[len(S3_BASE):]
    return url


def _offline(title: str, why: BaseException | str) -> UserError:
    why = why if isinstance(why, str) else plain_reason(why)  # never "[Errno -2] Name or service not known"
    return UserError(f"Could not download {title}: this computer seems to be offline or the server is "
                     f"unreachable ({why}). Loupe's built-in data sets work offline.")


def _fetch(url: str, part: Path, title: str, progress: Callable[[int, int | None], None] | None,
           timeout: float) -> None:
    """Stream url into part, 1 MiB at a time, reporting (bytes_done, total_or_None)."""
    net_errors = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except net_errors as e:
        if isinstance(e, urllib.error.HTTPError):
            e.close()
        raise _offline(title, e) from None
    with response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while True:
            try:
                chunk = response.read(CHUNK)
            except net_errors as e:
                raise _offline(title, e) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as e:
                raise UserError(f"Could not save {title}: {e.strerror or e}. Is the disk full?") from None
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise _offline(title, f"the download stopped after {done:,} of {total:,} bytes")


def _check_tar_member(member: tarfile.TarInfo, title: str) -> None:
    why = _bad_path_reason(member.name)
    if why is None and not (member.isfile() or member.isdir()):
        why = "is a link or special file, which Loupe does not accept"
    if why:
        raise UserError(f"The download of {title} was refused: the entry '{member.name}' {why}. "
                        "Nothing was extracted.")


def _extract_tar(archive: Path, dest_dir: Path, title: str) -> None:
    """Extract a (gzipped) tar into dest_dir, refusing unsafe members; dest_dir must be empty and disposable."""
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_tar_member(member, title)
                tar.extract(member, dest_dir, **kwargs)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error):
        raise UserError(f"The download of {title} is damaged (the archive cannot be unpacked). Try again.") from None


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


def download_dataset(key: str, progress: Callable[[int, int | None], None] | None = None,
                     root: Path | None = None, url: str | None = None, timeout: float = 30) -> Path:
    """Download and extract a fastai data set once; later calls return its folder without using the network.

    The archive is fetched from the registry URL, or `url` if given. When the environment variable
    LOUPE_DATASETS_URL is set (e.g. "http://mirror.local:8000"), it replaces "https://s3.amazonaws.com"
    in registry URLs, so a local mirror can serve the archives. `progress(bytes_done, total_or_None)`
    is called after every 1 MiB chunk; it may raise to cancel (nothing partial is left behind).
    An incomplete folder (no `.loupe-complete` marker) is deleted and downloaded again.
    """
    ds = _dataset(key)
    base = _datasets_root(root)
    dest = base / ds.folder
    with _lock_for(dest):
        if (dest / COMPLETE_MARKER).is_file():
            return dest
        url = url or dataset_url(key)
        filename = safe_folder_name(urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]),
                                    default=key.lower()) + ".tgz"
        downloads = base / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / filename
        part = downloads / (filename + ".part")

        # download (a finished archive left by an interrupted extraction is reused)
        if not archive.is_file():
            try:
                _fetch(url, part, ds.title, progress, timeout)
                os.replace(part, archive)
            except BaseException:
                part.unlink(missing_ok=True)
                raise

        # extract into a hidden temporary folder, mark complete, then move into place
        try:
            with _extraction_dir(base) as tmp:
                try:
                    _extract_tar(archive, tmp, ds.title)
                except UserError:
                    archive.unlink(missing_ok=True)  # untrustworthy: fetch it afresh next time
                    raise
                src = tmp / ds.folder if (tmp / ds.folder).is_dir() else tmp
                (src / COMPLETE_MARKER).write_text(url + "\n")
                if dest.exists():
                    shutil.rmtree(dest)
                os.rename(src, dest)
        except OSError as e:
            raise UserError(f"Could not unpack {ds.title}: {e.strerror or e}. Is the disk full?") from None
        archive.unlink(missing_ok=True)
    return dest
