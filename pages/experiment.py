"""Compare: one setting, 2 to 4 values, one run each on the same data, split and seed; their curves on one chart."""
from __future__ import annotations

import streamlit as st

from engine.train.device import background_threads
from engine.errors import UserError
from engine.train.experiment import SETTINGS, experiment_target, plan_experiment
from engine.store.jobs import CANCELLED, FAILED, INTERRUPTED, Job
from ui.experiment_view import (EXPERIMENT_JOB, estimate, experiment_results, lr_valley, planned_batches,
                                setting_picker, value_inputs)
from ui.explain import explain
from ui.frame import require_app_frame
from ui.job_controls import live_job, last_job_header, notes_then_live, progress_and_controls, start_job
from ui.data_status import data_problem, data_summary, run_spec
from ui.draft import window_id
from ui.shared import job_manager, presize_cache, run_store
from ui.state import keep_widget_values
from ui.text import md
from ui.train_view import ask_for_data, forget_foreign_lr, format_seconds

require_app_frame("pages/experiment.py")
keep_widget_values("experiment.setting", "experiment.count.", "experiment.value.")  # hidden while an experiment runs

st.title("Compare")
explain("compare")
st.caption("Pick one setting and 2 to 4 values. Loupe trains one run per value, one after another, on the same "
           "images, split and seed, and draws their curves on one chart: the only difference is the one you chose.")
spec, summary = forget_foreign_lr(run_spec()), data_summary()
manager, store = job_manager(), run_store()
owner = window_id()  # jobs belong to the window that started them
job = manager.get(EXPERIMENT_JOB.get(), owner=owner) or manager.latest("experiment", owner=owner)


def launch_panel() -> None:
    """The setting, its values, the time estimate and the Start button."""
    setting = setting_picker()
    values = value_inputs(setting, spec, lr_valley(owner, spec))
    try:
        plan = plan_experiment(spec, setting, values)
        seconds = estimate(plan, background_threads())
    except UserError as e:
        st.error(md(e))
        return
    each = " + ".join(format_seconds(s) for s in seconds)
    seed = f"seed {spec.train.seed}" if spec.train.seed else "one seed, drawn when you start,"
    st.caption(f"About {format_seconds(sum(seconds))} in all on this computer ({each}). Every run starts from the "
               f"settings on the Train page, with {seed} for all of them.")
    if st.button(f"Start {len(plan.specs)} runs", type="primary", key="experiment.start", icon=":material/compare:"):
        title = f"Compare {SETTINGS[setting]}: {', '.join(plan.labels)}"
        start_job(manager, Job("experiment", title, experiment_target(plan, presize_cache(), store, background_threads()),
                                meta={"plan": plan, "n_train": summary.n_train}, owner=owner), EXPERIMENT_JOB)


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    """Progress, the overlaid curves and the table, redrawn every second while the experiment runs."""
    job = live_job(manager, job_id, owner, "experiment", key="experiment")
    if job is None:
        return
    plan = job.meta["plan"]
    current = job.last("experiment_run")
    where = f"Run {current.data['index'] + 1} of {len(plan.specs)}: {current.data['label']}" if current else "Starting…"
    progress_and_controls(job, md(where), key="experiment", stop_help="Stops the whole experiment.")
    experiment_results(store, plan.id, key="experiment.live_chart", plan=plan,
                       n_batches=planned_batches(plan, job.meta["n_train"]))


notes_then_live(job, live)
if spec is None:
    ask_for_data(data_problem())
else:
    launch_panel()

# ---- the last experiment, finished
job = last_job_header(job, "experiment")
if job.state == FAILED:
    st.error(f"The experiment failed: {md(job.error)}")
elif job.state in (CANCELLED, INTERRUPTED):
    st.warning("The experiment was stopped: the runs so far are below (and on the Runs page); the rest never started.")
plan = job.meta["plan"]
experiment_results(store, plan.id, key="experiment.final_chart", plan=plan, pending="not run")
st.page_link("pages/runs.py", label="All runs, and earlier experiments", icon=":material/stacked_line_chart:")
