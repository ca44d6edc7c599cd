"""A run's model and its review on the run's data, cached per model file and data (so pages switch runs quickly)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.errors import UserError
from engine.results.review import RunReview, data_fingerprint, loss_table, review_run
from engine.data.resolve import resolve
from engine.train.export import ExportedModel, load_run
from ui.shared import presize_cache, run_store


@st.cache_resource(max_entries=4, show_spinner="Predicting the validation images…")
def _review(run_id: int, weights_mtime: float, fingerprint: str) -> RunReview:
    run = run_store().run(run_id)
    if run is None:
        raise UserError(f"Run #{run_id} no longer exists.")
    return review_run(run, presize_cache())


def _weights_mtime(run: dict) -> float:
    weights = Path(run.get("weights_path") or "") / "model.pt"
    return weights.stat().st_mtime if weights.is_file() else 0.0


def review_key(run: dict) -> tuple[int, float, str]:
    """What a review depends on: the run, its model file and its data (files, sizes, times)."""
    return int(run["id"]), _weights_mtime(run), data_fingerprint(resolve(run["spec"]).data)


def run_review(run: dict) -> RunReview:
    """A run's model on its data as it is now; recomputed only when the model file or the data change."""
    return _review(*review_key(run))


@st.cache_resource(max_entries=16, show_spinner="Scoring the images…")
def _loss_table(run_id: int, weights_mtime: float, fingerprint: str, split: str, label: str):
    return loss_table(_review(run_id, weights_mtime, fingerprint), split=split, label=label)


def run_loss_table(run: dict, split: str, label: str):
    """Images of one split and label with the run's prediction and loss, largest loss first (cached like run_review)."""
    return _loss_table(*review_key(run), split, label)


@st.cache_resource(max_entries=4)
def _model(weights_path: str, weights_mtime: float) -> ExportedModel:
    return load_run(weights_path)


def run_model(run: dict) -> ExportedModel:
    """A run's exported model, loaded once per model file."""
    if not run.get("weights_path"):
        raise UserError(f"Run #{run['id']} has no saved model (it ended before its first epoch finished).")
    return _model(run["weights_path"], _weights_mtime(run))
