"""The Data page's background work drawn live: a progress bar that redraws itself, and the whole page once the work ends."""
from __future__ import annotations

import os

import streamlit as st

from engine.data.data_prep import FolderRead, HealthRun
from engine.store.jobs import QUEUED

PAGE_WAIT_ENV = "LOUPE_PAGE_WAIT_S"


def page_wait_s() -> float:
    """How long a page waits for background work before it draws a progress bar instead (LOUPE_PAGE_WAIT_S)."""
    return float(os.environ.get(PAGE_WAIT_ENV, "0.1"))


def _read_text(read: FolderRead) -> str:
    decoding = read.job.last("decode")
    if read.scan is not None and decoding is not None:
        return f"Decoding and presizing images: {decoding.data['done']:,} of {decoding.data['total']:,}"
    if read.scan is not None:
        return f"Decoding and presizing images: {len(read.scan.images):,} found…"
    looked = read.job.last("scan")
    if looked is None:
        return "Reading the folder…"
    return (f"Reading the folder: {looked.data['looked']:,} files and folders looked at, "
            f"{looked.data['found']:,} images so far…")


@st.fragment(run_every=0.5)
def read_progress(read: FolderRead, on_stop=None, args: tuple = ()) -> None:
    """The read's progress (with a Stop button while it scans); the page is drawn again when it has what it waits for."""
    if not read.job.active or (read.scan is not None and on_stop is not None):
        st.rerun()
    st.progress(read.job.progress if read.scan is not None else 0.0, text=_read_text(read))
    if on_stop is not None:
        st.button("Stop reading this folder", key="data.stop_scan", on_click=on_stop, args=args)


@st.fragment(run_every=0.5)
def health_progress(run: HealthRun) -> None:
    """A running health check: its time so far; the page is drawn again when it ends."""
    if not run.job.active:
        st.rerun()
    if run.job.state == QUEUED:  # the check of an earlier rule is finishing first
        st.progress(0.0, text=f"The check of {len(run.items.rel_paths):,} images for copies and leaks starts when the "
                              "previous one ends (the rest of the page is ready to use)…")
        return
    st.progress(0.0, text=f"Checking {len(run.items.rel_paths):,} images for copies and leaks… "
                          f"({run.job.running_seconds:,.0f} s; the rest of the page is ready to use)")
