"""Pieces of the Compare page and of the Runs page's experiment view: value inputs, the overlaid chart, the table."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.train.experiment import (AUG_MAX, MAX_VALUES, MIN_SIZE, MIN_VALUES, SETTINGS, ExperimentPlan, Value,
                               default_values, estimate_experiment, experiment_rows, setting_of, short_number,
                               value_label)
from engine.store.jobs import DONE
from engine.train.models import ARCHS
from engine.store.runs import RunStore
from engine.spec import RunSpec, total_epochs
from engine.train.learner import batches_per_epoch
from engine.train.run import estimate_seconds, lr_finder_key
from ui.charts_show import show_chart
from ui.charts_train import experiment_figure
from ui.shared import job_manager, presize_cache
from ui.state import SessionKey
from ui.text import md
from ui.train_view import format_seconds

EXPERIMENT_JOB = SessionKey[str]("experiment.job_id", "")
EXPERIMENT_SETTING = SessionKey[str]("experiment.setting")
RUNS_EXPERIMENT = SessionKey[str]("runs.experiment")  # the experiment the Runs page shows overlaid
AUG_CHOICES: list[Value] = ["off", 0.0, 0.25, 0.5, 1.0, 1.5, AUG_MAX]


def count_key(setting: str, basis: str) -> SessionKey[int]:
    """How many values the user compares (a new starting point gives fresh inputs)."""
    return SessionKey[int](f"experiment.count.{setting}.{basis}")


def value_key(setting: str, basis: str, i: int) -> SessionKey:
    """The i-th value input of a setting, for one starting point (the LR finder's valley, the spec's value)."""
    return SessionKey(f"experiment.value.{setting}.{basis}.{i}")


def lr_valley(owner: str, spec: RunSpec) -> float | None:
    """The valley the LR finder suggested in this window, if it has run to the end on these data and this model."""
    job = job_manager().latest("lr_find", owner=owner)
    if job is None or job.state != DONE or "valley" not in job.result.suggestions:
        return None
    if job.meta.get("data") != lr_finder_key(spec):  # found on another data set or model: not this one's rate
        return None
    return job.result.suggestions["valley"].lr


def setting_picker() -> str:
    """The setting to vary."""
    EXPERIMENT_SETTING.setdefault("lr")
    return st.segmented_control("Setting to compare", list(SETTINGS), format_func=SETTINGS.get, required=True,
                                key=EXPERIMENT_SETTING.key)


def _extra_value(setting: str, known: list[Value]) -> Value:
    """A further value after the prefilled ones: the next step up, or a choice not used yet."""
    last = known[-1]
    if setting == "lr":
        return float(f"{float(last) * 10:.2g}")
    if setting in ("size", "epochs"):
        return int(last) * 2
    choices = AUG_CHOICES if setting == "aug" else list(ARCHS)
    return next((c for c in choices if c not in known), choices[-1])


def value_inputs(setting: str, spec: RunSpec, valley: float | None) -> list[Value]:
    """2 to 4 value inputs side by side, prefilled (the LR from the finder's valley when there is one); their values."""
    defaults = default_values(setting, spec, valley if setting == "lr" else None)
    basis = "_".join(str(v) for v in defaults)
    if setting == "lr":
        where = f"the LR finder's valley ({short_number(valley)})" if valley else \
            f"the learning rate on the Train page ({short_number(spec.train.lr)})"
        st.caption(f"Prefilled from {where}: ÷10, ×1 and ×10.")
    elif setting == "aug":
        st.caption("Strength of fastai's augmentation (rotation, zoom, lighting, warp): 0 is none of it, 1 is "
                   "fastai's, 2 is twice as strong; off also turns flips off.")
    count = count_key(setting, basis)
    count.setdefault(len(defaults))
    n = st.segmented_control("How many values", list(range(MIN_VALUES, MAX_VALUES + 1)), required=True, key=count.key)
    while len(defaults) < n:
        defaults.append(_extra_value(setting, defaults))
    values = []
    for i, col in enumerate(st.columns(MAX_VALUES)[:n]):
        key = value_key(setting, basis, i)
        key.setdefault(defaults[i])
        label = f"Value {i + 1}"
        if setting == "lr":
            values.append(col.number_input(label, 1e-8, 100.0, format="%.1e", step=1e-4, key=key.key))
        elif setting == "aug":
            values.append(col.selectbox(label, AUG_CHOICES, format_func=lambda v: value_label("aug", v), key=key.key))
        elif setting == "arch":
            values.append(col.selectbox(label, list(ARCHS), key=key.key))
        elif setting == "size":
            values.append(col.number_input(label, MIN_SIZE, 1024, step=4, key=key.key))
        else:
            values.append(col.number_input(label, 1, 200, key=key.key))
    return values


@st.cache_data(max_entries=32, show_spinner="Timing a few steps…")
def _run_seconds(timing_json: str, threads: int | None) -> float:
    return estimate_seconds(RunSpec.from_json(timing_json), presize_cache(), default_threads=threads)


def estimate(plan: ExperimentPlan, threads: int | None) -> list[float]:
    """Seconds of each run of the plan on this computer (each model and size timed once, then remembered)."""
    return estimate_experiment(plan.specs, presize_cache(), measure=lambda timing: _run_seconds(timing.to_json(), threads))


def planned_batches(plan: ExperimentPlan, n_train: int) -> int:
    """The longest run's batches: the x-axis the live chart keeps while the runs fill it."""
    return max(total_epochs(s) * batches_per_epoch(n_train, s.data.bs) for s in plan.specs)


def experiment_results(store: RunStore, experiment_id: str, key: str, plan: ExperimentPlan | None = None,
                       n_batches: int | None = None, pending: str = "waiting") -> None:
    """The experiment's runs overlaid on one chart, then a table: value, accuracy, valid loss, time, verdict."""
    rows = experiment_rows(store, experiment_id)
    curves = [(row["label"], store.batches(row["run_id"]), store.epochs(row["run_id"])) for row in rows]
    if curves:
        show_chart(experiment_figure(curves, n_batches), key=key)
    st.table(results_table(rows, plan, pending), hide_index=True)


def results_table(rows: list[dict], plan: ExperimentPlan | None = None, pending: str = "waiting") -> pd.DataFrame:
    """One line per value; the plan's values without a run yet say `pending` ('waiting', or 'not run')."""
    lines = []
    for row in rows:
        running = row["status"] in ("running", "paused", "stopping")
        lines.append({
            "value": md(row["label"]),
            "accuracy": f"{row['accuracy']:.1%}" if row["accuracy"] is not None else "–",
            "valid loss": f"{row['valid_loss']:.4f}" if row["valid_loss"] is not None else "–",
            "time": format_seconds(row["seconds"]) if row["seconds"] is not None else "–",
            "verdict": "training…" if running else md(row["verdict_text"]),
        })
    if plan is not None:
        for label in plan.labels[len(rows):]:
            lines.append({"value": md(label), "accuracy": "–", "valid loss": "–", "time": "–", "verdict": pending})
    return pd.DataFrame(lines, columns=["value", "accuracy", "valid loss", "time", "verdict"])


def experiment_name(experiment_id: str, runs: int, date) -> str:
    """How the Runs page lists an experiment."""
    setting = SETTINGS.get(setting_of(experiment_id), setting_of(experiment_id))
    return f"{experiment_id}: {setting}, {runs} run{'s' if runs != 1 else ''} · {date:%Y-%m-%d %H:%M} UTC"
