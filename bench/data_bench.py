"""How fast Loupe gets pixels: the cold decode, the disk cache after a restart, and batches from memory or the cache.

Prints figures only; asserts nothing about speed. Run from the repository root:

    .venv/bin/python bench/data_bench.py [--n-small 10000] [--n-photos 750] [--restart-images 10000] [--repeats 3]

Data, written to a temporary folder (LOUPE_HOME too, so the real cache is untouched) and removed afterwards:
  - small: `--n-small` PNGs of 28×28 (hard links to the built-in 1,797 digits), presized to 96 (64 px batches);
  - photos: `--n-photos` JPEGs of 500×375 (Pets-sized): a digit, upscaled and coloured, on a noisy colour
    gradient, named like seven_1.jpg; presized to 320 (224 px batches): 750 photos are 220 MB of pixels.

1. Cold decode, each way `--repeats` times (the best kept: other programs share the machine), files in the OS
   page cache, worker start-up included: one thread (the reference, `presize_to_file(workers=1)`); the thread
   pool presize_all used before (a future per file); threads, 64 files per work item; this process and worker
   processes, 64 files per work item. CPU: this process's and its workers' CPU ms per image; cores busy: CPU
   seconds per wall second (other programs' load caps it); × 1 thread: images/s against the reference.
   Then JPEG draft mode: photos to 128 px (libjpeg decodes at 1/2) against a full decode.
2. Training, photos: one epoch of batches (augmented to 224, bs 64) and the first `--train-batches` training
   steps (the small model), pixels in memory, then with a 64 MB memory budget (gathered from the mapped cache
   files): page cache warm, and dropped before each run (posix_fadvise), each with and without prefetching.
3. Restart: `--restart-images` files (links to the photos) presized to `--restart-presize` and cached; then a
   fresh process does what the Data page does after a restart, up to its first show_batch, timed step by step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.data.augment import AugSettings  # noqa: E402
from engine.data.builtin import BUILTINS, DIGIT_WORDS, digit_images, ensure_builtin  # noqa: E402
from engine.data.loaders import DataLoaders, PresizeCache, label_items  # noqa: E402
from engine.data.decode_pool import default_workers, presize_to_file  # noqa: E402
from engine.data.images import _load_presized, open_image, presize  # noqa: E402
from engine.data.labels import LabelRule  # noqa: E402
from engine.train.learner import Learner  # noqa: E402
from engine.train.models import create_model  # noqa: E402
from engine.data.sources import scan_folder  # noqa: E402

JPEG_WIDTH, JPEG_HEIGHT = 500, 375
PHOTO_LABEL = LabelRule(kind="regex", pattern=r"^(.+)_\d+\.jpg$", on="name")
OLD_POOL_THREADS = min(8, 2 * (os.cpu_count() or 1))  # what presize_all's thread pool used


def write_photo_digits(dest: Path, n: int, seed: int = 0) -> None:
    """n JPEGs of 500×375: a digit, upscaled and coloured, on a noisy colour gradient; seven_1.jpg etc."""
    images, targets = digit_images(size=28)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, JPEG_WIDTH, dtype=np.float32)[None, :, None]  # [1, W, 1]
    for i in range(n):
        k = int(rng.integers(len(targets)))
        c0, c1, fg = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
        canvas = np.repeat(c0 + (c1 - c0) * ramp, JPEG_HEIGHT, axis=0)  # [H, W, 3] horizontal gradient
        side = int(rng.integers(200, 340))
        digit = Image.fromarray(images[k], "L").resize((side, side), Image.Resampling.BICUBIC)
        mask = np.asarray(digit, dtype=np.float32)[..., None] / 255.0  # [side, side, 1]
        top, left = int(rng.integers(0, JPEG_HEIGHT - side + 1)), int(rng.integers(0, JPEG_WIDTH - side + 1))
        patch = canvas[top:top + side, left:left + side]
        canvas[top:top + side, left:left + side] = patch * (1 - mask) + fg * mask
        canvas += 12.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
        pixels = np.clip(canvas, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(dest / f"{DIGIT_WORDS[targets[k]]}_{i}.jpg", quality=90)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the decode workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(repeats: int, run) -> tuple[float, float]:
    """(wall, cpu) seconds of the fastest of `repeats` runs of run()."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        cpu, start = cpu_seconds(), time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - start, cpu_seconds() - cpu))
    return best


SPIN = "n = 0\nfor i in range(10_000_000):\n    n += i"


