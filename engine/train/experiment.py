"""Experiments: one setting, several values, one run per value on the same data, split and seed, side by side.

    plan = plan_experiment(spec, "lr", [1e-4, 1e-3, 1e-2])       # specs that differ in the learning rate only
    seconds = estimate_experiment(plan.specs, cache)              # per run, before anything trains
    result = run_experiment(plan, cache, store, source="cli")     # result["runs"]: value, accuracy, …, verdict

Every run of an experiment is an ordinary run in the runs database, tagged with the experiment's id
(`SETTING-hex`, e.g. "lr-3f9a2c"), so the Runs page shows them together. The runs train one after another
in one job: Stop stops the whole experiment (the run in progress ends 'cancelled', the next never starts), and
Pause pauses the run in progress.
"""
from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence, Union

from engine.data.augment import AugSettings
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.store.jobs import Job, RunControl
from engine.train.learner import Callback
from engine.store.runs import RunStore
from engine.data.resolve import default_augment
from engine.spec import RunSpec, default_lr, default_size, override, total_epochs, validate, with_seed
from engine.train.run import estimate_seconds, train_run
from engine.train.verdict import verdict_of_run

Value = Union[float, int, str]

SETTINGS = {  # what an experiment can vary, as the command line names it → what the user calls it
    "lr": "learning rate",
    "aug": "augmentation strength",
    "size": "image size",
    "arch": "model",
    "epochs": "epochs",
}
MIN_VALUES, MAX_VALUES = 2, 4
AUG_MAX = 2.0  # augmentation strength: 0 (none of fastai's) to 2 (twice fastai's)
MIN_SCALE_FLOOR = 0.05  # a scaled random-resized crop keeps at least 5 % of the image
MIN_SIZE = 8  # the small model halves the image four times


@dataclass(frozen=True)
class ExperimentPlan:
    """An experiment ready to run: its id, the setting it varies, and one spec per value (all with one seed)."""

    id: str
    setting: str
    values: tuple[Value, ...]
    specs: tuple[RunSpec, ...]

    @property
    def labels(self) -> list[str]:
        """What the chart's legend and the table call each run."""
        return [value_label(self.setting, v) for v in self.values]


# ---------------------------------------------------------------- values

def scaled_augment(aug: AugSettings, strength: float) -> AugSettings:
    """`aug` made `strength` times as strong (0: none of it, 1: as given, 2: twice): rotation, zoom beyond 1, lighting,
    warp and the area a random-resized crop leaves out scale; flips and the chances of each transform stay."""
    return replace(aug, max_rotate=aug.max_rotate * strength, max_zoom=1 + (aug.max_zoom - 1) * strength,
                   max_lighting=aug.max_lighting * strength, max_warp=aug.max_warp * strength,
                   min_scale=max(MIN_SCALE_FLOOR, 1 - (1 - aug.min_scale) * strength) if aug.min_scale < 1 else 1.0)


def parse_value(setting: str, text: str) -> Value:
    """One value of a setting as typed ("3e-3", "0.5", "off", "64", "resnet18"), checked; UserError if unusable."""
    from engine.train.models import ARCHS  # torchvision is slow to import: only when needed

    check_setting(setting)
    text = str(text).strip()
    name = SETTINGS[setting]
    if setting == "arch":
        if text not in ARCHS:
            raise UserError(f"Unknown model “{text}”; choose from {', '.join(ARCHS)}.")
        return text
    if setting == "aug" and text.lower() in ("on", "off"):
        return "off" if text.lower() == "off" else 1.0
    try:
        number = float(text) if setting in ("lr", "aug") else int(text)
    except ValueError:
        kind = "a number" if setting in ("lr", "aug") else "a whole number"
        extra = " (or on / off)" if setting == "aug" else ""
        raise UserError(f"The {name} “{text}” is not {kind}{extra}.") from None
    if setting == "lr" and not 0 < number <= 100:
        raise UserError(f"A learning rate must be above 0 and at most 100 (got {text}).")
    if setting == "aug" and not 0 <= number <= AUG_MAX:
        raise UserError(f"An augmentation strength goes from 0 (none) to {AUG_MAX:g} (twice fastai's) (got {text}).")
    if setting == "aug":
        return round(number, 2)
    if setting == "size" and number < MIN_SIZE:
        raise UserError(f"An image size must be at least {MIN_SIZE} px (got {text}).")
    if setting == "epochs" and number < 1:
        raise UserError(f"A run needs at least 1 epoch (got {text}).")
    return number


