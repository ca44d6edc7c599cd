"""The sidebar every page shares: the running job and the chosen data set."""
import streamlit as st

from engine.jobs import PAUSED
from ui.state import current_data, job_manager


def render_sidebar() -> None:
    with st.sidebar:
        sidebar_content()


@st.fragment(run_every=2.0)
def sidebar_content() -> None:
    """The running job and the chosen data set, refreshed every two seconds."""
    job_status()
    config, summary = current_data()
    st.subheader("Data set")
    if summary is None:
        st.caption("None chosen yet: start on the Data page.")
        return
    st.markdown(f"**{summary.name}**")
    st.caption(f"{len(summary.classes)} classes · {summary.n_train:,} train · {summary.n_valid:,} valid")
    shown = ", ".join(summary.classes[:12]) + (" …" if len(summary.classes) > 12 else "")
    st.caption(f"Classes: {shown}")
    st.caption(f"Images: {config.size} px (presized {config.presize} px) · batch size {config.bs}")


def job_status() -> None:
    """The running or queued job."""
    manager = job_manager()
    job = manager.active
    if job is None:
        return
    st.subheader("Running")
    eta = job.eta_seconds
    text = f"{job.title} · {job.state}" + (f" · about {eta:,.0f} s left" if eta and job.state != PAUSED else "")
    st.progress(job.progress, text=text)
    if manager.queued:
        st.caption(f"{len(manager.queued)} more queued")
