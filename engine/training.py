"""Training and LR-finder runs as background jobs: data + model + learner, wired to a Job and the run history."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from engine.data import DataConfig, DataLoaders, PresizeCache, load_items
from engine.device import background_threads, default_device
from engine.export import export_run
from engine.jobs import Job
from engine.learner import EarlyStopping, FunctionCallback, Learner, SaveBest
from engine.models import ModelInfo, create_model
from engine.runs import RunStore, run_dir


@dataclass(frozen=True)
class TrainSettings:
    """What the Train page sets: fastai's defaults."""

    arch: str = "small"
    pretrained: bool = True  # used only where weights can be had; else from scratch, said plainly
    method: str = "fine_tune"  # or "one_cycle"
    epochs: int = 3
    lr: float = 2e-3  # fine_tune's base_lr, or one_cycle's lr_max
    lr_mult: float = 100  # fine_tune: the earliest layers train at lr / lr_mult once unfrozen
    freeze_epochs: int = 1
    patience: int = 0  # early stopping on validation loss; 0 = off
    save_best: bool = True
    seed: int | None = None


def build_learner(config: DataConfig, settings: TrainSettings, cache: PresizeCache, job: Job | None = None,
                  device: torch.device | None = None, cpu_threads: int | None = background_threads()
                  ) -> tuple[Learner, ModelInfo]:
    """Load the data (from the shared pixel cache), create the model and the learner for a run."""
    items = load_items(config)
    if job is not None:
        job.emit("stage", text="Decoding images (first time only)…")
    images = cache.get(items.scanned_paths, config.presize, config.method,
                       progress=(lambda d, t: job.emit("presize", done=d, total=t)) if job else None)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    dls = DataLoaders(items, images, size=config.size, bs=config.bs, aug=config.aug,
                      device=device or default_device(), seed=settings.seed)
    progress = (lambda d, t: job.emit("weights", done=d, total=t)) if job else None
    want = settings.pretrained and settings.arch != "small"
    model, info = create_model(settings.arch, len(dls.classes), pretrained=want, progress=progress)
    learn = Learner(model, dls, pretrained=info.pretrained, cpu_threads=cpu_threads)
    if job is not None:
        learn.stop_event, learn.pause_event = job.stop_event, job.pause_event
    return learn, info


def total_epochs(settings: TrainSettings) -> int:
    return settings.epochs + (settings.freeze_epochs if settings.method == "fine_tune" else 0)


def add_stopping_callbacks(learn: Learner, settings: TrainSettings) -> SaveBest | None:
    """Early stopping and keep-the-best-epoch, as the settings ask; returns the SaveBest callback if any."""
    if settings.patience:
        learn.callbacks.append(EarlyStopping(patience=settings.patience))
    best = SaveBest() if settings.save_best else None
    if best:
        learn.callbacks.append(best)
    return best


def fit(learn: Learner, settings: TrainSettings) -> dict:
    """Run the chosen method on a learner."""
    if settings.method == "fine_tune":
        return learn.fine_tune(settings.epochs, base_lr=settings.lr, freeze_epochs=settings.freeze_epochs,
                               lr_mult=settings.lr_mult)
    return learn.fit_one_cycle(settings.epochs, settings.lr)


def train_target(config: DataConfig, settings: TrainSettings, cache: PresizeCache, store: RunStore):
    """A job target that trains, records every batch and epoch, and exports the model."""

    def target(job: Job) -> dict:
        learn, info = build_learner(config, settings, cache, job)
        if info.message:
            job.emit("note", text=info.message)
        run_id = store.create_run(
            config.name, data=_jsonable(config), model={"arch": settings.arch, "pretrained": info.pretrained,
                                                        "classes": learn.dls.classes},
            train=dataclasses.asdict(settings))
        job.emit("run", run_id=run_id)
        n_total = total_epochs(settings) * max(1, learn.dls.n_train // learn.dls.bs)
        state = {"done": 0}

        def on_event(event: str, logs: dict) -> None:
            if event == "after_batch":
                state["done"] += 1
                row = {k: logs[k] for k in ("iter", "epoch", "loss", "smooth_loss", "lr", "mom")}
                store.add_batch(run_id, row)
                job.set_progress(state["done"], n_total)
                job.emit("batch", **row)
            elif event == "after_epoch":
                row = {k: logs[k] for k in ("epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "time")}
                row["last_iter"] = logs["iter"]
                store.add_epoch(run_id, row)
                job.emit("epoch", **row)
            elif event == "after_fit" and logs.get("note"):
                job.emit("note", text=logs["note"])

        learn.callbacks.append(FunctionCallback(on_event))
        best = add_stopping_callbacks(learn, settings)
        job.emit("stage", text="Training")
        try:
            logs = fit(learn, settings)
        except BaseException as e:
            store.finish(run_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        status = "cancelled" if job.stop_event.is_set() else "done"
        weights = None
        if learn.recorder.epochs:  # something worth keeping
            weights = str(export_run(run_dir(run_id), learn.model, settings.arch, learn.dls.classes, config,
                                     extra={"run_id": run_id, "epochs": learn.recorder.epochs}))
        store.finish(run_id, status, weights_path=weights)
        final = learn.recorder.epochs[-1] if learn.recorder.epochs else {}
        return {"run_id": run_id, "status": status, "best_epoch": best.best_epoch if best else None,
                "final": final, "images_per_s": learn.recorder.images_per_s, "status_logs": logs.get("status")}

    return target


def lr_find_target(config: DataConfig, settings: TrainSettings, cache: PresizeCache, num_it: int = 100):
    """A job target that runs the LR finder (on the learner as fine_tune would start it) and returns its result."""

    def target(job: Job):
        learn, info = build_learner(config, settings, cache, job)
        if info.message:
            job.emit("note", text=info.message)
        if learn.pretrained and settings.method == "fine_tune":
            learn.freeze()
        job.emit("stage", text="Finding a learning rate")

        def on_step(i: int, lr: float, loss: float) -> None:
            job.set_progress(i, num_it)
            job.emit("lr_step", i=i, lr=lr, loss=loss if math.isfinite(loss) else None)

        return learn.lr_find(num_it=num_it, on_step=on_step)

    return target


def estimate_seconds(config: DataConfig, settings: TrainSettings, cache: PresizeCache, steps: int = 3) -> float:
    """How long a run would take here, from a few timed training steps on a throwaway learner."""
    learn, _ = build_learner(config, dataclasses.replace(settings, pretrained=False), cache)
    batches = iter(learn.dls.train())
    x, y = next(batches)
    learn.train_step(x, y)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches, (x, y))
        learn.train_step(x, y)
    per_step = (time.perf_counter() - start) / steps
    n_batches = total_epochs(settings) * max(1, learn.dls.n_train // learn.dls.bs)
    valid_batches = math.ceil(learn.dls.n_valid / learn.dls.bs) * total_epochs(settings)
    return per_step * n_batches + per_step / 3 * valid_batches  # a validation batch costs about a third of a step


def _jsonable(config: DataConfig) -> dict:
    return json_safe(dataclasses.asdict(config))


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
