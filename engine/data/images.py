"""Decode one image of any colour mode to RGB and presize it into uint8 pixels; what decoding found for each file.

The decode pool's worker processes (`engine.data.decode_pool`) import this module, so it imports torch only inside
the functions that return tensors: torch takes seconds to import, numpy and PIL a fraction of one. It imports no
other module that reads pixels: the pool and the disk cache ask it for rows, it never calls back.
"""
from __future__ import annotations

import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, NamedTuple, Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps

from engine.errors import plain_reason

if TYPE_CHECKING:
    import torch

MAX_PIXELS = 100_000_000  # ~10k x 10k; larger images are listed as too large (JPEGs are decoded smaller instead)
LARGE_PIXELS = 16_000_000  # images over this decode one at a time, so a thread pool never holds several at once
JPEG_SCALES = (1, 2, 4, 8)  # libjpeg decodes at these fractions for free
PRESIZE_METHODS = ("crop", "squish")

Progress = Callable[[int, int], None]

_IGNORE_BOMB_WARNING = ("ignore", None, Image.DecompressionBombWarning, None, 0)  # as warnings.filters holds it
_large_decode: AbstractContextManager = threading.Lock()  # held while a huge image decodes


def use_large_decode_lock(lock: AbstractContextManager) -> None:
    """Decode huge images under `lock` (a decode worker shares one with the other workers, through a file)."""
    global _large_decode
    _large_decode = lock


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


def decode_rows(out: np.ndarray, paths: Sequence[str | Path], size: int, method: str) -> list[Decoded]:
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


def decode_rows_into_file(filename: str, start: int, paths: list[str], size: int, method: str) -> list[Decoded]:
    """A work item: decode `paths` into rows start… of the pixel file (run in a worker process or thread)."""
    row = 3 * size * size
    out = np.memmap(filename, dtype=np.uint8, mode="r+", offset=start * row, shape=(len(paths), 3, size, size))
    try:
        return decode_rows(out, paths, size, method)
    finally:
        del out  # unmapped; the rows are in the shared page cache, where the parent reads them


class PixelRows(Protocol):
    """Presized pixels [N, 3, P, P] uint8 kept outside this process's memory (the disk cache's mapped row files),
    indexed like the tensor they stand for."""

    shape: torch.Size

    @property
    def in_memory(self) -> bool: ...

    def __len__(self) -> int: ...

    def numel(self) -> int: ...

    def __getitem__(self, index) -> torch.Tensor: ...


@dataclass
class PresizedImages:
    """All images of a data set decoded once: pixels, which ones failed and why, and their sizes."""

    pixels: torch.Tensor | PixelRows  # [N, 3, size, size] uint8, in memory or from the disk cache; zeros where decoding failed
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
    def from_decoded(cls, pixels: torch.Tensor | PixelRows, found: Sequence[Decoded], size: int,
                     method: str) -> PresizedImages:
        """Pixels with what decoding found for each file."""
        return cls(pixels=pixels, ok=np.array([d.ok for d in found], dtype=bool).reshape(len(found)),
                   sizes=np.array([(d.width, d.height) for d in found], dtype=np.int64).reshape(len(found), 2),
                   modes=[d.mode for d in found],
                   failures={i: d.failure for i, d in enumerate(found) if d.failure}, size=size, method=method)


def to_pil(x: torch.Tensor) -> Image.Image:
    """A [3, H, W] image tensor (uint8, or float in [0, 1]) to a PIL RGB image."""
    import torch

    x = x.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB")

