"""How honest the time estimate shown before a run is: the estimate next to the real time, on a small and a
resnet job on the built-in digits, measured one after the other in this run (prints figures, asserts nothing)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LOUPE_HOME", tempfile.mkdtemp(prefix="loupe-bench-"))

from engine.data.loaders import PresizeCache  # noqa: E402
from engine.train.device import background_threads  # noqa: E402
from engine.spec import RunSpec, override  # noqa: E402
from engine.train.run import estimate_seconds, train_run  # noqa: E402

JOBS = {
    "small, fine_tune 3 epochs (the default)": override(RunSpec(), {"train.seed": 1}),
    "resnet18 from scratch, 64 px, one_cycle 1 epoch": override(RunSpec(), {
        "model.arch": "resnet18", "model.pretrained": False, "data.size": 64, "data.presize": 72,
        "train.schedule": "one_cycle", "train.epochs": 1, "train.seed": 1}),
}


def main() -> None:
    cache = PresizeCache()
    threads = background_threads()  # as the app trains: all cores but one
    print(f"{'job':<50} {'estimate':>9} {'real':>9} {'real/estimate':>14}")
    for name, spec in JOBS.items():
        estimate = estimate_seconds(spec, cache, default_threads=threads)
        start = time.perf_counter()
        train_run(spec, cache, None, default_threads=threads)
        real = time.perf_counter() - start
        print(f"{name:<50} {estimate:>8.1f}s {real:>8.1f}s {real / estimate:>13.2f}×")


if __name__ == "__main__":
    main()
