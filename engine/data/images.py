"""Decode images of any colour mode to RGB and presize them once into uint8 pixels.

Many files are decoded by worker processes (`python -m engine.data.images`), so this module imports torch
only inside the functions that return tensors: torch takes seconds to import, numpy and PIL a fraction of one.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageOps

from engine.errors import plain_reason

if TYPE_CHECKING:
    import torch

    from engine.data.cache import MappedPixels

MAX_PIXELS = 100_000_000  # ~10k x 10k; larger images are listed as too large (JPEGs are decoded smaller instead)
LARGE_PIXELS = 16_000_000  # images over this decode one at a time, so a thread pool never holds several at once
JPEG_SCALES = (1, 2, 4, 8)  # libjpeg decodes at these fractions for free
PRESIZE_METHODS = ("crop", "squish")
CHUNK = 64  # files per work item: a process decodes them in one go; progress is reported per chunk

Progress = Callable[[int, int], None]

_IGNORE_BOMB_WARNING = ("ignore", None, Image.DecompressionBombWarning, None, 0)  # as warnings.filters holds it
_large_decode = threading.Lock()


def _quiet_bomb_warnings() -> None:
    """Silence PIL's DecompressionBombWarning: decode checks every size itself, so the warning is only noise."""
    # one real data set printed 35 lines of it. A filter, not catch_warnings (which is not thread-safe, and
    # decoding runs in threads), put back on each call because test runners restore the filter list
    if _IGNORE_BOMB_WARNING not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, P, RGBA, LA, CMYK, I;16, F…) to 8-bit RGB; transparency goes on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit and float images: stretch their own range to 0..255
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def _too_large_to_open() -> ValueError:
    return ValueError(f"too large to open safely (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels)")


