"""How fast Loupe feeds images: raw decode-and-resize per item vs. presized cache + batch augmentation.

Prints figures only; asserts nothing about speed. Run from the repository root:

    .venv/bin/python bench/data_bench.py [--n-images 512] [--seconds 5] [--device cpu|cuda|mps]

Two real data sets, written to a temporary folder and removed afterwards:
  - size 64 (presize 96): the built-in digits, 1,797 PNGs of 28×28 named like seven_123.png;
  - size 224 (presize 320): `--n-images` JPEGs of 500×375, the same digits upscaled onto noisy
    coloured backgrounds, named like seven_1.jpg so the same label rule reads them.

Stages, each timed by repeating until `--seconds` are spent (at least one full pass of its unit),
after one untimed warm-up:
  - decode+resize: `open_image` + `presize` to the model size, one image at a time, one thread:
    what a per-item pipeline pays for every image of every epoch (the reference);
  - presize_all: the thread-pooled decode to the presize that Loupe pays once per data set;
  - train / valid: iterating `DataLoaders.train()` / `.valid()`, i.e. cached uint8 pixels → index →
    device → `augment_batch` (fastai default `AugSettings`) or `resize_batch` → `normalize`.
Files are read from the OS page cache (just written), so decode figures exclude disk time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.augment import AugSettings  # noqa: E402
from engine.builtin import BUILTINS, DIGIT_WORDS, digit_images, ensure_builtin  # noqa: E402
from engine.data import DataConfig, DataLoaders, load_items  # noqa: E402
from engine.device import default_device  # noqa: E402
from engine.images import open_image, presize, presize_all  # noqa: E402
from engine.labels import LabelRule  # noqa: E402

JPEG_WIDTH, JPEG_HEIGHT = 500, 375
PRESIZE_WORKERS = min(8, 2 * (os.cpu_count() or 1))  # presize_all's own default


def sync(device: torch.device) -> None:
    """Wait for queued device work so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def write_photo_digits(dest: Path, n: int, seed: int = 0) -> None:
    """n JPEGs of 500×375: a digit, upscaled and coloured, on a noisy colour gradient; seven_1.jpg etc."""
    images, targets = digit_images(size=28)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, JPEG_WIDTH, dtype=np.float32)[None, :, None]  # [1, W, 1]
    for i in range(n):
        k = int(rng.integers(len(targets)))
        c0, c1, fg = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
        canvas = c0 + (c1 - c0) * ramp  # [1, W, 3] horizontal gradient
        canvas = np.repeat(canvas, JPEG_HEIGHT, axis=0)  # [H, W, 3]
        side = int(rng.integers(200, 340))
        digit = Image.fromarray(images[k], "L").resize((side, side), Image.Resampling.BICUBIC)
        mask = np.asarray(digit, dtype=np.float32)[..., None] / 255.0  # [side, side, 1]
        top, left = int(rng.integers(0, JPEG_HEIGHT - side + 1)), int(rng.integers(0, JPEG_WIDTH - side + 1))
        patch = canvas[top:top + side, left:left + side]
        canvas[top:top + side, left:left + side] = patch * (1 - mask) + fg * mask
        canvas += 12.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
        pixels = np.clip(canvas, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(dest / f"{DIGIT_WORDS[targets[k]]}_{i}.jpg", quality=90)


def time_until(budget: float, step, device: torch.device) -> tuple[int, float]:
    """Call step() (returns images done) until `budget` seconds are spent, at least once: (images, seconds)."""
    n, start = 0, time.perf_counter()
    while True:
        n += step()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return n, elapsed


def bench_size(config: DataConfig, seconds: float, device: torch.device) -> list[tuple[str, int, float]]:
    """Rows (stage, size, images/s) for one data set and one model size."""
    cpu = torch.device("cpu")
    items = load_items(config)
    paths = items.scanned_paths

    # decode+resize: one image at a time, single thread, cycling over the files
    cursor = iter(range(0))

    def decode_one() -> int:
        nonlocal cursor
        i = next(cursor, None)
        if i is None:
            cursor = iter(range(len(paths)))
            i = next(cursor)
        presize(open_image(paths[i]), config.size, config.method)
        return 1

    decode_one()  # warm-up
    decoded, t_decode = time_until(seconds, decode_one, cpu)

    # presize_all: the whole data set, thread pool, to the presize
    presize_all(paths[:64], config.presize, config.method)  # warm-up
    images = None

    def presize_everything() -> int:
        nonlocal images
        images = presize_all(paths, config.presize, config.method)
        return len(paths)

    presized, t_presize = time_until(seconds, presize_everything, cpu)
    if images.failures:
        raise RuntimeError(f"{len(images.failures)} images failed to decode: {next(iter(images.failures.values()))}")

    # batches: the per-epoch cost in Loupe
    dls = DataLoaders(items, images, config.size, bs=config.bs, aug=config.aug, device=device, seed=0)

    def one_pass(batches) -> int:
        n = 0
        for x, _ in batches:
            n += x.shape[0]
        return n

    next(iter(dls.train()))  # warm-up: first batch allocates and compiles kernels
    next(iter(dls.valid()))
    sync(device)
    trained, t_train = time_until(seconds, lambda: one_pass(dls.train()), device)
    validated, t_valid = time_until(seconds, lambda: one_pass(dls.valid()), device)

    print(f"  size {config.size}: {len(paths):,} images, presize {config.presize}, "
          f"train {dls.n_train:,} / valid {dls.n_valid:,}, bs {config.bs}", flush=True)
    return [
        ("decode+resize, 1 thread", config.size, decoded / t_decode),
        (f"presize_all to {config.presize}, {PRESIZE_WORKERS} threads", config.size, presized / t_presize),
        ("train batches (augment)", config.size, trained / t_train),
        ("valid batches (resize)", config.size, validated / t_valid),
    ]


def print_table(rows: list[tuple[str, int, float]]) -> None:
    """stage, size, images/s, and the rate relative to decode+resize at the same size."""
    reference = {size: rate for stage, size, rate in rows if stage.startswith("decode")}
    print(f"\n{'stage':<36} {'size':>4} {'images/s':>10} {'÷ decode':>9}")
    for stage, size, rate in rows:
        print(f"{stage:<36} {size:>4} {rate:>10,.0f} {rate / reference[size]:>8.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=512, help="JPEGs of 500×375 for the 224 px case")
    parser.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps; default: engine.device.default_device()")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()

    print(f"device {device}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"cpu cores {os.cpu_count()}, {args.seconds:g} s per measurement", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="loupe-data-bench-"))
    try:
        digits = BUILTINS["digits-names"]
        digits_root = ensure_builtin("digits-names", root=workdir / "builtin")
        photos_root = workdir / "photos"
        photos_root.mkdir()
        start = time.perf_counter()
        write_photo_digits(photos_root, args.n_images)
        print(f"  wrote {args.n_images} JPEGs of {JPEG_WIDTH}×{JPEG_HEIGHT} in {time.perf_counter() - start:.1f} s",
              flush=True)

        small = DataConfig(root=str(digits_root), name="digits", label=digits.label_rule, split=digits.split_rule,
                           size=64, presize=96, bs=64, aug=AugSettings())
        large = DataConfig(root=str(photos_root), name="photo digits",
                           label=LabelRule(kind="regex", pattern=r"^(.+)_\d+\.jpg$", on="name"),
                           split=digits.split_rule, size=224, presize=320, bs=64, aug=AugSettings())
        rows = bench_size(small, args.seconds, device) + bench_size(large, args.seconds, device)
        print_table(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
