"""fp32 vs bf16 (and fp16) on this CPU: the evidence behind what `device.precision = auto` picks there.

Prints figures only; asserts nothing. Run from the repository root:

    .venv/bin/python bench/precision_cpu.py [--reps 5] [--seeds 0 1] [--fp16] [--skip-fits]

1. The raw train step: `Learner.train_step` on one batch of 64 already in memory, fp32 and bf16
   interleaved (`--reps` rounds of `--steps` steps each, after a warm-up), for the two digits jobs'
   models: resnet18 at 64 px and the small convnet at 28 px. On a shared machine other work only
   ever slows a round down, so the best round is the closest to what the CPU can do; the median
   and every round are printed too, and interleaving spreads other work over both precisions.
2. The two digits jobs, trained by `train_run` as the app and the CLI train them, once per seed
   and precision: the default spec (built-in digits, small model, fine_tune 3 epochs), and resnet18
   from scratch at 64 px (presize 72, no flips, bs 64, fit_one_cycle(3, 1e-3)) as bench/vs_fastai.py.
   Accuracy is the kept model's; seconds are the whole fit (validation included).
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

from engine.data.loaders import PresizeCache  # noqa: E402
from engine.train.precision import cpu_has_bf16  # noqa: E402
from engine.spec import RunSpec, override  # noqa: E402
from engine.train.run import prepare, train_run  # noqa: E402

JOBS = {
    "small 28 px, fine_tune 3": {},
    "resnet18 64 px, one_cycle 3": {"data.size": 64, "data.presize": 72, "model.arch": "resnet18",
                                    "model.pretrained": False, "train.schedule": "one_cycle", "train.epochs": 3,
                                    "train.lr": 1e-3},
}


def job_spec(changes: dict, precision: str, seed: int) -> RunSpec:
    return override(RunSpec(), {**changes, "device.device": "cpu", "device.precision": precision, "train.seed": seed})


def step_rates(changes: dict, precisions: list[str], steps: int, reps: int) -> dict[str, list[float]]:
    """Images/s of `steps` train steps per round, precisions interleaved within each round."""
    cache = PresizeCache(max_entries=1)
    learners = {p: prepare(job_spec(changes, p, 0), cache).learn for p in precisions}
    batch = next(learners[precisions[0]].dls.train())
    for learn in learners.values():  # warm-up: oneDNN picks and caches its kernels on the first steps
        torch.set_num_threads(learn.cpu_threads)
        for _ in range(2):
            learn.train_step(*batch)
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(reps):
        for p, learn in learners.items():
            start = time.perf_counter()
            for _ in range(steps):
                learn.train_step(*batch)
            rates[p].append(steps * len(batch[1]) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds of the raw step")
    parser.add_argument("--steps", type=int, default=8, help="train steps per round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fp16", action="store_true", help="also time fp16 (very slow on most CPUs: 2 steps a round)")
    parser.add_argument("--skip-fits", action="store_true", help="only the raw step")
    parser.add_argument("--only", choices=list(JOBS), default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"CPU bf16 in hardware: {cpu_has_bf16()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="loupe-precision-"))
    os.environ["LOUPE_HOME"] = str(home)
    jobs = {k: v for k, v in JOBS.items() if args.only in (None, k)}
    try:
        print("\n== raw train_step, images/s: best and median of interleaved rounds (every round listed)")
        for name, changes in jobs.items():
            rates = step_rates(changes, ["fp32", "bf16"], args.steps, args.reps)
            if args.fp16:
                rates.update(step_rates(changes, ["fp16"], 2, 1))
            best_fp32, median_fp32 = max(rates["fp32"]), statistics.median(rates["fp32"])
            for p, r in rates.items():
                best, med = max(r), statistics.median(r)
                print(f"{name:<28} {p:<5} best {best:>7.1f} ({best / best_fp32:.2f}× fp32)  median {med:>7.1f} "
                      f"({med / median_fp32:.2f}×)  rounds {[round(x) for x in r]}", flush=True)
        if args.skip_fits:
            return
        print("\n== whole runs (train_run), accuracy of the kept model and seconds of the fit")
        for name, changes in jobs.items():
            for seed in args.seeds:
                for p in ("fp32", "bf16"):
                    r = train_run(job_spec(changes, p, seed), PresizeCache(max_entries=1), None, source="bench")
                    print(f"{name:<28} seed {seed} {r['precision']:<5} accuracy {r['accuracy']:.4f}  "
                          f"valid_loss {r['valid_loss']:.4f}  fit {r['seconds']:.1f} s  "
                          f"step images/s {r['images_per_s']:.0f}  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
