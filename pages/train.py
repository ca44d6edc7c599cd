"""Train: the draft spec's training settings, a time estimate, then live curves from the background run."""
from __future__ import annotations

import streamlit as st

from engine.train.device import background_threads, describe_device
from engine.errors import UserError
from engine.store.jobs import CANCELLED, FAILED, Job
from engine.train.precision import resolve_precision
from engine.spec import PRECISIONS, setting_name, total_epochs
from engine.train.learner import batches_per_epoch
from engine.train.run import device_of, estimate_seconds, train_target
from engine.train.verdict import verdict_of_run
from ui.charts_show import show_chart
from ui.charts_train import training_figure
from ui.explain import explain
from ui.frame import require_app_frame
from ui.job_controls import live_job, last_job_header, notes_then_live, progress_and_controls, start_job
from ui.model_choice import model_choice
from ui.present import technical
from ui.report_button import report_button
from ui.data_status import data_problem, data_summary, run_spec
from ui.draft import bind, draft, update_draft, view_spec, window_id
from ui.shared import job_manager, presize_cache, run_store
from ui.state import LR_SLICE_ON, TRAIN_ESTIMATE, TRAIN_JOB, TRAIN_LINKED_RUN, REVIEW_RUN
from ui.text import md
from ui.train_view import (ask_for_data, epoch_table, final_metrics, forget_foreign_lr, format_seconds,
                           kept_model_caption, lr_help)
from ui.watch import watch_runs_elsewhere
from ui.stop import stop_page

require_app_frame("pages/train.py")

SCHEDULES = {"fine_tune": "fine_tune (head first, then all layers)", "one_cycle": "fit_one_cycle (all layers)"}

st.title("Train")
explain("train")
spec, summary = forget_foreign_lr(run_spec()), data_summary()
manager, store = job_manager(), run_store()
owner = window_id()  # jobs belong to the window that started them
job = manager.get(TRAIN_JOB.get()) or manager.latest("train", owner=owner)  # re-attach after a reload


def lr_slice_toggled() -> None:
    lr = view_spec().train.lr
    update_draft({"train.lr_slice": (lr / 100, lr) if LR_SLICE_ON.get() else None})


def settings_form() -> None:
    """The training settings of the draft spec, with fastai's defaults and a word on each."""
    arch, pretrained = model_choice()  # pretrained: the weights will really be loaded
    st.segmented_control(setting_name("train.schedule"), list(SCHEDULES), format_func=SCHEDULES.get, required=True,
                         **bind("train.schedule"))
    train = view_spec().train
    c1, c2, c3 = st.columns(3)
    c1.number_input(setting_name("train.epochs"), 1, 500, help="Passes over the training images.", **bind("train.epochs"))
    c2.number_input(setting_name("train.lr"), 1e-7, 10.0, format="%.1e", step=1e-4,
                    help=lr_help(), **bind("train.lr"))
    lr = train.lr
    if train.schedule == "fine_tune":
        c3.number_input(setting_name("train.freeze_epochs"), 0, 50,
                        help="With pretrained weights, the new head trains alone first. From scratch there is no "
                             "head-only phase: these epochs are added to the one cycle of every layer.",
                        **bind("train.freeze_epochs"))
        c3.number_input(setting_name("train.lr_mult"), 1.0, 1000.0, **bind("train.lr_mult"))
        if pretrained:
            st.caption(f"Head only for {train.freeze_epochs} epoch(s) at {lr:.1e}; then every layer, from "
                       f"{lr / 2 / train.lr_mult:.1e} (earliest layers) to {lr / 2:.1e} (head), as fastai's fine_tune.")
        else:
            st.caption(f"From scratch there is nothing to keep frozen: every layer trains at {lr:.1e} for "
                       f"{train.freeze_epochs + train.epochs} epochs of one cycle.")
    else:
        LR_SLICE_ON.set(train.lr_slice is not None)
        c3.toggle("Discriminative learning rates", key=LR_SLICE_ON.key, on_change=lr_slice_toggled,
                  help="fastai's unfreeze() then fit_one_cycle(n, slice(low, high)): the earliest layers learn slowest.")
        if train.lr_slice is not None:
            low, high = st.columns(2)
            low.number_input("Lowest LR (earliest layers)", 1e-8, 10.0, format="%.1e",
                             **bind("train.lr_slice", lambda s: s[0], lambda v: (v, view_spec().train.lr_slice[1]), part="low"))
            high.number_input("Highest LR (head)", 1e-8, 10.0, format="%.1e",
                              **bind("train.lr_slice", lambda s: s[1], lambda v: (view_spec().train.lr_slice[0], v), part="high"))
            st.caption(f"Every layer unfrozen, with learning rates spread from {train.lr_slice[0]:.1e} (earliest "
                       f"layers) to {train.lr_slice[1]:.1e} (head), one cycle.")
        else:
            st.caption(f"Every layer trains with one cycle: the LR warms up to {lr:.1e}, then anneals.")
    c1, c2 = st.columns(2)
    c1.number_input(f"{setting_name('train.patience')} (0 = off)", 0, 100,
                    help="Stop when the validation loss has not improved for this many epochs.", **bind("train.patience"))
    c2.toggle(setting_name("train.keep_best"),
              help="At the end, go back to the weights of the epoch with the lowest validation loss (fastai's "
                   "SaveModelCallback); off: keep the last epoch's.", **bind("train.keep_best"))
    with st.expander("More settings"):
        c1, c2 = st.columns(2)
        c1.number_input(setting_name("train.wd"), 0.0, 1.0, format="%.3f", step=0.01,
                        help="fastai's decoupled weight decay; never on BatchNorm and bias parameters.", **bind("train.wd"))
        c2.number_input(f"{setting_name('train.seed')} (0 = draw one)", 0, 2**31 - 1, step=1,
                        help="The same seed trains the same model again. Left at 0, each run draws one and records it.",
                        **bind("train.seed", lambda s: s or 0, lambda v: int(v) or None))
        c1.selectbox(setting_name("device.precision"), list(PRECISIONS), **bind("device.precision"),
                     help="bf16 and fp16 compute in 16-bit numbers while the weights stay 32-bit: about twice as fast "
                          "on a recent GPU. On this kind of CPU bf16 measured slower, so auto keeps fp32 there.")
        spec = view_spec()
        try:
            used = resolve_precision(spec.device.precision, device_of(spec))
        except UserError as e:
            st.error(md(e))
        else:
            st.caption(f"This computer will train in {used}."
                       + (" fp16 on a CPU is very slow: choose it only to see the difference." if used == "fp16"
                          and device_of(spec).type == "cpu" else ""))


