"""Loupe vs fastai: the same data, model and one-cycle schedule, trained one after the other.

Prints figures only; asserts nothing about speed. Run from the repository root (`make bench`
installs fastai from requirements-bench.txt first):

    .venv/bin/python bench/vs_fastai.py [--epochs 3] [--lr 1e-3] [--bs 64] [--size 64] [--only loupe|fastai]

Both sides get the built-in "Digits — file names" (1,797 digits, written to a temporary
LOUPE_HOME and removed afterwards), labels from `^(.+)_\\d+\\.png$` on the name, a random split
(valid_pct 0.2, seed 42; the validation files are checked to be the same), an item resize to the
presize then fastai's `aug_transforms` without flips to `--size` on whole batches, ImageNet
normalisation, a resnet18 from scratch with every layer trainable, Adam with fastai's defaults,
and `fit_one_cycle(epochs, lr_max)`. Each side uses its own defaults for everything else (fastai's
num_workers, Loupe's mixed precision on CUDA), because that is what their users get.

Images/s are measured the same way for both by `TrainClock`: the wall time of each epoch's
training phase, from its start to the end of its last batch (data loading, augmentation, the
steps and the callbacks included; validation excluded). For Loupe the raw step rate (the same
model and optimizer repeating `train_step` on one batch already on the device) shows how much the
data pipeline costs.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.augment import AugSettings  # noqa: E402
from engine.builtin import ensure_builtin  # noqa: E402
from engine.data import DataConfig, DataLoaders, PresizeCache, load_items  # noqa: E402
from engine.device import default_device  # noqa: E402
from engine.labels import LabelRule  # noqa: E402
from engine.learner import FunctionCallback, Learner  # noqa: E402
from engine.models import count_params, create_model  # noqa: E402
from engine.split import SplitRule  # noqa: E402

LABEL_PATTERN = r"^(.+)_\d+\.png$"
VALID_PCT, SPLIT_SEED = 0.2, 42
WEIGHT_SEED = 0  # torch.manual_seed before each model is made
RAW_WARMUP = 3  # untimed train steps before the raw step rate is measured

# targets printed beside the ratios
TARGET_SPEEDUP = 1.5  # Loupe ÷ fastai training images/s
TARGET_ACC_DIFF = 0.0  # Loupe accuracy − fastai accuracy
TARGET_OVERHEAD = 0.10  # 1 − Loupe pipeline images/s ÷ raw step images/s


@dataclass
class Result:
    framework: str
    images_per_s: float  # training phases, wall clock, data pipeline included
    median_epoch_images_per_s: float
    accuracy: float  # after the last epoch
    valid_loss: float
    seconds: float  # the whole fit, validation included
    setup_seconds: float  # data and model, before the fit
    valid_names: set[str]
    notes: list[str]


def sync(device: torch.device) -> None:
    """Wait for queued device work so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainClock:
    """Wall time of training phases: from an epoch's start to the end of its last training batch.

    Both frameworks call `start` when an epoch's training begins, `batch_done(n)` after every
    training batch and `epoch_done` once the epoch's training is over (before or after
    validation: only the time of the last batch counts).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.epochs: list[tuple[int, float]] = []  # (images, seconds) of each epoch's training phase
        self._start = self._last = None
        self._images = 0

    def start(self) -> None:
        sync(self.device)
        self._start = self._last = time.perf_counter()
        self._images = 0

    def batch_done(self, n: int) -> None:
        sync(self.device)
        self._last = time.perf_counter()
        self._images += n

    def epoch_done(self) -> None:
        self.epochs.append((self._images, self._last - self._start))

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.epochs)

    @property
    def images_per_s(self) -> float:
        """Over the whole fit."""
        return sum(n for n, _ in self.epochs) / self.seconds if self.seconds else 0.0

    @property
    def median_epoch_images_per_s(self) -> float:
        """Of the median epoch: less sensitive to other work on the machine during one epoch."""
        return float(np.median([n / s for n, s in self.epochs])) if self.epochs else 0.0


# ---------------------------------------------------------------- the two halves

def run_fastai(root: Path, args: argparse.Namespace, device: torch.device) -> Result:
    """fastai's DataBlock + vision_learner + fit_one_cycle, with fastai's defaults."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation noise at import
        import fastai.vision.all  # noqa: F401  what users import: its patches (no_bar) and default callbacks
        from fastai.callback.core import Callback
        from fastai.data.block import CategoryBlock, DataBlock
        from fastai.data.transforms import Normalize, RandomSplitter, RegexLabeller, get_image_files
        from fastai.metrics import accuracy
        from fastai.vision.augment import Resize, aug_transforms
        from fastai.vision.core import imagenet_stats
        from fastai.vision.data import ImageBlock
        from fastai.vision.learner import vision_learner
        from fastcore.basics import using_attr
        from torchvision.models import resnet18

    clock = TrainClock(device)

    class ClockCallback(Callback):
        def before_train(self): clock.start()
        def after_batch(self):
            if self.training:
                clock.batch_done(len(self.yb[0]))
        def after_train(self): clock.epoch_done()

    seed_everything(WEIGHT_SEED)
    start = time.perf_counter()
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        # sorted: get_image_files returns os.walk order; Loupe sorts, and a seeded split needs the same order
        get_items=lambda path: sorted(get_image_files(path)),
        get_y=using_attr(RegexLabeller(LABEL_PATTERN), "name"),
        splitter=RandomSplitter(valid_pct=VALID_PCT, seed=SPLIT_SEED),
        item_tfms=Resize(args.presize),
        batch_tfms=[*aug_transforms(size=args.size, do_flip=False), Normalize.from_stats(*imagenet_stats)],
    )
    dls = dblock.dataloaders(root, bs=args.bs, device=device)
    torch.manual_seed(WEIGHT_SEED)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    trainable, total = count_params(learn.model)
    learn.unfreeze()
    learn.add_cb(ClockCallback())
    setup = time.perf_counter() - start

    loader = dls.train.fake_l
    notes = [
        f"num_workers {loader.num_workers} (fastai's default: min(16, defaults.cpus={_fastai_cpus()}))",
        f"pin_memory {loader.pin_memory}, persistent_workers {loader.persistent_workers}, "
        f"train drop_last {dls.train.drop_last}, device {dls.device}",
        f"trainable parameters before unfreeze {trainable:,} of {total:,} "
        f"({'not frozen' if trainable == total else 'FROZEN'}); mixed precision off (fastai's default)",
        f"cudnn.benchmark {torch.backends.cudnn.benchmark}, torch threads {torch.get_num_threads()}",
    ]
    print("fastai: " + "\n        ".join(notes), flush=True)

    start = time.perf_counter()
    with learn.no_bar():  # the epoch table still prints; the live bar would only clutter the output
        learn.fit_one_cycle(args.epochs, lr_max=args.lr)
    seconds = time.perf_counter() - start
    valid_loss, acc = learn.recorder.values[-1][1:3]
    valid_names = {Path(p).name for p in dls.valid_ds.items}
    return Result("fastai", clock.images_per_s, clock.median_epoch_images_per_s, float(acc), float(valid_loss),
                  seconds, setup, valid_names, notes)


