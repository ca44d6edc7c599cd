"""Training and LR-finder runs from a run spec: the one path that the app's jobs and the command line share.

    result = train_run(spec, cache, store, source="cli")

resolves and seeds the spec, builds the data, model and learner (`prepare`: the only route from a spec to a
Learner), records every batch and epoch in the runs database, trains with the spec's schedule, and writes the model
and `spec.json` to the run folder.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.data.cache import CacheGet
from engine.data.images import PresizedImages
from engine.data.loaders import DataLoaders, LabelledItems, PresizeCache, load_items, usable_counts
from engine.train.device import default_device
from engine.train.distributed import Dist
from engine.errors import UserError, plain_reason
from engine.train.export import export_run
from engine.store.jobs import Job, RunControl
from engine.train.learner import Callback, EarlyStopping, Learner, LRFinderResult, SaveBest, batches_per_epoch
from engine.train.models import ModelInfo, create_model, has_pretrained_weights
from engine.store.runs import RunStore, run_dir
from engine.data.resolve import data_name, prepare_source, resolve
from engine.spec import SPEC_FILE, LRFindSpec, RunSpec, TrainSpec, save_spec, total_epochs, validate, with_seed

HOLD_BATCH_ENV, HOLD_FILE_ENV = "LOUPE_HOLD_AT_BATCH", "LOUPE_HOLD_FILE"


@dataclass
class PreparedData:
    """A spec's data, ready: the spec (resolved, seeded, threads recorded), its labelled items and their pixels.

    What a run and its time estimate share: each builds its own DataLoaders (and model) from it, so the estimate's
    steps never draw from the run's random streams.
    """

    spec: RunSpec
    items: LabelledItems
    images: PresizedImages
    got: CacheGet  # what getting the pixels cost: a cache hit, or seconds of decoding


@dataclass
class Prepared:
    """A run ready to train: its spec (resolved, seeded, threads recorded), data and learner."""

    spec: RunSpec
    items: LabelledItems
    learn: Learner
    info: ModelInfo
    got: CacheGet


def ready_spec(spec: RunSpec, default_threads: int | None = None) -> RunSpec:
    """The spec a run records: its data folder made ready, every automatic setting filled, a seed drawn, the
    CPU threads fixed (so a replay on the same machine computes the same numbers)."""
    prepare_source(spec)
    spec = with_seed(resolve(spec))
    validate(spec)
    threads = spec.device.threads or default_threads or torch.get_num_threads()
    return replace(spec, device=replace(spec.device, threads=threads))


def device_of(spec: RunSpec) -> torch.device:
    return default_device() if spec.device.device == "auto" else torch.device(spec.device.device)


# ---------------------------------------------------------------- prepare: the one route from a spec to a Learner
# prepare = prepare_data (spec -> items and pixels) + build_learner (-> DataLoaders, model, Learner); data_loaders is
# the one place a spec's data settings become DataLoaders (the Data page's preview uses it alone).

def prepare_data(spec: RunSpec, cache: PresizeCache, job: Job | None = None, default_threads: int | None = None,
                 dist: Dist | None = None, split: np.ndarray | None = None) -> PreparedData:
    """The spec made ready, its items and their pixels (from the shared pixel cache).

    Under torchrun (`dist`), rank 0 makes the spec ready (its seed drawn) and every rank uses that one spec.
    `split` ('train' / 'valid' / '' per item, in the items' order) replaces the spec's split rule.
    """
    if dist is None:
        spec = ready_spec(spec, default_threads)
    else:
        raw = spec
        spec = dist.from_main(lambda: ready_spec(raw, default_threads))
        dist.local_first(lambda: prepare_source(spec))  # each machine readies its own copy of the data
    items = load_items(spec.data)
    if split is not None:
        items = with_split(items, split)
    if job is not None:
        job.emit("stage", text="Decoding images (first time only)…")
    images = cache.get(items.scanned_paths, spec.data.presize, spec.data.presize_method)
    return PreparedData(spec=spec, items=items, images=images, got=cache.last_get)


def with_split(items: LabelledItems, split: np.ndarray) -> LabelledItems:
    """The items with `split` ('train' / 'valid' / '' per item) instead of their split rule's."""
    if len(split) != len(items.rel_paths):
        raise UserError("The data set changed while Loupe was reading it: start again.")
    return replace(items, split=np.asarray(split, dtype=object))


def data_loaders(spec: RunSpec, items: LabelledItems, images: PresizedImages, device: torch.device | None = None,
                 seed: int | None = None) -> DataLoaders:
    """The DataLoaders a spec's data settings make (size, batch size, augmentation), seeded with `seed` (default: the
    spec's), on `device` (default: the spec's)."""
    return DataLoaders(items, images, size=spec.data.size, bs=spec.data.bs, aug=spec.augment,
                       device=device_of(spec) if device is None else device,
                       seed=spec.train.seed if seed is None else seed)


def build_learner(data: PreparedData, job: Job | None = None, dist: Dist | None = None,
                  control: RunControl | None = None) -> Prepared:
    """The DataLoaders, model and learner of a ready spec's data; the learner obeys `control` (default: the job's)."""
    spec = data.spec
    device = device_of(spec) if dist is None else dist.device(device_of(spec))
    dls = data_loaders(spec, data.items, data.images, device=device)
    if dist is not None:
        dls.shard(dist.rank, dist.world_size)
    torch.manual_seed(spec.train.seed)  # the model's initial weights and dropout follow the seed
    want = spec.model.pretrained and spec.model.arch != "small"
    model, info = create_model(spec.model.arch, len(dls.classes), pretrained=want)
    if dist is not None and not dist.same([len(dls.classes), dls.n_train, info.pretrained]):
        raise UserError("The processes of this torchrun job do not see the same run (their images, classes or "
                        "pretrained weights differ): give every machine the same data and the same weights.")
    if control is None and job is not None:
        control = job.control
    learn = Learner(model, dls, pretrained=info.pretrained, wd=spec.train.wd,
                    cpu_threads=spec.device.threads if device.type == "cpu" else None, precision=spec.device.precision,
                    control=control)
    learn.dist = dist
    return Prepared(spec=spec, items=data.items, learn=learn, info=info, got=data.got)


def prepare(spec: RunSpec, cache: PresizeCache, job: Job | None = None, default_threads: int | None = None,
            dist: Dist | None = None, split: np.ndarray | None = None, control: RunControl | None = None) -> Prepared:
    """Data (from the shared pixel cache), the model and the learner of a run; the spec is made ready first.

    The only route from a spec to a Learner: `prepare_data`, then `build_learner` (see those for the arguments).
    """
    return build_learner(prepare_data(spec, cache, job, default_threads, dist, split), job, dist, control)


def fit(learn: Learner, train: TrainSpec) -> dict:
    """Train with the spec's schedule: fine_tune, fit_one_cycle, or unfreeze + fit_one_cycle with a slice of LRs."""
    if train.schedule == "fine_tune":
        return learn.fine_tune(train.epochs, base_lr=train.lr, freeze_epochs=train.freeze_epochs, lr_mult=train.lr_mult)
    learn.unfreeze()
    lr = slice(*train.lr_slice) if train.lr_slice else train.lr
    return learn.fit_one_cycle(train.epochs, lr)


class RunRecorder(Callback):
    """Writes every batch and epoch of a run to the runs database as it goes."""

    def __init__(self, store: RunStore, run_id: int) -> None:
        self.store, self.run_id = store, run_id

    def after_batch(self, learn, logs):
        self.store.add_batch(self.run_id, {k: logs[k] for k in ("iter", "epoch", "loss", "smooth_loss", "lr", "mom")})

    def after_epoch(self, learn, logs):
        row = {k: logs[k] for k in ("epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "time")}
        self.store.add_epoch(self.run_id, {**row, "last_iter": logs["iter"]})


class JobEvents(Callback):
    """Reports a run to its job: progress, an ETA from the steps measured so far, and why a callback ended the fit.
    (The curves themselves the pages read from the runs database, which `RunRecorder` fills.)"""

    RECENT = 20  # batches the ETA's step time is measured over

    def __init__(self, job: Job, n_total: int, n_epochs: int) -> None:
        self.job, self.n_total, self.n_epochs, self.done = job, n_total, n_epochs, 0
        self.batch_seconds: list[float] = []  # the most recent batches' wall time (batch making included)
        self.valid_seconds: list[float] = []  # what each epoch's validation took
        self.epochs_done = 0
        self.mark: float | None = None  # the job's running seconds when the last batch or validation ended

    def before_fit(self, learn, logs):
        self.mark = self.job.running_seconds

    def after_batch(self, learn, logs):
        self.done += 1
        self.job.set_progress(self.done, self.n_total)
        now = self.job.running_seconds
        if self.mark is not None:
            self.batch_seconds = (self.batch_seconds + [now - self.mark])[-self.RECENT:]
            per_batch = sum(self.batch_seconds) / len(self.batch_seconds)
            per_valid = sum(self.valid_seconds) / len(self.valid_seconds) if self.valid_seconds else per_batch
            left_epochs = max(0, self.n_epochs - self.epochs_done)
            self.job.set_eta((self.n_total - self.done) * per_batch + left_epochs * per_valid)
        self.mark = now

    def after_epoch(self, learn, logs):
        now = self.job.running_seconds
        if self.mark is not None:
            self.valid_seconds.append(max(0.0, now - self.mark))
        self.mark = now  # the next batch's time leaves the validation out
        self.epochs_done += 1

    def after_fit(self, learn, logs):
        if learn.fit_note:
            self.job.emit("note", text=learn.fit_note)


class Hold(Callback):
    """A test hook: after batch `at`, wait until `path` exists (or the run is stopped).

    Browser tests set LOUPE_HOLD_AT_BATCH and LOUPE_HOLD_FILE so they can look at a run in progress
    however fast the machine is, then let it go on by creating the file.
    """

    def __init__(self, at: int, path: Path) -> None:
        self.at, self.path = at, Path(path)

    def after_batch(self, learn, logs):
        if logs["iter"] != self.at:
            return
        while not self.path.exists() and not learn.control.wait_stopped(timeout=0.05):  # a file has no condition
            pass


def hold_from_env() -> list[Callback]:
    """The Hold hook when the environment asks for it (tests only), else nothing."""
    at, path = os.environ.get(HOLD_BATCH_ENV), os.environ.get(HOLD_FILE_ENV)
    return [Hold(int(at), Path(path))] if at and path else []


def train_run(spec: RunSpec | PreparedData, cache: PresizeCache, store: RunStore | None, source: str = "app",
              out_dir: Path | None = None, job: Job | None = None, callbacks: Sequence[Callback] = (),
              default_threads: int | None = None, control: RunControl | None = None, dist: Dist | None = None,
              estimated_s: float | None = None, experiment: str | None = None) -> dict:
    """Train the run a spec describes, recorded in `store` (if given; tagged with `experiment`'s id, if one), the
    model exported to the run folder.

    `spec` may come as the data `prepare_data` made ready from it (for the time estimate): the run then reuses it.
    The run folder is `out_dir`, else LOUPE_HOME/runs/<id>; it holds spec.json from the start, so even a
    run cut short can be replayed. Returns the results (accuracy and valid_loss are the kept model's).
    The run obeys `control` (default: its job's): a stop ends it 'cancelled' (the user's Stop), an interrupt
    'interrupted' (the process is shutting down); either way its rows, and its model if an epoch finished, are
    kept. A KeyboardInterrupt (a second Ctrl-C) also ends it 'interrupted', without a model.
    Under torchrun (`dist`) every rank trains, and rank 0 alone records the run and writes its folder.
    """
    if dist is not None and not dist.is_main:
        store, out_dir = None, None
    data = spec if isinstance(spec, PreparedData) else prepare_data(spec, cache, job, default_threads, dist)
    prepared = build_learner(data, job, dist, control)
    got = prepared.got  # what preparing the pixels cost: a cache hit, or seconds of decoding
    spec, learn, info = prepared.spec, prepared.learn, prepared.info
    if info.message and job is not None:
        job.emit("note", text=info.message)
    classes = learn.dls.classes
    world_size = dist.world_size if dist is not None else 1
    counts = usable_counts(prepared.items, learn.dls.images)  # the numbers the Data page and the sidebar show
    built = {"arch": spec.model.arch, "pretrained": info.pretrained, "classes": classes, "n_train": counts.n_train,
             "n_valid": counts.n_valid}
    run_id = store.create_run(spec, built, name=data_name(spec.data),
                              source=source, world_size=world_size, experiment=experiment) if store is not None else None
    if job is not None and run_id is not None:
        job.emit("run", run_id=run_id)
    folder = Path(out_dir) if out_dir is not None else (run_dir(run_id) if run_id is not None else None)
    if folder is not None:
        save_spec(spec, folder / SPEC_FILE)
        if store is not None:
            store.set_folder(run_id, str(folder))
    n_total = total_epochs(spec) * batches_per_epoch(learn.dls.n_train, learn.dls.bs)
    if store is not None:
        learn.callbacks.append(RunRecorder(store, run_id))
    if job is not None:
        learn.callbacks.append(JobEvents(job, n_total, total_epochs(spec)))
        job.emit("stage", text="Training")
    if spec.train.patience:
        learn.callbacks.append(EarlyStopping(patience=spec.train.patience))
    best = SaveBest() if spec.train.keep_best else None
    learn.callbacks.extend([*([best] if best else []), *callbacks, *hold_from_env()])
    start = time.perf_counter()
    try:
        logs = fit(learn, spec.train)
    except BaseException as e:
        if store is not None:
            if isinstance(e, KeyboardInterrupt):
                store.finish(run_id, "interrupted")
            else:
                store.finish(run_id, "failed", error=plain_reason(e))
        raise
    seconds = time.perf_counter() - start
    control = learn.control
    status = "interrupted" if control.interrupted else "cancelled" if control.stopped else "done"
    epochs = learn.recorder.epochs
    result = {"run_id": run_id, "status": status, "seed": spec.train.seed, "arch": spec.model.arch,
              "pretrained": info.pretrained, "classes": len(classes), "device": str(learn.device),
              "precision": learn.precision,
              "epochs": len(epochs), "seconds": round(seconds, 2), "world_size": world_size,
              "images_per_s": round(learn.recorder.images_per_s * world_size, 1),  # every rank trains as fast
              "kept_epoch": None, "accuracy": None, "valid_loss": None, "error_rate": None, "out": None,
              "estimated_s": None if estimated_s is None else round(estimated_s, 2),
              "decode_s": round(got.decode_s, 3), "cache": got.status}
    if epochs:  # something worth keeping
        kept = best.best_epoch if best is not None and best.best_epoch is not None else epochs[-1]["epoch"]
        final = learn.validate()  # the weights the run ends with: the kept epoch's
        result.update(kept_epoch=kept, accuracy=final["accuracy"], valid_loss=final["valid_loss"],
                      error_rate=final["error_rate"])
        if folder is not None:
            export_run(folder, learn.model, spec.model.arch, classes, spec.data,
                       extra={**result, "epochs_table": epochs})
            result["out"] = str(folder)
    if store is not None:
        store.finish(run_id, status, weights_path=result["out"], kept_epoch=result["kept_epoch"],
                     accuracy=result["accuracy"], valid_loss=result["valid_loss"])
    result["fit_status"] = logs.get("status")
    return result


def train_target(spec: RunSpec, cache: PresizeCache, store: RunStore, default_threads: int | None = None,
                 estimated_s: float | None = None):
    """A job target that trains a spec (see `train_run`), leaving the UI a core on a CPU; `estimated_s` is the
    estimate the user was shown, reported beside the real time."""

    def target(job: Job) -> dict:
        return train_run(spec, cache, store, source="app", job=job, default_threads=default_threads,
                         estimated_s=estimated_s)

    return target


def find_lr(spec: RunSpec, cache: PresizeCache, finder: LRFindSpec, job: Job | None = None,
            default_threads: int | None = None, on_step: Callable[[int, float, float], None] | None = None,
            note: Callable[[str], None] | None = None) -> LRFinderResult:
    """fastai's LR finder (`finder`'s rates and steps) on the learner a spec prepares, as its schedule would start it
    (frozen for fine_tune with pretrained weights); `note` hears what the model could not have (e.g. no pretrained
    weights)."""
    prepared = prepare(spec, cache, job, default_threads)
    learn = prepared.learn
    if prepared.info.message and note is not None:
        note(prepared.info.message)
    if learn.pretrained and prepared.spec.train.schedule == "fine_tune":
        learn.freeze()  # as fastai: the finder runs on the learner as fine_tune will start it
    if job is not None:
        job.emit("stage", text="Finding a learning rate")
    return learn.lr_find(start_lr=finder.start_lr, end_lr=finder.end_lr, num_it=finder.num_it, on_step=on_step)


def lr_find_target(spec: RunSpec, cache: PresizeCache, finder: LRFindSpec, default_threads: int | None = None):
    """A job target that runs the LR finder (see `find_lr`), its steps and notes reported as events."""

    def target(job: Job) -> LRFinderResult:
        def on_step(i: int, lr: float, loss: float) -> None:
            job.set_progress(i, finder.num_it)
            job.emit("lr_step", i=i, lr=lr, loss=loss if math.isfinite(loss) else None)

        return find_lr(spec, cache, finder, job=job, default_threads=default_threads, on_step=on_step,
                       note=lambda text: job.emit("note", text=text))

    return target


def lr_finder_key(spec: RunSpec) -> str:
    """What an LR finder result belongs to: the data (and its preparation), the model and the schedule's start.

    A rate found for one data set or model is not another's: pages offer a found rate only where this matches.
    """
    d = spec.to_dict()
    frozen = spec.train.schedule == "fine_tune" and spec.model.pretrained and has_pretrained_weights(spec.model.arch)
    return json.dumps({"data": d["data"], "augment": d["augment"], "model": d["model"], "frozen": frozen},
                      sort_keys=True)


def format_duration(seconds: float) -> str:
    """62 → '1:02', 3725 → '1:02:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def planned_batches(spec: RunSpec, n_train: int, n_valid: int) -> tuple[int, int]:
    """(training steps, validation batches) a run will do: the work a time estimate multiplies out."""
    epochs = total_epochs(spec)
    return epochs * batches_per_epoch(n_train, spec.data.bs), epochs * math.ceil(n_valid / spec.data.bs)


def estimate_from_step(step_seconds: float, spec: RunSpec, n_train: int, n_valid: int,
                       valid_batch_seconds: float | None = None) -> float:
    """Seconds a run takes from the measured seconds of one training step (batch making included) and of one
    validation batch (about a third of a step when not measured)."""
    steps, valid = planned_batches(spec, n_train, n_valid)
    per_valid = step_seconds / 3 if valid_batch_seconds is None else valid_batch_seconds
    return step_seconds * steps + per_valid * valid


def time_steps(learn: Learner, steps: int, valid_batches: int = 0) -> tuple[float, float | None]:
    """(seconds of one training step, of one validation batch or None) on this learner, with its thread count: the
    median of `steps` timed steps (each making its augmented batch, as a run does) after a warm-up step, and the mean
    of up to `valid_batches` validation batches after a warm-up one. The weights change: use a throwaway learner."""
    threads = torch.get_num_threads()
    if learn.cpu_threads:
        torch.set_num_threads(learn.cpu_threads)
    try:
        def batches():
            while True:
                yield from learn.dls.train()

        stream = batches()
        learn.model.train()
        learn.train_step(*next(stream))  # warm-up: the first step pays for one-off set-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            learn.train_step(*next(stream))
            times.append(time.perf_counter() - start)
        per_step = float(np.median(times))  # a step slowed by another program on the machine is not the rule
        per_valid = None
        if valid_batches:
            learn.model.eval()
            with torch.no_grad():
                valid = iter(learn.dls.valid())
                learn.model(next(valid)[0])  # warm-up
                start, n = time.perf_counter(), 0
                for x, _ in valid:
                    learn.model(x)
                    n += 1
                    if n == valid_batches:
                        break
                per_valid = (time.perf_counter() - start) / n if n else None
            learn.model.train()
    finally:
        torch.set_num_threads(threads)
    return per_step, per_valid


def timing_learner(data: PreparedData) -> Learner:
    """A throwaway learner of the data's run, from scratch (timing a step needs no download)."""
    spec = data.spec
    return build_learner(replace(data, spec=replace(spec, model=replace(spec.model, pretrained=False)))).learn


def estimate_seconds(spec: RunSpec | PreparedData, cache: PresizeCache, steps: int = 4,
                     default_threads: int | None = None) -> float:
    """How long a run would take here: a few real training steps (making each augmented batch, as the run will)
    and a few validation batches, timed on a throwaway learner with the run's thread count, multiplied out.
    Given the run's prepared data (`prepare_data`), the run can reuse it afterwards."""
    if isinstance(spec, PreparedData):
        data = spec
    else:
        data = prepare_data(replace(spec, train=replace(spec.train, seed=0)), cache, default_threads=default_threads)
    learn = timing_learner(data)
    per_step, per_valid = time_steps(learn, steps, valid_batches=2)
    return estimate_from_step(per_step, data.spec, learn.dls.n_train, learn.dls.n_valid, per_valid)