def launch_panel() -> None:
    """Settings, the time estimate and the Train button."""
    settings_form()
    c1, c2, _ = st.columns([1, 1, 3])
    ready = run_spec()
    if c2.button("Estimate time", key="train.estimate_button", help="Times a few training steps on this computer."):
        try:
            with st.spinner("Timing a few steps…"):
                seconds = estimate_seconds(ready, presize_cache(), default_threads=background_threads())
            TRAIN_ESTIMATE.set((ready.to_json(), seconds))
        except UserError as e:
            st.error(md(e))
    estimate = TRAIN_ESTIMATE.get()
    estimated_s = estimate[1] if estimate and estimate[0] == ready.to_json() else None  # for these settings only
    device = describe_device(None if ready.device.device == "auto" else ready.device.device,
                             threads=ready.device.threads or background_threads())
    st.caption((f"About {format_seconds(estimated_s)} for {total_epochs(ready)} epoch(s) on this computer. "
                if estimated_s is not None else "") + f"Trains on: {device} (one core is left for this app).")
    epochs = total_epochs(view_spec())
    if c1.button(f"Train ({epochs} epoch{'s' if epochs != 1 else ''})", type="primary", key="train.start",
                 icon=":material/model_training:"):
        title = f"{summary.name} · {ready.model.arch} · {total_epochs(ready)} epochs"
        start_job(manager, Job("train", title, train_target(draft(), presize_cache(), store, background_threads(),
                                                             estimated_s=estimated_s),
                                meta={"spec": ready, "n_train": summary.n_train}, owner=owner), TRAIN_JOB)


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    """Everything that moves during a run, redrawn every second: only this part of the page reruns."""
    job = live_job(manager, job_id, owner, "run", key="train")
    if job is None:
        return
    run_event, stage_event = job.last("run"), job.last("stage")
    run_id = run_event.data["run_id"] if run_event else None
    progress_and_controls(job, stage_event.data["text"] if stage_event else "Starting…", key="train")
    if run_id is not None:
        batches, epochs = store.batches(run_id), store.epochs(run_id)
        ready = job.meta["spec"]
        n_batches = total_epochs(ready) * batches_per_epoch(job.meta["n_train"], ready.data.bs)
        show_chart(training_figure(batches, epochs, n_batches), key="train.live_chart")
        with technical("Epoch table"):
            st.table(epoch_table(epochs), hide_index=True)


notes_then_live(job, live)
watch_runs_elsewhere("train")  # no run of this window: show those of the command line, torchrun, other machines
if spec is None:
    ask_for_data(data_problem())
else:
    launch_panel()

# ---- the last run, finished
job = last_job_header(job, "run")
run_id = job.last("run").data["run_id"] if job.last("run") else None
if job.state == FAILED:
    st.error(f"The run failed: {md(job.error)}")
elif job.state == CANCELLED:
    st.warning("The run was stopped. Its epochs so far are kept below and on the Runs page.")
if run_id is None:
    stop_page()
run = store.run(run_id)
batches, epochs = store.batches(run_id), store.epochs(run_id)
kept = run.get("kept_epoch") if run else None
final_metrics(run, epochs)
if len(batches):
    st.info(md(verdict_of_run(batches, epochs).text))
show_chart(training_figure(batches, epochs, kept_epoch=kept), key="train.final_chart")
with technical("Epoch table"):
    st.table(epoch_table(epochs), hide_index=True)
if run and run.get("weights_path"):
    st.caption(f"{kept_model_caption(run)} Saved in {md(run['weights_path'])}.")
    if TRAIN_LINKED_RUN.get() != run_id:  # the Interpret, Clean and Predict pages open on a new run
        TRAIN_LINKED_RUN.set(run_id)
        REVIEW_RUN.set(run_id)
    c1, c2, c3 = st.columns(3)
    c1.page_link("pages/interpret.py", label="Interpret this model: top losses, confusion", icon=":material/troubleshoot:")
    c2.page_link("pages/clean.py", label="Clean the data with it", icon=":material/cleaning_services:")
    c3.page_link("pages/predict.py", label="Predict on your images, export", icon=":material/online_prediction:")
    report_button(run, key="train.report")
st.page_link("pages/runs.py", label="Compare with other runs", icon=":material/stacked_line_chart:")
