"""Objects shared by every page and session of this server: the pixel cache, background reads, jobs, the runs
database and the drafts (`st.cache_resource`: made once per server)."""
from __future__ import annotations

import streamlit as st

from engine.data.data_prep import DataPrep
from engine.data.loaders import PresizeCache
from engine.data.sources import clean_stale_extractions
from engine.store.drafts import DraftStore
from engine.store.jobs import JobManager
from engine.store.runs import RunStore


@st.cache_resource
def presize_cache() -> PresizeCache:
    """Presized pixels, shared by every page and session of this server."""
    return PresizeCache(max_entries=2)


@st.cache_resource
def data_prep() -> DataPrep:
    """Folder scans, decoding and health checks in the background, kept for every page and session of this server."""
    return DataPrep(presize_cache())


@st.cache_resource
def job_manager() -> JobManager:
    """The background jobs: they outlive reruns, page switches and browser reloads."""
    return JobManager()


@st.cache_resource
def run_store() -> RunStore:
    """The run history database (opening it marks runs of a dead server as interrupted)."""
    return RunStore()


@st.cache_resource
def draft_store() -> DraftStore:
    return DraftStore()


@st.cache_resource
def server_started() -> int:
    """Once per server start: remove the unpacking folders a crash left behind; returns how many."""
    return clean_stale_extractions()