def parse_vary(text: str) -> tuple[str, list[Value]]:
    """`lr=1e-5,3e-3,3` → ("lr", [1e-05, 0.003, 3.0]); UserError with a plain message for anything else."""
    name, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise UserError(f"--vary looks like NAME=V1,V2 with NAME one of {', '.join(SETTINGS)} (got “{text}”).")
    setting = name.strip()
    check_setting(setting)
    parsed = [parse_value(setting, v) for v in values.split(",") if v.strip()]
    check_values(setting, parsed)
    return setting, parsed


def check_setting(setting: str) -> None:
    """UserError unless `setting` is one an experiment can vary."""
    if setting not in SETTINGS:
        raise UserError(f"An experiment varies one of {', '.join(SETTINGS)} (got “{setting}”).")


def check_values(setting: str, values: Sequence[Value]) -> None:
    """UserError unless there are 2 to 4 values, all different."""
    if not MIN_VALUES <= len(values) <= MAX_VALUES:
        raise UserError(f"An experiment compares {MIN_VALUES} to {MAX_VALUES} values of the {SETTINGS[setting]} "
                        f"(got {len(values)}).")
    labels = [value_label(setting, v) for v in values]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise UserError(f"Each value once, please: {', '.join(twice)} is there twice.")


def short_number(x: float) -> str:
    """A number as a person writes it: 0.003 → '3e-3', 1.5e-05 → '1.5e-5', 0.1 → '0.1', 10.0 → '10'."""
    if 1e-2 <= abs(x) < 1e3:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def value_label(setting: str, value: Value) -> str:
    """What a run is called in the legend and the table: 'lr 3e-3', 'aug ×0.5', 'aug off', '64 px', 'resnet18', '3 epochs'."""
    if setting == "lr":
        return f"lr {short_number(float(value))}"
    if setting == "aug":
        return "aug off" if value == "off" else f"aug ×{float(value):g}"
    if setting == "size":
        return f"{value} px"
    if setting == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    return str(value)


