"""The sidebar every page shares: the running job and the chosen data set."""
import streamlit as st

from engine.data.resolve import data_name
from engine.train.device import background_threads, describe_device
from engine.store.jobs import PAUSED
from ui.data_status import PENDING, DataSummary, data_status
from ui.draft import view_spec, window_id
from ui.shared import job_manager
from ui.text import md, md_list


def render_sidebar() -> None:
    with st.sidebar:
        sidebar_content()


@st.fragment(run_every=2.0)
def sidebar_content() -> None:
    """The running job and the chosen data set, refreshed every two seconds."""
    job_status()
    st.subheader("Data set")
    summary = data_status(wait=0)  # never holds the page: a data set still being read says so
    if summary == PENDING:
        st.caption(f"{md(data_name(view_spec().data))}: counting the images…")
        return
    if not isinstance(summary, DataSummary):
        st.caption("None chosen yet: start on the Data page.")
        return
    data = view_spec().data
    st.markdown(f"**{md(summary.name)}**")
    st.caption(f"{len(summary.classes)} classes · {summary.n_train:,} train · {summary.n_valid:,} valid")
    st.caption(f"Classes: {md_list(summary.classes, limit=12)}")
    st.caption(f"Images: {data.size} px (presized {data.presize} px) · batch size {data.bs}")
    st.caption(f"Trains on: {describe_device(threads=background_threads())}")


def job_status() -> None:
    """The running or queued job."""
    manager = job_manager()
    job = manager.active
    if job is None:
        return
    mine = job.owner == window_id()
    st.subheader("Running" if mine else "Running (another window)")
    eta = job.eta_seconds
    text = f"{md(job.title)} · {job.state}" + (f" · about {eta:,.0f} s left" if eta and job.state != PAUSED else "")
    st.progress(job.progress, text=text)
    queued = manager.queued
    own = [j for j in queued if j.owner == window_id()]
    if own:
        st.caption(f"Yours is queued: number {manager.queue_position(own[0])} in line.")
    elif queued:
        st.caption(f"{len(queued)} more queued")