def parallel_capacity(workers: int, repeats: int) -> float:
    """How many one-process rates `workers` processes of pure CPU work reach on this machine now (others' load
    included): the most any way of decoding can gain over one thread here."""
    def spin(n: int) -> float:
        start = time.perf_counter()
        for proc in [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]:
            proc.wait()
        return time.perf_counter() - start

    one = many = float("inf")
    for _ in range(repeats):
        one, many = min(one, spin(1)), min(many, spin(workers))
    return workers * one / many


def old_thread_pool(paths: list[Path], size: int) -> None:
    """What presize_all did before: one future per file in a thread pool, each writing into a tensor."""
    pixels = torch.zeros((len(paths), size, size, 3), dtype=torch.uint8)

    def work(i: int) -> None:
        arr, _, _ = _load_presized(paths[i], size, "crop")
        pixels[i] = torch.from_numpy(np.array(arr))

    with ThreadPoolExecutor(OLD_POOL_THREADS) as pool:
        list(pool.map(work, range(len(paths))))
    pixels.permute(0, 3, 1, 2).contiguous()


def bench_decode(name: str, paths: list[Path], size: int, scratch: Path, repeats: int) -> list[tuple]:
    """Rows (data, way, images/s, CPU ms per image, cores kept busy, ratio to one thread)."""
    workers = default_workers()
    out = scratch / "rows.u8"
    ways = {
        "1 thread (reference)": lambda: presize_to_file(out, paths, size, workers=1),
        f"thread pool, a future per file, {OLD_POOL_THREADS} threads (before)": lambda: old_thread_pool(paths, size),
        f"threads, 64 files per item, {workers} threads": lambda: presize_to_file(out, paths, size, workers=workers,
                                                                               processes=False),
        f"processes: this one + {workers - 1} worker(s), 64 files per item": lambda: presize_to_file(out, paths, size,
                                                                                                   workers=workers),
    }
    presize_to_file(out, paths[:64], size, workers=1)  # warm-up: files into the page cache
    timed = {way: (float("inf"), 0.0) for way in ways}
    for _ in range(repeats):  # round robin, so a busy moment on a shared machine hits every way alike
        for way, run in ways.items():
            timed[way] = min(timed[way], best_of(1, run))
    reference = len(paths) / timed["1 thread (reference)"][0]
    return [(f"{name} → {size}", way, len(paths) / wall, 1000 * cpu / len(paths), cpu / wall, len(paths) / wall / reference)
            for way, (wall, cpu) in timed.items()]


def bench_draft(paths: list[Path], size: int, repeats: int) -> None:
    """Photos to a presize where libjpeg can decode at 1/2: draft against a full decode, one thread."""
    full = lambda: [presize(open_image(p), size) for p in paths]  # noqa: E731 (open_image: no draft)
    draft = lambda: [_load_presized(p, size, "crop") for p in paths]  # noqa: E731
    t_full = t_draft = float("inf")
    for _ in range(repeats):
        t_full, t_draft = min(t_full, best_of(1, full)[0]), min(t_draft, best_of(1, draft)[0])
    diffs = [np.abs(np.asarray(presize(open_image(p), size), dtype=np.int16) - _load_presized(p, size, "crop")[0])
             for p in paths[:50]]
    print(f"\nJPEG draft mode, {len(paths)} photos of {JPEG_WIDTH}×{JPEG_HEIGHT} → {size}, 1 thread: "
          f"full decode {len(paths) / t_full:,.0f} img/s, draft {len(paths) / t_draft:,.0f} img/s "
          f"({t_full / t_draft:.1f}×); difference to the full decode over 50 images: mean "
          f"{np.mean([d.mean() for d in diffs]):.2f}, 99th percentile {np.percentile(np.concatenate([d.ravel() for d in diffs]), 99):.0f}, "
          f"max {max(int(d.max()) for d in diffs)} (of 255)")


class NoPrefetch(DataLoaders):
    """DataLoaders gathering each batch when it is asked for, as before."""

    def _prefetched(self, batches):
        for idx in batches:
            yield idx, self._gather(idx).to(self.device)


