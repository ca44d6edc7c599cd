"""The Clean page's "Likely wrong labels" view: a time estimate, the search as a background job, then its review list.

Nothing is ever chosen for the user: the flagged images are a ranked list, most likely wrong first, each with how
sure the models are; the user accepts one (Accept) or ticks some and accepts those. Ticks start empty, and the
search puts nothing in the page's pending choices.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.data.resolve import data_name
from engine.data.clean import RELABEL, Change, apply_changes
from engine.train.device import background_threads
from engine.errors import UserError
from engine.store.jobs import FAILED, QUEUED, Job
from engine.results.label_issues import DEFAULT_K, estimate_label_issue_seconds, fold_spec, label_issues_target, percent_sure
from engine.results.review import data_fingerprint
from engine.spec import RunSpec, total_epochs
from ui.clean_view import TILE_PX, Target, draft_data, pager, readable_count, same_folder, thumbnails
from ui.gallery import DISPLAY_PX, display_image
from ui.draft import window_id
from ui.shared import job_manager, presize_cache
from ui.state import (CLEAN_ISSUES, CLEAN_ISSUES_EPOCHS, CLEAN_ISSUES_JOB, CLEAN_ISSUES_K, CLEAN_ISSUES_PAGE,
                      CLEAN_MESSAGE, issue_tick)
from ui.text import md
from ui.train_view import format_seconds

KIND = "label_issues"


def flagged_rows(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """The flagged rows whose image is still in the data set under the label it was judged with, in rank order."""
    rows = table[table["likely_error"] & (table["suggested"] != table["label"])]
    return rows[[labels.get(f) == label for f, label in zip(rows["file"], rows["label"])]]


def still_ranked(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """The rows whose image is still in the data set with the label it was ranked under, in rank order."""
    return table[[labels.get(f) == label for f, label in zip(table["file"], table["label"])]]


@st.cache_data(max_entries=16, show_spinner="Timing a few training steps…")
def _estimate(spec_json: str, k: int, epochs: int) -> float:
    return estimate_label_issue_seconds(RunSpec.from_json(spec_json), presize_cache(), k, epochs,
                                        default_threads=background_threads())


@st.fragment(run_every=1.0)
def progress(job_id: str) -> None:
    """The running (or queued) search, redrawn every second, with Stop."""
    manager = job_manager()
    job = manager.get(job_id)
    if job is None or not job.active:
        st.rerun()  # the whole page, to show the ranking
    if job.state == QUEUED:
        where = manager.queue_position(job)
        who = "another window's job" if manager.others_active(job.owner) else "another job"
        st.info(f"Waiting for {who} to finish: this search is number {where or 1} in line and starts by itself.")
        if st.button("Cancel", key="clean.issues_cancel", icon=":material/cancel:"):
            job.stop()
            st.rerun()
        return
    stage, eta = job.last("stage"), job.eta_seconds
    text = (stage.data["text"] if stage else "Starting…") + f" · {job.state}"
    st.progress(job.progress, text=text + (f" · about {format_seconds(eta)} left" if eta else ""))
    if st.button("Stop", key="clean.issues_stop", icon=":material/stop:"):
        job.stop()
    st.caption("Stopping keeps what the models finished so far: their images are ranked.")


def start_form(spec: RunSpec, n_images: int, target: Target) -> None:
    """Folds and epochs, the time estimate for them, and the button that starts the search."""
    CLEAN_ISSUES_K.set(CLEAN_ISSUES_K.get() or DEFAULT_K)  # the widgets start from the engine's and the draft's
    CLEAN_ISSUES_EPOCHS.set(CLEAN_ISSUES_EPOCHS.get() or spec.train.epochs)
    c1, c2 = st.columns(2)
    k = c1.number_input("Folds (k)", 2, 10, key=CLEAN_ISSUES_K.key,
                        help="The images are dealt into k folds: k models each train on k − 1 folds and predict the "
                             "fold they never saw.")
    epochs = c2.number_input("Epochs per model", 1, 50, key=CLEAN_ISSUES_EPOCHS.key,
                             help="The draft's epochs to start with; fine_tune adds its head-only epochs. The models "
                                  "must be good to judge labels: when they are too weak, nothing is flagged.")
    try:
        seconds = _estimate(spec.to_json(), int(k), int(epochs))
    except UserError as e:
        st.error(md(e))
        return
    st.caption(f"About **{format_seconds(seconds)}** on this computer: {k} short runs of the draft's "
               f"{md(spec.model.arch)} model ({total_epochs(fold_spec(spec, int(epochs)))} epoch(s) each, on "
               f"{k - 1} of {k} folds of the {n_images:,} images, with the draft's other settings), then cleanlab's "
               "confident learning on each image's prediction by the model that never saw it.")
    running = job_manager().active
    if running is not None and running.active:
        st.caption("Another job is running now: this search waits for it to end "
                   "(the time above does not count the wait).")
    if st.button("Find likely wrong labels", type="primary", key="clean.issues_start", icon=":material/manage_search:"):
        job = Job(KIND, f"Likely wrong labels · {data_name(spec.data)}",
                  label_issues_target(spec, presize_cache(), int(k), int(epochs), background_threads()),
                  meta={"root": str(target.root), "fingerprint": data_fingerprint(spec.data), "n_images": n_images},
                  owner=window_id())
        CLEAN_ISSUES_JOB.set(job_manager().submit(job).id)
        st.rerun()


def keep_result(job: Job, target: Target) -> None:
    """A finished search's table goes into CLEAN_ISSUES (once), with no image ticked and nothing chosen."""
    if (CLEAN_ISSUES.get() or {}).get("job_id") == job.id:
        return
    if job.state == FAILED:
        st.error(f"Finding likely wrong labels failed: {md(job.error)}")
        return
    if not isinstance(job.result, pd.DataFrame):  # cancelled while queued
        return
    CLEAN_ISSUES.set({"job_id": job.id, "root": job.meta["root"], "fingerprint": job.meta["fingerprint"],
                      "table": job.result, "n_images": job.meta["n_images"], "ticked": set(), "accepted": 0})
    CLEAN_ISSUES_PAGE.set(1)


