"""Objects shared across reruns, pages and sessions, and the current data choice in session state."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from engine.data import DataConfig, PresizeCache
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
