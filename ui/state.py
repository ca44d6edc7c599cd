"""Objects shared across reruns, pages and sessions, and the current data choice in session state."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from engine.data import DataConfig, PresizeCache
from engine.errors import UserError
from engine.export import ExportedModel, load_run
from engine.review import RunReview, config_from_dict, data_fingerprint, loss_table, review_run
from engine.jobs import JobManager
from engine.runs import RunStore


@st.cache_resource
def presize_cache() -> PresizeCache:
    """Presized pixels, shared by every page and session of this server."""
    return PresizeCache(max_entries=2)


@st.cache_resource
def job_manager() -> JobManager:
    """The background jobs: they outlive reruns, page switches and browser reloads."""
    return JobManager()


@st.cache_resource
def run_store() -> RunStore:
    """The run history database (opening it marks runs of a dead server as interrupted)."""
    return RunStore()


@dataclass(frozen=True)
class DataSummary:
    """What the sidebar and later pages show of the chosen data set."""

    name: str
    root: str
    classes: tuple[str, ...]
    n_train: int
    n_valid: int


def set_current_data(config: DataConfig, summary: DataSummary) -> None:
    st.session_state["data_config"] = config
    st.session_state["data_summary"] = summary


def current_data() -> tuple[DataConfig | None, DataSummary | None]:
    return st.session_state.get("data_config"), st.session_state.get("data_summary")


@st.cache_resource(max_entries=4, show_spinner="Predicting the validation images…")
def _review(run_id: int, weights_mtime: float, fingerprint: str) -> RunReview:
    run = run_store().run(run_id)
    if run is None:
        raise UserError(f"Run #{run_id} no longer exists.")
    return review_run(run, presize_cache())


def _weights_mtime(run: dict) -> float:
    weights = Path(run.get("weights_path") or "") / "model.pt"
    return weights.stat().st_mtime if weights.is_file() else 0.0


def _review_key(run: dict) -> tuple[int, float, str]:
    """What a review depends on: the run, its model file and its data (files, sizes, times)."""
    return int(run["id"]), _weights_mtime(run), data_fingerprint(config_from_dict(run["data"]))


def run_review(run: dict) -> RunReview:
    """A run's model on its data as it is now; recomputed only when the model file or the data change."""
    return _review(*_review_key(run))


@st.cache_resource(max_entries=16, show_spinner="Scoring the images…")
def _loss_table(run_id: int, weights_mtime: float, fingerprint: str, split: str, label: str):
    return loss_table(_review(run_id, weights_mtime, fingerprint), split=split, label=label)


def run_loss_table(run: dict, split: str, label: str):
    """Images of one split and label with the run's prediction and loss, largest loss first (cached like run_review)."""
    return _loss_table(*_review_key(run), split, label)


@st.cache_resource(max_entries=4)
def _model(weights_path: str, weights_mtime: float) -> ExportedModel:
    return load_run(weights_path)


def run_model(run: dict) -> ExportedModel:
    """A run's exported model, loaded once per model file."""
    if not run.get("weights_path"):
        raise UserError(f"Run #{run['id']} has no saved model (it ended before its first epoch finished).")
    return _model(run["weights_path"], _weights_mtime(run))
