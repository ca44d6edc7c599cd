"""Progressive resizing on the digits job: does training at a smaller size first reach the same accuracy sooner?

Prints figures only; asserts nothing. Run from the repository root:

    .venv/bin/python bench/progressive.py [--seeds 0 1] [--schedules 64,64,64 32,64,64 48,64,64 32,48,64]

The job of bench/vs_fastai.py, trained by Loupe: the built-in digits (random split 0.2, seed 42),
presize 72, fastai's aug_transforms without flips, bs 64, resnet18 from scratch,
fit_one_cycle(3, 1e-3), fp32. A schedule gives each epoch's image size (fastai's progressive
resizing, as in fastbook chapter 7, done inside the one cycle): the batches of every size are cut
from the same presized pixels, and each epoch is validated at its own size. Seeds and schedules
are interleaved so that other work on the machine falls on all of them alike.

For each run: per-epoch accuracy and the wall time from the start of the fit to the end of that
epoch's validation; the final accuracy; and the time at which it first reaches the final accuracy
of the all-64 px run of the same seed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from engine.data.augment import AugSettings  # noqa: E402
from engine.data.builtin import BUILTINS, ensure_builtin  # noqa: E402
from engine.data.loaders import DataLoaders, PresizeCache, label_items  # noqa: E402
from engine.train.learner import Callback, Learner  # noqa: E402
from engine.train.models import create_model  # noqa: E402
from engine.data.sources import scan_folder  # noqa: E402

PRESIZE, BS, EPOCHS, LR = 72, 64, 3, 1e-3


class ProgressiveResize(Callback):
    """Before each epoch, switch to the batches of that epoch's size; records each epoch's time and accuracy."""

    def __init__(self, dls_by_epoch: list[DataLoaders]) -> None:
        self.dls_by_epoch = dls_by_epoch
        self.epochs: list[tuple[float, float]] = []  # (seconds since the fit started, accuracy)

    def before_fit(self, learn, logs):
        self.start = time.perf_counter()

    def before_epoch(self, learn, logs):
        learn.dls = self.dls_by_epoch[min(logs["epoch"], len(self.dls_by_epoch) - 1)]

    def after_epoch(self, learn, logs):
        self.epochs.append((time.perf_counter() - self.start, logs["accuracy"]))


def train(items, images, sizes: list[int], seed: int) -> list[tuple[float, float]]:
    """Per-epoch (seconds since the fit started, accuracy) of one run with these per-epoch sizes."""
    dls = {s: DataLoaders(items, images, size=s, bs=BS, aug=AugSettings(do_flip=False), seed=seed) for s in set(sizes)}
    torch.manual_seed(seed)
    model, _ = create_model("resnet18", len(items.classes), pretrained=False)
    progressive = ProgressiveResize([dls[s] for s in sizes])
    learn = Learner(model, dls[sizes[0]], callbacks=[progressive], precision="fp32")
    learn.fit_one_cycle(len(sizes), LR)
    return progressive.epochs


def time_to(epochs: list[tuple[float, float]], accuracy: float) -> float | None:
    return next((t for t, a in epochs if a >= accuracy - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--schedules", nargs="+", default=["64,64,64", "32,64,64", "48,64,64", "32,48,64"],
                        help="per-epoch image sizes; the first is the reference")
    args = parser.parse_args()
    schedules = [[int(s) for s in text.split(",")] for text in args.schedules]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="loupe-progressive-"))
    os.environ["LOUPE_HOME"] = str(home)
    try:
        builtin = BUILTINS["digits-names"]
        items = label_items(scan_folder(ensure_builtin("digits-names")), builtin.label_rule, builtin.split_rule)
        images = PresizeCache(max_entries=1).get(items.scanned_paths, PRESIZE)
        runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for seed in args.seeds:
            for sizes in schedules:
                name = ",".join(map(str, sizes))
                runs[name, seed] = epochs = train(items, images, sizes, seed)
                print(f"{name:<10} seed {seed}: " + ", ".join(f"{t:.1f} s {a:.4f}" for t, a in epochs)
                      + f"  (load {os.getloadavg()[0]:.1f})", flush=True)
        reference = ",".join(map(str, schedules[0]))
        print(f"\n{'sizes':<10} {'accuracy (mean)':>15} {'fit s (mean)':>12} {'fit ÷ ref':>9}  time to the {reference} run's "
              "final accuracy, per seed (÷ its own fit time)")
        for sizes in schedules:
            name = ",".join(map(str, sizes))
            accs = [runs[name, s][-1][1] for s in args.seeds]
            secs = [runs[name, s][-1][0] for s in args.seeds]
            ratio = statistics.mean(runs[name, s][-1][0] / runs[reference, s][-1][0] for s in args.seeds)
            reach = []
            for s in args.seeds:
                ref_epochs = runs[reference, s]
                t = time_to(runs[name, s], ref_epochs[-1][1])
                reach.append("never" if t is None else f"{t:.1f} s ({t / ref_epochs[-1][0]:.2f}×)")
            print(f"{name:<10} {statistics.mean(accs):>15.4f} {statistics.mean(secs):>12.1f} {ratio:>9.2f}  "
                  + ", ".join(reach))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