def run_loupe(root: Path, args: argparse.Namespace, device: torch.device) -> tuple[Result, float, float]:
    """Loupe's DataLoaders + create_model + Learner.fit_one_cycle; also the raw train_step rate and
    the share of the training phases spent outside train_step."""
    seed_everything(WEIGHT_SEED)
    start = time.perf_counter()
    config = DataConfig(root=str(root), name="digits", label=LabelRule(kind="regex", pattern=LABEL_PATTERN, on="name"),
                        split=SplitRule(kind="random", valid_pct=VALID_PCT, seed=SPLIT_SEED),
                        size=args.size, presize=args.presize, bs=args.bs, aug=AugSettings(do_flip=False))
    items = load_items(config)
    images = PresizeCache(max_entries=1).get(items.scanned_paths, config.presize, config.method)
    dls = DataLoaders(items, images, size=config.size, bs=config.bs, aug=config.aug, device=device, seed=WEIGHT_SEED)
    torch.manual_seed(WEIGHT_SEED)
    model, _ = create_model("resnet18", len(dls.classes), pretrained=False)
    learn = Learner(model, dls)
    trainable, total = count_params(learn.model)
    setup = time.perf_counter() - start

    clock = TrainClock(device)

    def on_event(event: str, logs: dict) -> None:
        if event == "before_epoch":
            clock.start()
        elif event == "after_batch":
            clock.batch_done(logs["batch_size"])
        elif event == "after_epoch":
            clock.epoch_done()
            print(f"[{logs['epoch']}, {logs['train_loss']:.6f}, {logs['valid_loss']:.6f}, "
                  f"{logs['accuracy']:.6f}, '{logs['time']:.1f} s']", flush=True)

    learn.callbacks.append(FunctionCallback(on_event))
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[learn.amp_dtype]
    notes = [
        f"batches made in the main process on {device}; presized to {config.presize} once in {setup:.1f} s (setup)",
        f"trainable parameters {trainable:,} of {total:,}; mixed precision {amp} (Loupe's default)",
        f"cudnn.benchmark {torch.backends.cudnn.benchmark}, torch threads {torch.get_num_threads()}",
    ]
    print("Loupe:  " + "\n        ".join(notes), flush=True)

    start = time.perf_counter()
    logs = learn.fit_one_cycle(args.epochs, lr_max=args.lr)
    seconds = time.perf_counter() - start
    valid_names = {Path(rel).name for rel, s in zip(items.rel_paths, items.split, strict=True) if s == "valid"}
    print(f"Loupe's own Recorder.images_per_s (train_step time only): {learn.recorder.images_per_s:,.0f}", flush=True)

    # the raw step: same model and optimizer, one fixed batch already on the device, no data pipeline
    x, y = next(dls.train())
    for _ in range(RAW_WARMUP):
        learn.train_step(x, y)
    sync(device)
    t0 = time.perf_counter()
    n_steps = max(10, dls.n_train // dls.bs)  # an epoch's worth
    for _ in range(n_steps):
        learn.train_step(x, y)
    sync(device)
    raw = n_steps * len(y) / (time.perf_counter() - t0)

    # the same question asked inside the fit itself, immune to the load changing between the fit and the raw steps
    outside = 1 - learn.recorder.train_seconds / clock.seconds
    result = Result("Loupe", clock.images_per_s, clock.median_epoch_images_per_s, logs["accuracy"], logs["valid_loss"],
                    seconds, setup, valid_names, notes)
    return result, raw, outside


# ---------------------------------------------------------------- report

def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def print_report(results: list[Result], raw_step: float | None, outside: float | None) -> None:
    print(f"\n{'framework':<10} {'images/s':>9} {'median epoch':>13} {'accuracy':>9} {'valid_loss':>11} "
          f"{'seconds':>8} {'setup s':>8}")
    for r in results:
        print(f"{r.framework:<10} {r.images_per_s:>9,.0f} {r.median_epoch_images_per_s:>13,.0f} {r.accuracy:>9.4f} "
              f"{r.valid_loss:>11.4f} {r.seconds:>8.1f} {r.setup_seconds:>8.1f}")
    print("images/s: training phases over the whole fit (data loading and augmentation included, validation "
          "excluded); seconds: the whole fit; setup s: data and model before it")
    by_name = {r.framework: r for r in results}
    print()
    if raw_step is not None:
        loupe = by_name["Loupe"]
        overhead = 1 - loupe.images_per_s / raw_step
        print(f"Loupe raw train_step: {raw_step:,.0f} images/s (one batch on the device, no data pipeline)")
        print(f"Loupe pipeline overhead: {overhead:.1%} (target ≤ {TARGET_OVERHEAD:.0%}): "
              f"{verdict(overhead <= TARGET_OVERHEAD)}")
        print(f"  cross-check within the fit: {outside:.1%} of the training phases was spent outside train_step "
              "(data, augmentation, callbacks)")
    if "Loupe" in by_name and "fastai" in by_name:
        loupe, fastai = by_name["Loupe"], by_name["fastai"]
        speedup = loupe.images_per_s / fastai.images_per_s
        diff = loupe.accuracy - fastai.accuracy
        print(f"Loupe ÷ fastai images/s: {speedup:.2f}× (target ≥ {TARGET_SPEEDUP}×): {verdict(speedup >= TARGET_SPEEDUP)}")
        median = loupe.median_epoch_images_per_s / fastai.median_epoch_images_per_s
        print(f"  the same of the median epochs: {median:.2f}× (when the two differ much, the machine was busy)")
        print(f"accuracy, Loupe − fastai: {diff:+.4f} (target ≥ {TARGET_ACC_DIFF:g}): {verdict(diff >= TARGET_ACC_DIFF)}")
        print("(one run each: accuracy after a few epochs from scratch varies by a few points with the seed)")


def _fastai_cpus() -> int:
    from fastai.torch_core import defaults

    return defaults.cpus


def fastai_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import fastai.vision.all  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3, help="lr_max of fit_one_cycle")
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="side of the images the model sees")
    parser.add_argument("--presize", type=int, default=None, help="item resize before augmentation (default 1.125 × size)")
    parser.add_argument("--only", choices=("loupe", "fastai"), default=None)
    args = parser.parse_args()
    args.presize = args.presize or round(args.size * 1.125)
    device = default_device()

    run_fastai_half = args.only != "loupe"
    if run_fastai_half and not fastai_available():
        print("fastai is not installed: run `make bench`", flush=True)
        run_fastai_half = False
    if args.only == "fastai" and not run_fastai_half:
        return

    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
          f"cpu cores {os.cpu_count()}; resnet18 from scratch, {args.epochs} epoch(s), lr_max {args.lr:g}, "
          f"bs {args.bs}, presize {args.presize} → size {args.size}", flush=True)
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    home = Path(tempfile.mkdtemp(prefix="loupe-vs-fastai-"))
    old_home = os.environ.get("LOUPE_HOME")
    os.environ["LOUPE_HOME"] = str(home)
    results: list[Result] = []
    raw_step = outside = None
    try:
        root = ensure_builtin("digits-names")
        if run_fastai_half:
            print("\n== fastai", flush=True)
            results.append(run_fastai(root, args, device))
            # each side runs with its own defaults: undo global settings fastai may have changed
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = benchmark
        if args.only != "fastai":
            print("\n== Loupe", flush=True)
            loupe, raw_step, outside = run_loupe(root, args, device)
            results.append(loupe)
        if len(results) == 2:
            a, b = results[0].valid_names, results[1].valid_names
            assert a == b, f"the splits differ: {len(a ^ b)} validation files are in only one of them"
            print(f"\nsame {len(a)} validation files in both", flush=True)
        print_report(results, raw_step, outside)
    finally:
        if old_home is None:
            os.environ.pop("LOUPE_HOME", None)
        else:
            os.environ["LOUPE_HOME"] = old_home
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