def jpeg_scale(width: int, height: int, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> int | None:
    """The fraction (1, 2, 4 or 8) to decode a JPEG at: under max_pixels, and still covering draft×draft; None if none is."""
    fits = [s for s in JPEG_SCALES if width * height <= max_pixels * s * s and min(width, height) >= s]
    if not fits:
        return None
    scale = fits[0]
    if draft and min(width, height) > 2 * draft:  # as PIL's draft((draft, draft)) chooses
        scale = max(scale, max(s for s in JPEG_SCALES if min(width // draft, height // draft) >= s))
    return scale


def decode(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS, draft: int | None = None, *,
           keep_grey: bool = False) -> tuple[Image.Image, str, tuple[int, int]]:
    """Open, check the size before decoding, apply EXIF orientation; (RGB image, original mode, upright size).

    A JPEG over max_pixels is decoded at 1/2, 1/4 or 1/8 scale (free in libjpeg); other formats over it are
    refused. `draft` lets libjpeg decode a large JPEG at a reduced scale that still covers draft×draft pixels.
    `keep_grey`: an 8-bit greyscale ('L') image is returned as it is, not as RGB.
    Raises ValueError with a readable reason for files that are not usable images.
    """
    _quiet_bomb_warnings()
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:
        raise _too_large_to_open() from None
    except Exception as e:  # PIL raises many types for garbage input
        raise ValueError(f"not a readable image ({_why_unopened(e)})") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ValueError("has no pixels")
    scale = jpeg_scale(width, height, max_pixels, draft) if img.format == "JPEG" else 1
    if scale is None or (scale == 1 and width * height > max_pixels):
        raise ValueError(f"too large ({width}×{height} pixels; the limit is {max_pixels:,})")
    mode = img.mode
    try:
        with _large_decode if width * height > LARGE_PIXELS * scale * scale else nullcontext():
            if scale > 1:
                img.draft("RGB", (width // scale, height // scale))
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that turn the image a quarter
                width, height = height, width
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
            keep = img.mode == "RGB" or (keep_grey and img.mode == "L")
            return (img if keep else to_rgb(img)), mode, (width, height)
    except Image.DecompressionBombError:  # a GIF frame or TIFF tile bigger than the image says
        raise _too_large_to_open() from None
    except Exception:
        raise ValueError("corrupt or truncated (its picture data is damaged or ends early)") from None


def _why_unopened(e: Exception) -> str:
    """Why PIL could not open a file, in words (its exceptions' names mean nothing to a user)."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError)):
        return plain_reason(e)
    if isinstance(e, Image.UnidentifiedImageError):
        return "its content is not in a picture format Loupe knows"
    return "its content is damaged or not in a picture format Loupe knows"


def open_image(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """An image file as upright RGB; raises ValueError with a readable reason for bad files."""
    return decode(path, max_pixels, draft)[0]


def fit_to_box(img: Image.Image, box: int = 160) -> Image.Image:
    """A copy scaled to fit a box×box square, at least 1 px on each side: safe to show at any aspect ratio."""
    width, height = img.size
    scale = box / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == img.size:
        return img
    # small images (8×8 digits) are enlarged with crisp pixels, large ones shrunk smoothly
    return img.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)


def presize(img: Image.Image, size: int, method: str = "crop") -> Image.Image:
    """Square `size`×`size`: 'crop' scales the short side then centre-crops, 'squish' ignores aspect."""
    if method == "squish":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    if method == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    raise ValueError(f"unknown presize method {method!r}; use one of {PRESIZE_METHODS}")


def _load_presized(path: Path, size: int, method: str) -> tuple[np.ndarray, tuple[int, int], str]:
    """Decode one file to a [size, size, 3] uint8 array; also its original size and mode."""
    img, mode, original = decode(path, draft=size, keep_grey=True)
    # a grey image is presized before it becomes RGB: a third of the resizing, and the same pixels
    return np.asarray(presize(img, size, method).convert("RGB"), dtype=np.uint8), original, mode


class Decoded(NamedTuple):
    """What decoding one file found: its upright size and original mode, or why it could not be used."""

    width: int = 0
    height: int = 0
    mode: str = ""
    failure: str = ""  # empty when the file was decoded

    @property
    def ok(self) -> bool:
        return not self.failure


def _decode_rows(out: np.ndarray, paths: Sequence[str | Path], size: int, method: str) -> list[Decoded]:
    """Decode `paths` into the rows of `out` ([n, 3, size, size] uint8); failures are recorded, never raised."""
    found = []
    for k, path in enumerate(paths):
        try:
            arr, (width, height), mode = _load_presized(Path(path), size, method)
        except Exception as e:  # one bad file must not stop the others
            out[k] = 0
            found.append(Decoded(failure=str(e) if isinstance(e, ValueError) else f"unreadable ({plain_reason(e)})"))
            continue
        out[k] = arr.transpose(2, 0, 1)
        found.append(Decoded(width, height, mode))
    return found


def _decode_rows_into_file(filename: str, start: int, paths: list[str], size: int, method: str) -> list[Decoded]:
    """A work item: decode `paths` into rows start… of the pixel file (run in a worker process or thread)."""
    row = 3 * size * size
    out = np.memmap(filename, dtype=np.uint8, mode="r+", offset=start * row, shape=(len(paths), 3, size, size))
    try:
        return _decode_rows(out, paths, size, method)
    finally:
        del out  # unmapped; the rows are in the shared page cache, where the parent reads them


def default_workers() -> int:
    """Decode workers: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class _SharedFileLock:
    """A lock shared by a job's worker processes, through a file; filelock is imported only if a huge image needs it."""

    def __init__(self, path: str) -> None:
        self.path, self.lock = path, None

    def __enter__(self) -> None:
        if self.lock is None:
            from filelock import FileLock  # 80 ms: most jobs never get here

            self.lock = FileLock(self.path)
        self.lock.acquire()

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _worker_main() -> None:
    """A decode worker process: one work item per JSON line on stdin, its results as one JSON line on stdout."""
    global _large_decode
    _large_decode = _SharedFileLock(sys.argv[1])  # huge images decode one at a time across the workers
    print("ready", flush=True)
    for line in sys.stdin:
        filename, start, paths, size, method = json.loads(line)
        print(json.dumps(_decode_rows_into_file(filename, start, paths, size, method)), flush=True)


def _start_worker(lock_path: Path) -> subprocess.Popen:
    # a fresh interpreter that imports only this module: not a fork of the app (its threads, its torch), and
    # not multiprocessing, which runs the caller's main script again in every worker
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "engine.data.images", str(lock_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _in_worker_processes(filename: str, chunks: list[tuple[int, list[str]]], size: int, method: str,
                         workers: int) -> Iterator[list[Decoded]]:
    """Each chunk's results in order, decoded by a thread of this process and `workers` - 1 worker processes, each
    taking the next chunk when done with one (this process starts at once, while the workers start up). A worker
    that dies fails only the chunk it had."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in enumerate(chunks):
        todo.put(item)
    results = [Future() for _ in chunks]
    lock_dir = tempfile.mkdtemp(prefix="loupe-decode-")

    def next_chunk() -> tuple[int, tuple[int, list[str]]] | None:
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def decode_here() -> None:
        while (item := next_chunk()) is not None:
            k, (start, paths) = item
            try:
                results[k].set_result(_decode_rows_into_file(filename, start, paths, size, method))
            except Exception as e:
                results[k].set_exception(e)

    def launch() -> subprocess.Popen | None:
        """A worker that started and said so, or None where none can (this process then decodes its share)."""
        try:
            proc = _start_worker(Path(lock_dir) / "large.lock")
        except OSError:
            return None
        if proc.stdout.readline() == "ready\n":
            return proc
        proc.kill()
        proc.wait()
        return None

    def serve_a_worker() -> None:  # hands one worker process a chunk at a time
        proc = launch()
        try:
            while proc is not None and (item := next_chunk()) is not None:
                k, (start, paths) = item
                try:
                    proc.stdin.write(json.dumps([filename, start, paths, size, method]) + "\n")
                    proc.stdin.flush()
                    answer = proc.stdout.readline()
                except OSError:
                    answer = ""
                try:
                    if answer:
                        results[k].set_result([Decoded(*d) for d in json.loads(answer)])
                    else:  # it died on one of these files: they fail, a new worker takes the next chunk
                        code = proc.wait()
                        results[k].set_result([Decoded(failure=f"the decoder stopped on this file or one decoded with it "
                                                               f"(exit code {code})")] * len(paths))
                        proc = launch()
                except Exception as e:
                    results[k].set_exception(e)
        finally:
            if proc is not None:
                with suppress(OSError):
                    proc.stdin.close()  # the worker ends at the end of its input
                proc.wait()

    threads = [threading.Thread(target=decode_here, daemon=True)]
    threads += [threading.Thread(target=serve_a_worker, daemon=True) for _ in range(workers - 1)]
    for t in threads:
        t.start()
    try:
        for result in results:
            yield result.result()
    finally:
        while next_chunk() is not None:  # stopped early (an exception, a progress callback that raised): no more work
            pass
        for t in threads:
            t.join()
        shutil.rmtree(lock_dir, ignore_errors=True)


def presize_to_file(filename: str | Path, paths: Sequence[str | Path], size: int, method: str = "crop",
                    progress: Progress | None = None, workers: int | None = None, processes: bool = True) -> list[Decoded]:
    """Decode and presize `paths` into the uint8 file `filename` ([n, 3, size, size], created or truncated).

    `workers` decode CHUNK files at a time each and write their rows straight into the file: this process and
    `workers` - 1 worker processes (or `workers` threads if not `processes`); with one worker or one chunk it all
    happens in this thread. Progress is reported after each chunk, in order. Failures are recorded, never raised.
    """
    if method not in PRESIZE_METHODS:
        raise ValueError(f"unknown presize method {method!r}")
    n, filename = len(paths), str(filename)
    with open(filename, "wb") as f:
        f.truncate(n * 3 * size * size)  # zeros, where decoding fails
    chunks = [(start, [str(p) for p in paths[start:start + CHUNK]]) for start in range(0, n, CHUNK)]
    workers = min(workers or default_workers(), len(chunks))
    threads = ThreadPoolExecutor(workers) if workers > 1 and not processes else None
    if workers <= 1:
        results: Iterator[list[Decoded]] = (_decode_rows_into_file(filename, start, chunk, size, method)
                                            for start, chunk in chunks)
    elif processes:
        results = _in_worker_processes(filename, chunks, size, method, workers)
    else:
        results = (f.result() for f in [threads.submit(_decode_rows_into_file, filename, start, chunk, size, method)
                                        for start, chunk in chunks])
    found: list[Decoded] = []
    try:
        for (start, chunk), result in zip(chunks, results):
            found += result
            if progress is not None:
                progress(start + len(chunk), n)
    finally:
        if threads is not None:
            threads.shutdown(cancel_futures=True)
    return found


@dataclass
class PresizedImages:
    """All images of a data set decoded once: pixels, which ones failed and why, and their sizes."""

    pixels: torch.Tensor | MappedPixels  # [N, 3, size, size] uint8, in memory or from the disk cache; zeros where decoding failed
    ok: np.ndarray  # [N] bool
    sizes: np.ndarray  # [N, 2] original (width, height); 0 where failed
    modes: list[str]  # original PIL mode, '' where failed
    failures: dict[int, str] = field(default_factory=dict)  # index -> reason
    size: int = 0
    method: str = "crop"

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    @property
    def in_memory(self) -> bool:
        """True when the pixels are in this process's memory, False while they are read from the disk cache."""
        import torch

        return isinstance(self.pixels, torch.Tensor) or self.pixels.in_memory

    @classmethod
    def from_decoded(cls, pixels: torch.Tensor | MappedPixels, found: Sequence[Decoded], size: int,
                     method: str) -> PresizedImages:
        """Pixels with what decoding found for each file."""
        return cls(pixels=pixels, ok=np.array([d.ok for d in found], dtype=bool).reshape(len(found)),
                   sizes=np.array([(d.width, d.height) for d in found], dtype=np.int64).reshape(len(found), 2),
                   modes=[d.mode for d in found],
                   failures={i: d.failure for i, d in enumerate(found) if d.failure}, size=size, method=method)


def presize_all(
    paths: Sequence[Path],
    size: int,
    method: str = "crop",
    progress: Progress | None = None,
    workers: int | None = None,
) -> PresizedImages:
    """Decode and presize every path into memory (in worker processes when there is more than a chunk); failures
    are recorded, never raised."""
    import torch

    if method not in PRESIZE_METHODS:
        raise ValueError(f"unknown presize method {method!r}")
    n = len(paths)
    if min(workers or default_workers(), -(-n // CHUNK)) <= 1:
        pixels = np.zeros((n, 3, size, size), dtype=np.uint8)
        found: list[Decoded] = []
        for start in range(0, n, CHUNK):
            found += _decode_rows(pixels[start:start + CHUNK], paths[start:start + CHUNK], size, method)
            if progress is not None:
                progress(min(start + CHUNK, n), n)
    else:
        with tempfile.TemporaryDirectory(prefix="loupe-presize-") as tmp:
            filename = Path(tmp) / "pixels.u8"
            found = presize_to_file(filename, paths, size, method, progress, workers)
            pixels = np.fromfile(filename, dtype=np.uint8).reshape(n, 3, size, size)
    return PresizedImages.from_decoded(torch.from_numpy(pixels), found, size, method)


def to_pil(x: torch.Tensor) -> Image.Image:
    """A [3, H, W] image tensor (uint8, or float in [0, 1]) to a PIL RGB image."""
    import torch

    x = x.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB")


if __name__ == "__main__":
    _worker_main()
