"""What every background job shows while it waits or works: its place in the queue (with Cancel), a progress bar
with the ETA, and Pause / Resume / Stop. The Train and Compare pages share it."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from engine.store.jobs import PAUSED, QUEUED, Job, JobManager
from engine.train.run import format_duration
from ui.state import SessionKey
from ui.text import md
from ui.stop import stop_page


def queued_notice(manager: JobManager, job: Job, owner: str, what: str, key: str) -> None:
    """This window's job waits for another: say whose and where it stands in line, and offer to cancel it."""
    place = manager.queue_position(job)
    where = f"number {place} in line" if place else "next"
    running = manager.others_active(owner)
    st.info((f"Another {what} is training (started by another window); " if running else "Another job is running; ")
            + f"yours is queued ({where}) and starts by itself when that one ends.")
    if st.button(f"Cancel my queued {what}", key=f"{key}.cancel_queued", icon=":material/cancel:"):
        job.stop()
        st.rerun()


def live_job(manager: JobManager, job_id: str, owner: str, what: str, key: str) -> Job | None:
    """In a page's live fragment: the job to draw. Once it has ended the whole page reruns (to show the result);
    while it waits in line the queue notice is drawn and None comes back."""
    job = manager.get(job_id)
    if job is None or not job.active:
        st.rerun()
    if job.state == QUEUED:
        queued_notice(manager, job, owner, what, key=key)
        return None
    return job


def progress_and_controls(job: Job, text: str, key: str, stop_help: str | None = None) -> None:
    """The progress bar (`text` is Markdown-safe already) with the ETA, and Pause / Resume / Stop."""
    eta = job.eta_seconds
    st.progress(job.progress, text=f"{text} · {job.state}"
                + (f" · about {format_duration(eta)} left" if eta and job.state != PAUSED else ""))
    c1, c2, _ = st.columns([1, 1, 4])
    if job.state == PAUSED:
        if c1.button("Resume", key=f"{key}.resume", icon=":material/play_arrow:", type="primary"):
            job.resume()
    elif c1.button("Pause", key=f"{key}.pause", icon=":material/pause:"):
        job.pause()
    if c2.button("Stop", key=f"{key}.stop", icon=":material/stop:", help=stop_help):
        job.stop()


def start_job(manager: JobManager, job: Job, remember: SessionKey[str]) -> None:
    """Queue this window's job, keep its id as the page's job, and draw the page again (now showing it)."""
    remember.set(manager.submit(job).id)
    st.rerun()


def notes_then_live(job: Job | None, live: Callable[[str], None]) -> None:
    """A page's job: its notes, then, while it is active, its title and live fragment (the rest of the page stops)."""
    for event in (job.of_kind("note") if job else []):
        st.info(md(event.data["text"]))
    if job is not None and job.active:
        st.subheader(md(job.title), anchor=False)
        live(job.id)
        stop_page()


def last_job_header(job: Job | None, what: str) -> Job:
    """The heading of the page's last (finished) job, 'Last run: …'; with none, the page ends here."""
    if job is None:
        stop_page()
    st.divider()
    st.subheader(f"Last {what}: {md(job.title)}", anchor=False)
    return job
