"""Loupe vs fastai: the same data, model and one-cycle schedule, trained one after the other.

Prints figures only; asserts nothing about speed. Run from the repository root (`make bench`
installs fastai from requirements-bench.txt first):

    .venv/bin/python bench/vs_fastai.py [--epochs 3] [--lr 1e-3] [--bs 64] [--size 64]
        [--precisions auto fp32] [--fastai-workers N] [--loupe-first] [--only loupe|fastai]

Both sides get the built-in "Digits — file names" (1,797 digits, written to a temporary
LOUPE_HOME and removed afterwards), labels from `^(.+)_\\d+\\.png$` on the name, a random split
(valid_pct 0.2, seed 42; the validation files are checked to be the same), an item resize to the
presize then fastai's `aug_transforms` without flips to `--size` on whole batches, ImageNet
normalisation, a resnet18 from scratch with every layer trainable, Adam with fastai's defaults,
and `fit_one_cycle(epochs, lr_max)`. Each side uses its own defaults for everything else (fastai's
num_workers and fp32; Loupe's `device.precision`, `auto` unless `--precisions` says otherwise),
because that is what their users get. Loupe trains once per precision asked for.

Two speeds are reported, because they answer different questions:
- training images/s, measured the same way for both by `TrainClock`: the wall time of each
  epoch's training phase, from its start to the end of its last batch (data loading,
  augmentation, the steps and the callbacks included; validation excluded);
- the whole fit's wall time (validation and DataLoader start-up included), and with it the time
  to reach fastai's accuracy: the wall time from the start of the fit at which each run's
  validation accuracy first reaches fastai's final accuracy (epochs are validated as they end,
  so this is the end of the first epoch that reaches it).
For Loupe the raw step rate (the same model and optimizer repeating `train_step` on one batch
already on the device) shows how much the data pipeline costs.
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.data.augment import AugSettings  # noqa: E402
from engine.data.builtin import ensure_builtin  # noqa: E402
from engine.data.loaders import DataLoaders, PresizeCache, load_items  # noqa: E402
from engine.train.device import default_device  # noqa: E402
from engine.data.labels import LabelRule  # noqa: E402
from engine.train.learner import FunctionCallback, Learner  # noqa: E402
from engine.train.models import count_params, create_model  # noqa: E402
from engine.spec import DataSpec  # noqa: E402
from engine.data.split import SplitRule  # noqa: E402

LABEL_PATTERN = r"^(.+)_\d+\.png$"
VALID_PCT, SPLIT_SEED = 0.2, 42
WEIGHT_SEED = 0  # torch.manual_seed before each model is made
RAW_WARMUP = 3  # untimed train steps before the raw step rate is measured

# targets printed beside the ratios
TARGET_SPEEDUP = 1.5  # Loupe ÷ fastai training images/s
TARGET_TIME_TO_ACC = 2.0  # fastai's time to its own final accuracy ÷ Loupe's time to the same accuracy
TARGET_ACC_DIFF = 0.0  # Loupe accuracy − fastai accuracy
TARGET_OVERHEAD = 0.10  # 1 − Loupe pipeline images/s ÷ raw step images/s


@dataclass
class Epoch:
    epoch: int
    at: float  # seconds from the start of the fit to the end of this epoch's validation
    accuracy: float
    train_seconds: float  # the training phase (TrainClock)
    train_images: int
    valid_seconds: float  # from the end of the last training batch to the end of validation


@dataclass
class Result:
    name: str
    precision: str  # the precision used
    images_per_s: float  # training phases, wall clock, data pipeline included
    median_epoch_images_per_s: float
    accuracy: float  # after the last epoch
    valid_loss: float
    seconds: float  # the whole fit, validation included
    setup_seconds: float  # data and model, before the fit
    valid_names: set[str]
    notes: list[str]
    epochs: list[Epoch] = field(default_factory=list)
    raw_step: float | None = None  # Loupe: images/s of train_step alone
    outside: float | None = None  # Loupe: share of the training phases spent outside train_step

    def time_to(self, accuracy: float) -> float | None:
        """Seconds from the start of the fit to the first validation at or above `accuracy` (None: never)."""
        return next((e.at for e in self.epochs if e.accuracy >= accuracy - 1e-9), None)


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
    """Wall time of training phases, and of each epoch from the start of the fit to the end of its validation.

    Both frameworks call `fit_start` once, `start` when an epoch's training begins, `batch_done(n)`
    after every training batch, `epoch_done` once the epoch's training is over (before or after
    validation: only the time of the last batch counts) and `validated(epoch, accuracy)` when the
    epoch's validation has been scored.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.phases: list[tuple[int, float]] = []  # (images, seconds) of each epoch's training phase
        self.epochs: list[Epoch] = []
        self._fit_start = self._start = self._last = 0.0
        self._images = 0

    def fit_start(self) -> None:
        sync(self.device)
        self._fit_start = time.perf_counter()

    def start(self) -> None:
        sync(self.device)
        self._start = self._last = time.perf_counter()
        self._images = 0

    def batch_done(self, n: int) -> None:
        sync(self.device)
        self._last = time.perf_counter()
        self._images += n

    def epoch_done(self) -> None:
        self.phases.append((self._images, self._last - self._start))

    def validated(self, epoch: int, accuracy: float) -> None:
        now = time.perf_counter()
        self.epochs.append(Epoch(epoch, now - self._fit_start, float(accuracy), self._last - self._start, self._images,
                                 now - self._last))

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.phases)

    @property
    def images_per_s(self) -> float:
        """Over the whole fit."""
        return sum(n for n, _ in self.phases) / self.seconds if self.seconds else 0.0

    @property
    def median_epoch_images_per_s(self) -> float:
        """Of the median epoch: less sensitive to other work on the machine during one epoch."""
        return float(np.median([n / s for n, s in self.phases])) if self.phases else 0.0


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
        order = 70  # after the Recorder (50), which has the epoch's metrics by then

        def before_fit(self): clock.fit_start()
        def before_train(self): clock.start()
        def after_batch(self):
            if self.training:
                clock.batch_done(len(self.yb[0]))
        def after_train(self): clock.epoch_done()
        def after_epoch(self): clock.validated(self.epoch, self.recorder.values[-1][2])

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
    workers = {} if args.fastai_workers is None else {"num_workers": args.fastai_workers}
    dls = dblock.dataloaders(root, bs=args.bs, device=device, **workers)
    torch.manual_seed(WEIGHT_SEED)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    trainable, total = count_params(learn.model)
    learn.unfreeze()
    learn.add_cb(ClockCallback())
    setup = time.perf_counter() - start

    loader = dls.train.fake_l
    notes = [
        f"num_workers {loader.num_workers} ({'set by --fastai-workers' if workers else 'fastai default'}: "
        f"min(16, defaults.cpus={_fastai_cpus()})), each worker at 1 torch thread",
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
    return Result("fastai", "fp32", clock.images_per_s, clock.median_epoch_images_per_s, float(acc), float(valid_loss),
                  seconds, setup, valid_names, notes, epochs=clock.epochs)


def run_loupe(root: Path, args: argparse.Namespace, device: torch.device, precision: str) -> Result:
    """Loupe's DataLoaders + create_model + Learner.fit_one_cycle at `precision`; also the raw train_step
    rate and the share of the training phases spent outside train_step."""
    seed_everything(WEIGHT_SEED)
    start = time.perf_counter()
    data = DataSpec(source=str(root), label=LabelRule(kind="regex", pattern=LABEL_PATTERN, on="name"),
                    split=SplitRule(kind="random", valid_pct=VALID_PCT, seed=SPLIT_SEED),
                    size=args.size, presize=args.presize, bs=args.bs)
    items = load_items(data)
    images = PresizeCache(max_entries=1).get(items.scanned_paths, data.presize, data.presize_method)
    dls = DataLoaders(items, images, size=data.size, bs=data.bs, aug=AugSettings(do_flip=False), device=device,
                      seed=WEIGHT_SEED)
    torch.manual_seed(WEIGHT_SEED)
    model, _ = create_model("resnet18", len(dls.classes), pretrained=False)
    learn = Learner(model, dls, precision=precision)
    trainable, total = count_params(learn.model)
    setup = time.perf_counter() - start

    clock = TrainClock(device)

    def on_event(event: str, logs: dict) -> None:
        if event == "before_fit":
            clock.fit_start()
        elif event == "before_epoch":
            clock.start()
        elif event == "after_batch":
            clock.batch_done(logs["batch_size"])
        elif event == "after_epoch":
            clock.epoch_done()
            clock.validated(logs["epoch"], logs["accuracy"])
            print(f"[{logs['epoch']}, {logs['train_loss']:.6f}, {logs['valid_loss']:.6f}, "
                  f"{logs['accuracy']:.6f}, '{logs['time']:.1f} s']", flush=True)

    learn.callbacks.append(FunctionCallback(on_event))
    notes = [
        f"batches made in the main process on {device}; presized to {data.presize} once in {setup:.1f} s (setup)",
        f"trainable parameters {trainable:,} of {total:,}; precision asked {precision}, used {learn.precision}",
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

    name = f"Loupe {precision}" + (f" ({learn.precision})" if precision != learn.precision else "")
    return Result(name, learn.precision, clock.images_per_s, clock.median_epoch_images_per_s, logs["accuracy"],
                  logs["valid_loss"], seconds, setup, valid_names, notes, epochs=clock.epochs, raw_step=raw,
                  # the same question asked inside the fit itself, immune to the load changing between fit and raw steps
                  outside=1 - learn.recorder.train_seconds / clock.seconds)


# ---------------------------------------------------------------- report

def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "never"


def print_report(results: list[Result]) -> None:
    fastai = next((r for r in results if r.name == "fastai"), None)
    target = fastai.accuracy if fastai is not None else None
    print(f"\n{'':<20} {'precision':>9} {'train img/s':>11} {'median epoch':>12} {'accuracy':>9} {'valid_loss':>10} "
          f"{'fit s':>7} {'valid s':>7} {'setup s':>7} {'to fastai acc, s':>16}")
    for r in results:
        valid = sum(e.valid_seconds for e in r.epochs)
        reach = _seconds(r.time_to(target)) if target is not None else "-"
        print(f"{r.name:<20} {r.precision:>9} {r.images_per_s:>11,.1f} {r.median_epoch_images_per_s:>12,.1f} "
              f"{r.accuracy:>9.4f} {r.valid_loss:>10.4f} {r.seconds:>7.1f} {valid:>7.1f} {r.setup_seconds:>7.1f} "
              f"{reach:>16}")
    print("train img/s: training phases over the whole fit (data loading and augmentation included, validation "
          "excluded); fit s: the whole fit; valid s: its validations (and anything else between an epoch's last "
          "batch and its score); to fastai acc: wall time from the start of the fit to the first epoch whose "
          "validation accuracy reaches fastai's final accuracy")

    print("\nper epoch: seconds from the start of the fit to the end of the epoch's validation, its accuracy, "
          "and the training images/s of its training phase")
    print(f"{'epoch':<6}" + "".join(f"{r.name:>32}" for r in results))
    for i in range(max(len(r.epochs) for r in results)):
        cells = [f"{e.at:>8.1f} s {e.accuracy:>7.4f} {e.train_images / e.train_seconds:>8.1f}/s" if e else ""
                 for e in (r.epochs[i] if i < len(r.epochs) else None for r in results)]
        print(f"{i:<6}" + "".join(f"{c:>32}" for c in cells))

    print()
    for r in results:
        if r.raw_step is None:
            continue
        overhead = 1 - r.images_per_s / r.raw_step
        print(f"{r.name}: raw train_step {r.raw_step:,.1f} images/s (one batch on the device, no data pipeline); "
              f"pipeline overhead {overhead:.1%} (target ≤ {TARGET_OVERHEAD:.0%}): {verdict(overhead <= TARGET_OVERHEAD)}; "
              f"within the fit {r.outside:.1%} of the training phases was outside train_step")
    if fastai is None:
        return
    fastai_reach = fastai.time_to(target)
    for r in results:
        if r is fastai:
            continue
        speedup = r.images_per_s / fastai.images_per_s
        median = r.median_epoch_images_per_s / fastai.median_epoch_images_per_s
        whole = fastai.seconds / r.seconds
        reach = r.time_to(target)
        print(f"\n{r.name} ÷ fastai training images/s: {speedup:.2f}× (target ≥ {TARGET_SPEEDUP}×): "
              f"{verdict(speedup >= TARGET_SPEEDUP)}; of the median epochs {median:.2f}× (when the two differ much, "
              "the machine was busy)")
        print(f"  whole fit, validation included: {whole:.2f}× as fast ({fastai.seconds:.1f} s vs {r.seconds:.1f} s)")
        if reach is None:
            print(f"  time to fastai's accuracy ({target:.4f}): never reached in {len(r.epochs)} epochs "
                  f"(target ≥ {TARGET_TIME_TO_ACC}× sooner): not met")
        else:
            ratio = fastai_reach / reach
            print(f"  time to fastai's accuracy ({target:.4f}): {reach:.1f} s vs fastai's {fastai_reach:.1f} s, "
                  f"{ratio:.2f}× sooner (target ≥ {TARGET_TIME_TO_ACC}×): {verdict(ratio >= TARGET_TIME_TO_ACC)}")
        diff = r.accuracy - fastai.accuracy
        print(f"  accuracy, {r.name} − fastai: {diff:+.4f} (target ≥ {TARGET_ACC_DIFF:g}): {verdict(diff >= TARGET_ACC_DIFF)}")
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
    parser.add_argument("--precisions", nargs="+", default=["auto", "fp32"], choices=("auto", "fp32", "bf16", "fp16"),
                        help="Loupe trains once per precision (default: auto, Loupe's default, and fp32)")
    parser.add_argument("--fastai-workers", type=int, default=None,
                        help="fastai's DataLoader worker processes (default: fastai's own, min(16, cores))")
    parser.add_argument("--loupe-first", action="store_true", help="train Loupe before fastai (default: fastai first)")
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
          f"cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; resnet18 from scratch, "
          f"{args.epochs} epoch(s), lr_max {args.lr:g}, bs {args.bs}, presize {args.presize} → size {args.size}",
          flush=True)
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    home = Path(tempfile.mkdtemp(prefix="loupe-vs-fastai-"))
    old_home = os.environ.get("LOUPE_HOME")
    os.environ["LOUPE_HOME"] = str(home)
    results: list[Result] = []
    try:
        root = ensure_builtin("digits-names")

        def fastai_half() -> None:
            print("\n== fastai", flush=True)
            results.append(run_fastai(root, args, device))
            # each side runs with its own defaults: undo global settings fastai may have changed
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = benchmark

        def loupe_half() -> None:
            for precision in args.precisions:
                print(f"\n== Loupe, precision {precision}", flush=True)
                results.append(run_loupe(root, args, device, precision))

        halves = [*([fastai_half] if run_fastai_half else []), *([loupe_half] if args.only != "fastai" else [])]
        for half in (reversed(halves) if args.loupe_first else halves):
            half()
        results.sort(key=lambda r: r.name != "fastai")  # fastai's row first, whatever ran first
        names = [r.valid_names for r in results]
        for other in names[1:]:
            assert other == names[0], f"the splits differ: {len(other ^ names[0])} validation files are in only one"
        if len(results) > 1:
            print(f"\nsame {len(names[0])} validation files in all", flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        print_report(results)
    finally:
        if old_home is None:
            os.environ.pop("LOUPE_HOME", None)
        else:
            os.environ["LOUPE_HOME"] = old_home
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
