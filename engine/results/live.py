"""Live prediction on a webcam stream: every frame gets the model's top classes drawn over it.

The video component calls `LiveStream.frame` from a thread of its own for each frame (one thread per stream,
which drops frames while the last one is still being handled). The model runs at most `max_fps` times a second
per stream on `LIVE_THREADS` CPU threads, so a window watching live leaves the other cores to a training run;
between predictions the last one is drawn again. The page reads `reading()` and `latest_frame()` from its own
thread, and `save_frame` turns the frame on screen into a shot of a camera data set ("That's wrong").
"""
from __future__ import annotations

import io
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from engine.data.camera import add_shot
from engine.errors import UserError
from engine.train.export import ExportedModel, predict

TOP_K = 3
CAMERA_SIZE = (320, 240)  # width, height the live view asks the camera for: the model sees 224 px or less, and a
# smaller frame is less video to decode and encode again on a 2-core laptop
MAX_PREDICTIONS_PER_S = 10.0  # per stream: the shown rate is at most this, and the CPU it takes is capped with it
LIVE_THREADS = 1  # torch threads of each stream's frame thread
FPS_WINDOW_S = 2.0  # predictions per second are counted over this long
JPEG_QUALITY = 92

# the drawn panel, in pixels of a 480-pixel-high frame (scaled with the frame's height)
PANEL_MARGIN, ROW_HEIGHT, BAR_WIDTH, TEXT_WIDTH = 8, 30, 160, 190
PANEL_COLOUR, BAR_BACK, BAR_COLOUR, TEXT_COLOUR = (0, 0, 0), (70, 70, 70), (255, 140, 0), (255, 255, 255)

_limited = threading.local()  # the thread count each stream thread has been set to
_threads_lock = threading.Lock()


def limit_threads_here(n: int) -> None:
    """Run torch on at most `n` threads in the calling thread; other threads, new ones included, keep their number."""
    with _threads_lock:  # two streams starting at once must not take each other's setting for the default
        default = torch.get_num_threads()
        torch.set_num_threads(n)
        # set_num_threads also becomes the number a thread starts with: a fresh thread puts the old default back,
        # which leaves this thread's own setting alone (torch keeps it per thread)
        restore = threading.Thread(target=torch.set_num_threads, args=(default,), name="loupe-threads-default")
        restore.start()
        restore.join()


@dataclass(frozen=True)
class LiveReading:
    """The newest prediction of a stream: its top classes, how many predictions so far, and their recent rate."""

    top: list[tuple[str, float]]
    count: int
    fps: float


def predict_frame(exported: ExportedModel, rgb: np.ndarray, k: int = TOP_K) -> list[tuple[str, float]]:
    """The k most likely classes of one RGB frame [H, W, 3] uint8, by the validation path (`export.predict`)."""
    with torch.no_grad():
        [top] = predict(exported, [Image.fromarray(rgb, "RGB")], k=k)
    return top


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def panel_layout(height: int) -> dict[str, int]:
    """The panel's sizes in pixels for a frame `height` pixels high: margin, row, bar and text widths."""
    scale = max(height, 120) / 480
    return {name: max(1, round(value * scale)) for name, value in
            (("margin", PANEL_MARGIN), ("row", ROW_HEIGHT), ("bar", BAR_WIDTH), ("text", TEXT_WIDTH))}


def draw_top(rgb: np.ndarray, top: list[tuple[str, float]], note: str = "") -> np.ndarray:
    """The frame with a panel at its top left: a bar and 'class  53%' per class, most likely first; `note` below."""
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    size = panel_layout(img.height)
    margin, row, bar = size["margin"], size["row"], size["bar"]
    font = _font(max(10, round(row * 0.6)))
    rows = len(top) + (1 if note else 0)
    if rows:
        draw.rectangle([0, 0, 3 * margin + bar + size["text"], margin + rows * row], fill=PANEL_COLOUR)
    for i, (name, prob) in enumerate(top):
        y0, y1 = margin + i * row, margin + (i + 1) * row - margin // 2 - 1
        filled = round(min(max(prob, 0.0), 1.0) * bar)
        draw.rectangle([margin, y0, margin + bar - 1, y1], fill=BAR_BACK)
        if filled:
            draw.rectangle([margin, y0, margin + filled - 1, y1], fill=BAR_COLOUR)
        draw.text((2 * margin + bar, y0), f"{name}  {prob:.0%}", fill=TEXT_COLOUR, font=font)
    if note:
        draw.text((margin, margin + len(top) * row), note, fill=TEXT_COLOUR, font=font)
    return np.asarray(img)


class LiveStream:
    """One window's live view: predicts frames at a capped rate, draws the newest prediction on every frame."""

    def __init__(self, exported: ExportedModel, max_fps: float = MAX_PREDICTIONS_PER_S, threads: int = LIVE_THREADS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exported, self.max_fps, self.threads, self.clock = exported, max_fps, threads, clock
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._reading: LiveReading | None = None
        self._times: deque[float] = deque()
        self._next_at = float("-inf")

    def use_model(self, exported: ExportedModel) -> None:
        """Predict with another model from the next frame on (the last reading is dropped: it was the old model's)."""
        with self._lock:
            self.exported, self._reading, self._next_at = exported, None, float("-inf")
            self._times.clear()

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """Handle one RGB frame [H, W, 3] uint8: predict it if one is due, and return it with the newest top classes."""
        now = self.clock()
        with self._lock:
            self._frame = rgb
            due = now >= self._next_at
            if due:
                self._next_at = now + 1.0 / self.max_fps
            exported = self.exported
        if due:
            if getattr(_limited, "threads", None) != self.threads:
                limit_threads_here(self.threads)
                _limited.threads = self.threads
            top = predict_frame(exported, rgb)
            with self._lock:
                if exported is self.exported:  # not a prediction of a model swapped out meanwhile
                    self._times.append(now)
                    while self._times and self._times[0] < now - FPS_WINDOW_S:
                        self._times.popleft()
                    count = (self._reading.count if self._reading else 0) + 1
                    self._reading = LiveReading(top=top, count=count, fps=self._rate())
        reading = self.reading()
        if reading is None:
            return draw_top(rgb, [], "…")
        return draw_top(rgb, reading.top, f"{reading.fps:.1f} predictions/s" if reading.fps else "")

    def _rate(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def reading(self) -> LiveReading | None:
        """The newest prediction, or None before the first."""
        with self._lock:
            return self._reading

    def latest_frame(self) -> np.ndarray | None:
        """The newest frame as the camera sent it (nothing drawn on it), or None before the first."""
        with self._lock:
            return self._frame


def frame_jpeg(rgb: np.ndarray) -> bytes:
    """An RGB frame as JPEG bytes, as the camera widget sends a shot."""
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def save_frame(stream: LiveStream, set_dir: Path, class_name: str) -> Path:
    """Save the frame on screen (as the camera sent it) into a class of a camera data set; returns the new shot."""
    rgb = stream.latest_frame()
    if rgb is None:
        raise UserError("There is no frame to save yet: start the camera first (the Start button under the video).")
    return add_shot(set_dir, class_name, frame_jpeg(rgb))