def default_values(setting: str, spec: RunSpec, valley: float | None = None) -> list[Value]:
    """Values to start from: for the LR, ÷10, ×1 and ×10 of the LR finder's valley (else of the spec's LR)."""
    check_setting(setting)
    if setting == "lr":
        lr = valley or spec.train.lr or default_lr(spec.train.schedule)
        return [float(f"{lr * k:.2g}") for k in (0.1, 1, 10)]
    if setting == "aug":
        return ["off", 1.0, 2.0]
    if setting == "size":
        size = spec.data.size or default_size(spec.data)
        return [max(MIN_SIZE, size // 2), size]
    if setting == "arch":
        return [spec.model.arch, "resnet18" if spec.model.arch != "resnet18" else "small"]
    epochs = spec.train.epochs
    return list(dict.fromkeys([1, epochs, 2 * epochs]))[:MAX_VALUES] if epochs > 1 else [1, 3]


# ---------------------------------------------------------------- specs

def vary(spec: RunSpec, setting: str, value: Value) -> RunSpec:
    """`spec` with one setting set to `value`, and what follows from it.

    The LR keeps a slice's spread (its top becomes the value); the augmentation scales fastai's defaults for the
    data ('off': none at all); a new image size gets fastai's presize ratio again.
    """
    check_setting(setting)
    if setting == "lr":
        changes: dict = {"train.lr": float(value)}
        if spec.train.lr_slice is not None:
            lo, hi = spec.train.lr_slice
            changes["train.lr_slice"] = (float(value) * lo / hi, float(value))
    elif setting == "aug":
        changes = {"augment": AugSettings.off() if value == "off"
                   else scaled_augment(default_augment(spec.data), float(value))}
    elif setting == "size":
        changes = {"data.size": int(value), "data.presize": None}
    elif setting == "arch":
        changes = {"model.arch": str(value)}
    else:
        changes = {"train.epochs": int(value)}
    return override(spec, changes)


def value_of(setting: str, spec: RunSpec) -> Value | None:
    """The value of `setting` a run of an experiment trained with, read back from its spec (None: not one of ours)."""
    if setting == "lr":
        return spec.train.lr
    if setting == "size":
        return spec.data.size
    if setting == "arch":
        return spec.model.arch
    if setting == "epochs":
        return spec.train.epochs
    if spec.augment == AugSettings.off():
        return "off"
    default = default_augment(spec.data)
    if spec.augment is None or not default.max_rotate:
        return None
    strength = round(spec.augment.max_rotate / default.max_rotate, 4)
    return strength if scaled_augment(default, strength) == spec.augment else None


def new_experiment_id(setting: str) -> str:
    """'lr-3f9a2c': the setting it varies, then six random hex digits."""
    return f"{setting}-{secrets.token_hex(3)}"


def setting_of(experiment_id: str) -> str:
    """The setting an experiment varies, from its id."""
    return experiment_id.split("-", 1)[0]


def plan_experiment(base: RunSpec, setting: str, values: Sequence[Value], experiment_id: str | None = None) -> ExperimentPlan:
    """One spec per value, all with the base's data and split and one seed (the base's, else drawn now); UserError for
    values no run can use, or two values that would train the same run."""
    check_setting(setting)
    values = [parse_value(setting, str(v)) for v in values]
    check_values(setting, values)
    seeded = with_seed(base)
    specs = [vary(seeded, setting, v) for v in values]
    for spec in specs:
        validate(spec)
    if len({s.to_json() for s in specs}) < len(specs):
        raise UserError("Two of the values give the same settings: choose values that differ.")
    # each value as the runs database will give it back (on data without flips, 'aug 0' is no augmentation: 'off')
    values = [v if value_of(setting, s) is None else value_of(setting, s) for s, v in zip(specs, values)]
    return ExperimentPlan(id=experiment_id or new_experiment_id(setting), setting=setting, values=tuple(values),
                          specs=tuple(specs))


# ---------------------------------------------------------------- time

def timing_spec(spec: RunSpec) -> RunSpec:
    """The run whose few timed steps stand for `spec`: one epoch, and the learning rate and seed set aside (a step
    costs the same whatever they are), so that runs differing only in those share one timing."""
    train = replace(spec.train, epochs=1, lr=None, lr_slice=None, seed=0)
    return replace(spec, train=train)


def estimate_experiment(specs: Sequence[RunSpec], cache: PresizeCache, default_threads: int | None = None,
                        measure: Callable[[RunSpec], float] | None = None) -> list[float]:
    """Seconds each run (of a plan's specs) would take here: a few steps timed once per distinct model and image size;
    epochs scale it. `measure(timing_spec)` gives a run's seconds (default: `estimate_seconds` here; the app caches it)."""
    def here(timing: RunSpec) -> float:
        return estimate_seconds(timing, cache, default_threads=default_threads)

    measure = measure or here
    timed: dict[tuple, tuple[float, int]] = {}  # (arch, size) -> (seconds of the timing run, its epochs)
    out = []
    for spec in specs:
        key = (spec.model.arch, spec.data.size)
        if key not in timed:
            timing = timing_spec(spec)
            timed[key] = (measure(timing), total_epochs(timing))
        seconds, epochs = timed[key]
        out.append(seconds * total_epochs(spec) / epochs)
    return out


# ---------------------------------------------------------------- running

class RunInExperiment:
    """The job as one run of an experiment sees it: its events, its control, and progress within the run's share."""

    def __init__(self, job: Job, start: float, share: float) -> None:
        self.job, self.start, self.share = job, start, share
        self.control = job.control

    def emit(self, kind: str, **data) -> None:
        self.job.emit(kind, **data)

    def set_progress(self, done: float, total: float) -> None:
        self.job.set_progress(self.start + self.share * (min(done / total, 1.0) if total else 0.0), 1.0)

    @property
    def running_seconds(self) -> float:
        return self.job.running_seconds

    def set_eta(self, seconds: float) -> None:
        """This run's ETA, plus the runs after it at this run's pace (their share of the work, as epochs)."""
        later = max(0.0, 1.0 - self.start - self.share)  # the later runs' share of the whole experiment
        progress = self.job.progress
        per_share = self.job.running_seconds / progress if progress > 0 else 0.0  # seconds per whole experiment
        self.job.set_eta(seconds + later * per_share)


def run_experiment(plan: ExperimentPlan, cache: PresizeCache, store: RunStore, source: str = "app",
                   job: Job | None = None, callbacks: Sequence[Callback] = (), default_threads: int | None = None,
                   control: RunControl | None = None,
                   on_run: Callable[[int, ExperimentPlan], None] | None = None) -> dict:
    """Train the plan's runs one after another, each recorded with the experiment's id; stops (and stays stopped)
    when a run does not end 'done'. Returns {"experiment", "setting", "status", "runs": experiment_rows(…)}.

    Every run obeys `control` (default: the job's); between runs a pause holds the next one back.
    `on_run(i, plan)` is called before run i starts (the command line prints it); a job gets an 'experiment_run'
    event instead.
    """
    if control is None:
        control = job.control if job is not None else RunControl()
    weights = [total_epochs(s) for s in plan.specs]  # each run's share of the progress bar
    status = "done"
    for i, spec in enumerate(plan.specs):
        control.wait_while_paused()
        if control.stopped:
            status = "interrupted" if control.interrupted else "cancelled"
            break
        if job is not None:
            job.emit("experiment_run", index=i, value=plan.values[i], label=plan.labels[i])
        if on_run is not None:
            on_run(i, plan)
        step = RunInExperiment(job, sum(weights[:i]) / sum(weights), weights[i] / sum(weights)) if job is not None else None
        result = train_run(spec, cache, store, source=source, job=step, callbacks=callbacks,
                           default_threads=default_threads, control=control, experiment=plan.id)
        if result["status"] != "done":
            status = result["status"]
            break
    return {"experiment": plan.id, "setting": plan.setting, "status": status, "runs": experiment_rows(store, plan.id)}


def experiment_target(plan: ExperimentPlan, cache: PresizeCache, store: RunStore, default_threads: int | None = None):
    """A job target that runs an experiment (see `run_experiment`)."""

    def target(job: Job) -> dict:
        return run_experiment(plan, cache, store, source="app", job=job, default_threads=default_threads)

    return target


# ---------------------------------------------------------------- results

def experiment_rows(store: RunStore, experiment_id: str) -> list[dict]:
    """One row per run of an experiment, in the order they ran: run_id, value, label, status, accuracy, valid_loss,
    seconds (so far, while it runs), verdict (a code) and verdict_text."""
    setting = setting_of(experiment_id)
    rows = []
    for run in store.experiment_runs(experiment_id):
        value = value_of(setting, run["spec"])
        seconds = run["seconds"]
        if seconds is None and run["started"] is not None:  # still running, or cut off without a finish
            seconds = (run["finished"] or time.time()) - run["started"]
        judged = verdict_of_run(store.batches(run["id"]), store.epochs(run["id"]))
        rows.append({"run_id": run["id"], "value": value, "label": value_label(setting, value) if value is not None
                     else f"run #{run['id']}", "status": run["status"], "accuracy": _number(run["accuracy"]),
                     "valid_loss": _number(run["valid_loss"]), "seconds": None if seconds is None else round(seconds, 2),
                     "verdict": judged.code, "verdict_text": judged.text})
    return rows


def _number(x: float | None) -> float | None:
    """A metric as JSON can hold it: NaN and infinity (a diverged run's loss) become None."""
    return x if x is not None and math.isfinite(x) else None