def tick(rel: str) -> None:
    """A tick box changed: record it in the search's ticks."""
    ticked = (CLEAN_ISSUES.get() or {}).get("ticked")
    if isinstance(ticked, set):
        (ticked.add if issue_tick(rel).get() else ticked.discard)(rel)


def accept(spec: RunSpec, target: Target, rows: pd.DataFrame) -> None:
    """Relabel the images of `rows` to their suggested classes, as one undoable change; say what was done."""
    changes = [Change(r.file, RELABEL, r.suggested) for r in rows.itertuples()]
    try:
        batch = apply_changes(target.root, target.rule, changes)
    except UserError as e:
        st.error(md(e))
        return
    issues = CLEAN_ISSUES.get()
    issues["ticked"] = set()
    issues["accepted"] = issues.get("accepted", 0) + len(changes)
    issues["fingerprint"] = data_fingerprint(spec.data)  # our own change: the rest of the list still holds
    CLEAN_MESSAGE.set(f"{batch.summary}. Undo it under Changes below.")
    st.rerun()


def review_list(spec: RunSpec, items, target: Target, rows: pd.DataFrame) -> None:
    """The flagged images, a page at a time: each with its label → the suggestion, how sure, a tick and Accept."""
    issues = CLEAN_ISSUES.get()
    ticked = issues.setdefault("ticked", set())
    ticked &= set(rows["file"])  # ticks of images accepted, or changed elsewhere, go
    chosen = rows[rows["file"].isin(ticked)]
    if st.button(f"Accept the {len(chosen)} ticked", key="clean.issues_accept_ticked", disabled=chosen.empty,
                 icon=":material/done_all:",
                 help="Relabel each ticked image to the class suggested for it, as one change you can undo."):
        accept(spec, target, chosen)
    shown = rows.iloc[pager(len(rows), CLEAN_ISSUES_PAGE)]
    images, ok = thumbnails(spec, items, shown["file"].tolist())
    with st.container(key="gallery-clean-issues", horizontal=True, gap="small"):
        for x, r, good in zip(images, shown.itertuples(), ok):
            with st.container(width=TILE_PX, gap=None):
                caption = (f"{r.rank}. {r.file} · {r.label} → {r.suggested} · {percent_sure(r.confidence)} sure"
                           + ("" if good else " · unreadable"))
                st.image(display_image(x), caption=md(caption), width=DISPLAY_PX)  # captions read Markdown
                box = issue_tick(r.file)
                box.set(r.file in ticked)  # from the ticks, every run
                st.checkbox(f"Tick: relabel → {md(r.suggested)}", key=box.key, on_change=tick, args=(r.file,))
                if st.button("Accept", key=f"clean.issues_accept.{r.file}", icon=":material/check:",
                             help=f"Relabel this image to {md(r.suggested)} now (you can undo it)."):
                    accept(spec, target, rows[rows["file"] == r.file])


def show_result(spec: RunSpec, items, target: Target) -> None:
    """What the search found: how sure the models are (or why they flag nothing), then the review list."""
    issues = CLEAN_ISSUES.get()
    if not issues:
        return
    if not same_folder(issues["root"], target.root):
        st.caption("The last search was on another data set: run it again for this one.")
        return
    table = issues["table"]
    done, k = table.attrs.get("folds_done", 0), table.attrs.get("k", 0)
    if done < k:
        st.warning(f"Stopped early: ranked {len(table):,} of {issues['n_images']:,} images "
                   f"({done} of {k} models finished).")
    message = table.attrs.get("message", "")
    if not table.attrs.get("judged", False):
        st.warning(md(message))
        return
    st.info(md(message))
    rows = flagged_rows(table, target.labels)
    gone = len(table) - len(still_ranked(table, target.labels)) - issues.get("accepted", 0)  # changed elsewhere
    if gone > 0 or issues["fingerprint"] != data_fingerprint(spec.data):
        st.caption(f"The data changed since this search ({max(gone, 0):,} judged image(s) since deleted, relabelled "
                   "or renamed elsewhere are left out): run it again for a fresh ranking.")
    if rows.empty:
        return
    st.caption("Each image shows its rank, its label → the class the models suggest, and how sure they are of it "
               "(the probability the model that never saw the image gave that class). Look at each one: Accept "
               "relabels that image alone; or tick several and accept the ticked ones. Every change can be undone.")
    review_list(spec, items, target, rows)


def issues_view() -> Target | None:
    """Likely wrong labels of the draft's data set, found by a background job this window starts."""
    data = draft_data()
    if data is None:
        return None
    spec, items, target = data
    st.caption("Each image is judged by a model that never saw it: k short runs, each holding out one fold of the "
               "images. Images whose label those models find unlikely come first.")
    manager, owner = job_manager(), window_id()
    job = manager.get(CLEAN_ISSUES_JOB.get(), owner=owner) or manager.latest(KIND, owner=owner)
    if job is not None and job.active:
        st.subheader(md(job.title), anchor=False)
        progress(job.id)
        return target
    if job is not None:
        keep_result(job, target)
    start_form(spec, readable_count(spec, items), target)
    show_result(spec, items, target)
    return target