def drop_page_cache(images) -> None:
    """Ask the OS to forget the cache files' pages, so the next reads come from the disk (pages still mapped stay)."""
    for rows in images.pixels.maps:
        with open(rows.filename, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def bench_training(items, presize: int, size: int, repeats: int, train_batches: int) -> None:
    """Batches and training steps per second, pixels in memory vs. read from the mapped cache (64 MB budget)."""
    os.environ.pop("LOUPE_RAM_BUDGET_MB", None)
    in_memory = PresizeCache().get(items.scanned_paths, presize)
    if not isinstance(in_memory.pixels, torch.Tensor):
        in_memory.pixels.load()
    torch.manual_seed(0)
    model, _ = create_model("small", len(items.classes))

    def mapped():  # opened again each time: new mappings, so pages dropped from the page cache are read from disk
        os.environ["LOUPE_RAM_BUDGET_MB"] = "64"
        try:
            return PresizeCache().get(items.scanned_paths, presize)
        finally:
            del os.environ["LOUPE_RAM_BUDGET_MB"]

    cases = {"in memory": (lambda: in_memory, DataLoaders, False),
             "mapped (64 MB budget), page cache warm": (mapped, DataLoaders, False),
             "  the same without the prefetch thread": (mapped, NoPrefetch, False)}
    if hasattr(os, "posix_fadvise"):
        cases["mapped, page cache dropped before each run"] = (mapped, DataLoaders, True)
        cases["  the same without the prefetch thread "] = (mapped, NoPrefetch, True)
    best = {label: [float("inf"), float("inf")] for label in cases}
    n_epoch = n_steps = 0
    for _ in range(repeats):  # round robin, so a busy moment on a shared machine hits every case alike
        for label, (images_of, kind, cold) in cases.items():
            for k in range(2):  # 0: one epoch of batches; 1: the first train_batches training steps
                images = images_of()
                if cold:
                    drop_page_cache(images)
                dls = kind(items, images, size=size, bs=64, aug=AugSettings(), seed=0)
                learn = Learner(model, dls)
                start = time.perf_counter()
                for i, (x, y) in enumerate(dls.train()):
                    if k == 1:
                        learn.train_step(x, y)
                        if i + 1 == train_batches:
                            break
                best[label][k] = min(best[label][k], time.perf_counter() - start)
                n_epoch, n_steps = dls.n_train // dls.bs * dls.bs, min(train_batches, dls.n_train // dls.bs) * dls.bs
                del dls, learn, images
    print(f"\nTraining batches, {len(items.scanned):,} photos presized to {presize} "
          f"({in_memory.nbytes / 1024**2:,.0f} MB of pixels), size {size}, bs 64, augmented, best of {repeats}; "
          f"batches: one epoch ({n_epoch} images), train: the first {n_steps} images' steps (small model), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'pixels':<42} {'batches img/s':>14} {'÷ memory':>9} {'train img/s':>12} {'÷ memory':>9}")
    ref = best["in memory"]
    for label, (t_epoch, t_steps) in best.items():
        print(f"{label:<42} {n_epoch / t_epoch:>14,.0f} {ref[0] / t_epoch:>8.0%} {n_steps / t_steps:>12,.1f} "
              f"{ref[1] / t_steps:>8.0%}")


def linked(folder: Path, sources: list[Path], n: int) -> list[Path]:
    """n files in `folder`: hard links to the sources in turn, named so the digits' label rule reads them."""
    folder.mkdir()
    for i in range(n):
        src = sources[i % len(sources)]
        os.link(src, folder / f"{src.stem.split('_')[0]}_{100000 + i}{src.suffix}")
    return sorted(scan_folder(folder).images)


RESTART = """
import json, os, sys, time
t0 = time.perf_counter()
import torch
from engine.data.builtin import BUILTINS
from engine.data.loaders import DataLoaders, PresizeCache, health_report, label_items
from engine.data.labels import LabelRule
from engine.data.sources import scan_folder
from engine.data.augment import AugSettings
times = {"imports": time.perf_counter() - t0}
def step(name, fn):
    start = time.perf_counter(); out = fn(); times[name] = time.perf_counter() - start; return out
root, presize = sys.argv[1], int(sys.argv[2])
scan = step("scan folder", lambda: scan_folder(root))
label = LabelRule(kind="regex", pattern=r"^(.+)_\\d+\\.jpg$", on="name")
items = step("label and split", lambda: label_items(scan, label, BUILTINS["digits-names"].split_rule))
cache = PresizeCache()
images = step("cache.get", lambda: cache.get(items.scanned_paths, presize))
step("health report", lambda: health_report(items, images))
dls = step("DataLoaders", lambda: DataLoaders(items, images, size=224, bs=64, aug=AugSettings(), seed=0))
step("first show_batch (9)", lambda: dls.show_batch(9))
if not isinstance(images.pixels, torch.Tensor) and images.pixels.keep_in_memory:
    step("(then training's background copy into memory)", images.pixels.load)
print(json.dumps({"times": times, "status": cache.last_get.status, "in_memory": images.in_memory}))
"""


def bench_restart(photos: Path, workdir: Path, n: int, presize: int) -> None:
    """Cache n files (links to the photos), then time a fresh process up to its first show_batch."""
    folder = workdir / "restart"
    paths = linked(folder, sorted(photos.glob("*.jpg")), n)
    cache, start = PresizeCache(), time.perf_counter()
    images = cache.get(paths, presize)
    print(f"\nRestart: {n:,} files presized to {presize} ({images.nbytes / 1024**3:.1f} GB), cold decode "
          f"{time.perf_counter() - start:.1f} s ({cache.last_get.status}, {n / cache.last_get.decode_s:,.0f} img/s)")
    del images, cache
    budgets = {"default memory budget": None, "memory budget 100 GB (copied into memory by training)": "102400"}
    for label, budget in budgets.items():
        env = {k: v for k, v in os.environ.items() if k != "LOUPE_RAM_BUDGET_MB"}
        if budget:
            env["LOUPE_RAM_BUDGET_MB"] = budget
        out = subprocess.run([sys.executable, "-c", RESTART, str(folder), str(presize)], env=env, text=True,
                             capture_output=True, cwd=Path(__file__).resolve().parents[1], check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        times = result["times"]
        page = sum(t for k, t in times.items() if k not in ("imports",) and not k.startswith("("))
        print(f"  a fresh process, {label}: cache {result['status']}, {'in memory' if result['in_memory'] else 'mapped'}; "
              f"scan → first show_batch {page:.2f} s (imports {times['imports']:.1f} s, not counted)")
        for k, t in times.items():
            if k != "imports":
                print(f"      {k:<44} {t:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-photos", type=int, default=750, help="JPEGs of 500×375 (750: 230 MB at presize 320)")
    parser.add_argument("--n-small", type=int, default=10_000, help="28×28 PNGs (links to the 1,797 digits)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--train-batches", type=int, default=4, help="training steps timed per run")
    parser.add_argument("--restart-images", type=int, default=10_000, help="files of the restart test; 0 skips it")
    parser.add_argument("--restart-presize", type=int, default=460, help="presize of the restart test (fastai's for 224)")
    parser.add_argument("--sections", default="decode,train,restart", help="which parts to run, comma-separated")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="loupe-data-bench-"))
    os.environ["LOUPE_HOME"] = str(workdir / "home")
    try:
        print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
              f"decode workers {default_workers()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        digits_root = ensure_builtin("digits-names", root=workdir / "builtin")
        photos_root = workdir / "photos"
        photos_root.mkdir()
        start = time.perf_counter()
        write_photo_digits(photos_root, args.n_photos)
        print(f"wrote {args.n_photos} JPEGs of {JPEG_WIDTH}×{JPEG_HEIGHT} in {time.perf_counter() - start:.1f} s", flush=True)
        digits = linked(workdir / "digits", sorted(scan_folder(digits_root).images), args.n_small)
        photos = sorted(scan_folder(photos_root).images)

        sections = args.sections.split(",")
        if "decode" in sections:
            rows = bench_decode(f"{args.n_small:,} digits 28 px PNG", digits, 96, workdir, args.repeats)
            rows += bench_decode(f"{args.n_photos} photos {JPEG_WIDTH}×{JPEG_HEIGHT} JPEG", photos, 320, workdir,
                                 args.repeats)
            capacity = parallel_capacity(default_workers(), args.repeats)
            print(f"\nCold decode, best of {args.repeats}; load average now {os.getloadavg()[0]:.1f}; "
                  f"{default_workers()} processes of pure CPU work reach {capacity:.2f}× one here now")
            print(f"{'data → presize':<36} {'way':<52} {'img/s':>8} {'CPU ms/img':>11} {'cores busy':>11} {'× 1 thread':>11}")
            for data, way, rate, cpu_ms, busy, ratio in rows:
                print(f"{data:<36} {way:<52} {rate:>8,.0f} {cpu_ms:>11.2f} {busy:>11.2f} {ratio:>10.2f}×")
            bench_draft(photos[:200], 128, args.repeats)
        if "train" in sections:
            items = label_items(scan_folder(photos_root), PHOTO_LABEL, BUILTINS["digits-names"].split_rule)
            bench_training(items, 320, 224, args.repeats, args.train_batches)
        if "restart" in sections and args.restart_images:
            bench_restart(photos_root, workdir, args.restart_images, args.restart_presize)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
