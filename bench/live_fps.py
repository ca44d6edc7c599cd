"""How many frames a second the Camera page's Live view predicts, through its own per-frame function, no browser.

Prints figures only; asserts nothing about speed. Run from the repository root:

    .venv/bin/python bench/live_fps.py [--seconds 5] [--arch small] [--size 224]

Frames are 320×240 RGB (`CAMERA_SIZE`, what the Live view asks the browser for): a moving colour gradient with noise.
Each goes through `engine.results.live.LiveStream.frame` in a thread of its own, as streamlit-webrtc's frame
thread calls it (one torch thread per stream, the model on the CPU), with a model built as a camera run's is
(`--size` 224 px, presize 460: a camera data set's defaults; the weights do not change the speed).

1. One stream predicting every frame (no rate cap): predictions per second, the figure the README gives.
2. Drawing only (the newest prediction drawn again, as between predictions): frames per second.
3. A training loop (the same small model, bs 64 at 64 px, on its own thread with the other core) alone, then
   while one and two streams watch at the page's capped rate: training steps per second and the streams' rates.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.data.augment import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from engine.results.live import CAMERA_SIZE, MAX_PREDICTIONS_PER_S, LiveStream  # noqa: E402
from engine.spec import default_presize  # noqa: E402
from engine.train.device import cpu_name  # noqa: E402
from engine.train.export import ExportedModel  # noqa: E402
from engine.train.models import create_model  # noqa: E402

CLASSES = ["thumbs-up", "thumbs-down", "nothing"]


def frames(n: int = 30, w: int = CAMERA_SIZE[0], h: int = CAMERA_SIZE[1]) -> list[np.ndarray]:
    """`n` camera-like frames: a gradient that moves, with noise."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    out = []
    for i in range(n):
        base = np.concatenate([(x + 8 * i) % 256 + 0 * y, (y + 4 * i) % 256 + 0 * x, (x + y) / 2 + 0 * x], axis=2)
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return out


def exported_model(arch: str, size: int) -> ExportedModel:
    model, _ = create_model(arch, len(CLASSES), pretrained=False)
    prep = {"arch": arch, "n_classes": len(CLASSES), "size": size, "presize": default_presize(size), "method": "crop",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return ExportedModel(model=model.eval(), classes=CLASSES, preprocessing=prep)


def watch(stream: LiveStream, pictures: list[np.ndarray], stop: threading.Event, counts: list[int],
          frame_interval: float = 0.0) -> None:
    """Feed frames to a stream until `stop`, as the frame thread does (at a camera's pace if `frame_interval`)."""
    i = 0
    while not stop.is_set():
        stream.frame(pictures[i % len(pictures)])
        counts[0] += 1
        i += 1
        if frame_interval:
            time.sleep(frame_interval)  # a camera's frames arrive at their own pace


def timed_stream(stream: LiveStream, pictures: list[np.ndarray], seconds: float) -> tuple[float, float]:
    """(frames/s, predictions/s) of one stream fed as fast as it takes frames, on its own thread."""
    stop, counts = threading.Event(), [0]
    t = threading.Thread(target=watch, args=(stream, pictures, stop, counts))
    start = time.perf_counter()
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    elapsed = time.perf_counter() - start
    reading = stream.reading()
    return counts[0] / elapsed, (reading.count if reading else 0) / elapsed


def train_steps(stop: threading.Event, counts: list[int], threads: int) -> None:
    """The small model's training steps at bs 64, 64 px, until `stop`."""
    torch.set_num_threads(threads)
    model, _ = create_model("small", 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 3, 64, 64), torch.randint(0, 10, (64,))
    while not stop.is_set():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        counts[0] += 1


def training_with_streams(exported: ExportedModel, pictures: list[np.ndarray], n_streams: int, seconds: float,
                          train_threads: int) -> tuple[float, list[float]]:
    """Training steps/s while `n_streams` streams watch at the page's capped rate, and each stream's predictions/s."""
    stop = threading.Event()
    steps = [0]
    trainer = threading.Thread(target=train_steps, args=(stop, steps, train_threads))
    streams = [LiveStream(exported) for _ in range(n_streams)]
    watchers = [threading.Thread(target=watch, args=(s, pictures, stop, [0], 1 / 30)) for s in streams]
    trainer.start()
    time.sleep(1.0)  # past the first steps' warm-up
    steps[0] = 0
    start = time.perf_counter()
    for w in watchers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for t in [trainer, *watchers]:
        t.join()
    elapsed = time.perf_counter() - start
    return steps[0] / elapsed, [(s.reading().count if s.reading() else 0) / elapsed for s in streams]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each measurement runs")
    parser.add_argument("--arch", default="small", help="small | resnet18 | resnet34 | resnet50")
    parser.add_argument("--size", type=int, default=224, help="the side of the images the model sees")
    parser.add_argument("--train-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads of the training loop in part 3 (Loupe's background runs leave one core)")
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}; "
          f"{args.arch} at {args.size} px (presize {default_presize(args.size)}), frames {CAMERA_SIZE[0]}×{CAMERA_SIZE[1]}")
    exported, pictures = exported_model(args.arch, args.size), frames()
    LiveStream(exported, max_fps=float("inf")).frame(pictures[0])  # warm-up

    fps, preds = timed_stream(LiveStream(exported, max_fps=float("inf")), pictures, args.seconds)
    print(f"1. predicting every frame, one stream, one torch thread: {preds:.1f} predictions/s ({fps:.1f} frames/s)")
    stream = LiveStream(exported, max_fps=1e-9)  # one prediction, then only drawing
    fps, _ = timed_stream(stream, pictures, args.seconds)
    print(f"2. drawing the newest prediction only: {fps:.1f} frames/s")

    alone, _ = training_with_streams(exported, pictures, 0, args.seconds, args.train_threads)
    print(f"3. training ({args.train_threads} thread(s)) alone: {alone:.1f} steps/s")
    for n in (1, 2):
        steps, rates = training_with_streams(exported, pictures, n, args.seconds, args.train_threads)
        shown = ", ".join(f"{r:.1f}" for r in rates)
        print(f"   with {n} stream(s) watching (at most {MAX_PREDICTIONS_PER_S:.0f} predictions/s each): "
              f"{steps:.1f} steps/s ({steps / alone:.0%} of alone); predictions/s per stream: {shown}")


if __name__ == "__main__":
    main()
