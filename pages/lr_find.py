"""LR finder: fastai's learning-rate finder in the background; pick a rate from its curve for the Train page."""
from __future__ import annotations

import streamlit as st

from engine.train.device import background_threads
from engine.store.jobs import DONE, FAILED, Job
from engine.train.lr_suggest import compare
from engine.train.run import lr_find_target, lr_finder_key
from ui.charts_show import show_chart
from ui.charts_train import lr_finder_figure
from ui.explain import explain
from ui.frame import require_app_frame
from ui.model_choice import model_choice
from ui.text import md
from engine.spec import LRFindSpec
from ui.train_view import ask_for_data
from ui.data_status import data_problem, data_summary, run_spec
from ui.draft import update_draft, window_id
from ui.shared import job_manager, presize_cache
from ui.state import LR_FOUND_FOR, LR_SOURCE, LRF_CHART, LRF_CHOSEN, LRF_JOB
from ui.stop import stop_page

require_app_frame("pages/lr_find.py")

FINDER = LRFindSpec()  # fastai's lr_find defaults


def use_lr(spec, chosen: float) -> None:
    """"Use this LR": the draft takes the rate, remembering what it was found for. A callback, so the click counts
    even when another click (a demo step, a page link) reaches the server in the same run and moves to another page."""
    update_draft({"train.lr": float(f"{chosen:.2e}")})
    LR_SOURCE.set(f"from the LR finder ({chosen:.1e}) on this data set")
    LR_FOUND_FOR.set((lr_finder_key(spec), float(f"{chosen:.2e}")))


def chart_clicked() -> None:
    """A point of the curve was clicked: its learning rate is the chosen one."""
    event = LRF_CHART.get()
    points = event.selection.points if event and event.selection else []
    if points:
        LRF_CHOSEN.set(float(points[0]["x"]))


st.title("Learning rate finder")
explain("lr_find")
st.caption("Trains for a moment while raising the learning rate from tiny to huge, and plots the loss. "
           "Good rates sit on the falling part of the curve, well before it shoots up. The model is put back as it was "
           "afterwards.")

spec, summary = run_spec(), data_summary()
manager = job_manager()
owner = window_id()
running = manager.latest("lr_find", owner=owner)
if spec is None and not (running and running.active):
    ask_for_data(data_problem())
    stop_page()

arch, pretrained = model_choice()
if spec is not None and st.button("Run the LR finder", type="primary", key="lrf.run"):
    job = manager.submit(Job("lr_find", f"LR finder · {summary.name} · {arch}",
                             lr_find_target(spec, presize_cache(), FINDER, default_threads=background_threads()),
                             meta={"data": lr_finder_key(spec)}, owner=owner))
    LRF_JOB.set(job.id)
    LRF_CHOSEN.clear()

job = manager.get(LRF_JOB.get()) or manager.latest("lr_find", owner=owner)


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    """Progress and the curve so far, while the finder runs; a full rerun once it ends."""
    job = manager.get(job_id)
    if job is None or not job.active:
        st.rerun()
    steps = [e.data for e in job.of_kind("lr_step")]
    stage = job.last("stage").data["text"] if job.last("stage") else "Starting…"
    place = manager.queue_position(job)
    st.progress(job.progress, text=f"{stage} · {len(steps)} of {FINDER.num_it} steps"
                + (f" (queued behind another window's job: number {place} in line)" if place else ""))
    if st.button("Stop", key="lrf.stop"):
        job.stop()
    if steps:
        show_chart(lr_finder_figure([s["lr"] for s in steps], [s["loss"] for s in steps], {}), key="lrf.live_chart")


if job is None:
    stop_page()
for event in job.of_kind("note"):
    st.info(md(event.data["text"]))
if job.active:
    live(job.id)
    stop_page()
if job.state == FAILED:
    st.error(f"The LR finder failed: {md(job.error)}")
    stop_page()
if job.state != DONE or not job.result.lrs:
    st.warning("The LR finder was stopped before it had a curve to show. Run it again.")
    stop_page()

if spec is not None and job.meta.get("data") != lr_finder_key(spec):
    st.info("The last LR finder ran on another data set (or other data settings, model or schedule). Its rates are "
            "not this one's: run it again for this one.")
    stop_page()
result = job.result
if not result.suggestions:
    st.warning("The curve is too short for suggestions (the loss blew up at once, or there are very few batches).")
if LRF_CHOSEN.get() is None and "valley" in result.suggestions:
    LRF_CHOSEN.set(result.suggestions["valley"].lr)  # fastai's default suggestion, until another is picked
chosen = LRF_CHOSEN.get()
# the callback runs only when the user clicks the chart: a suggestion picked after a click on the chart stays
show_chart(lr_finder_figure(result.lrs, result.losses, result.suggestions, chosen, num_it=FINDER.num_it),
           key=LRF_CHART.key, on_select=chart_clicked, selection_mode="points")

st.subheader("Suggestions")
st.caption("Valley is fastai's default and a safe first choice. Under each suggestion: what it means, and where "
           "its rate sits next to the others on this curve.")
where = compare(result.suggestions)
cols = st.columns(max(1, len(result.suggestions)))
for col, (name, s) in zip(cols, result.suggestions.items()):
    with col:
        st.button(f"{name}: {s.lr:.1e}", key=f"lrf.pick.{name}", width="stretch", on_click=LRF_CHOSEN.set, args=(s.lr,),
                  type="primary" if name == "valley" else "secondary")
        st.caption(f"{s.explanation} {where[name]}")

if chosen:
    st.success(f"Chosen learning rate: **{chosen:.2e}** (click another point or suggestion to change it).")
    if st.button("Use this LR", type="primary", key="lrf.use", on_click=use_lr, args=(spec, chosen)):
        st.switch_page("pages/train.py")
else:
    st.info("Click a point on the curve, or a suggestion, to choose a learning rate.")
