"""Train: settings, a time estimate, then live curves from the background run; pause, resume, stop."""
from __future__ import annotations

import streamlit as st

from engine.errors import UserError
from engine.jobs import CANCELLED, DONE, FAILED, PAUSED, Job
from engine.training import TrainSettings, estimate_seconds, total_epochs, train_target
from ui.charts_train import training_figure
from ui.frame import require_app_frame
from ui.model_choice import model_choice
from ui.state import current_data, job_manager, presize_cache, run_store
from ui.train_view import epoch_table, final_metrics, format_seconds

require_app_frame("pages/train.py")

KEEP = dict(persist_state="session")
METHODS = {"fine_tune": "fine_tune (head first, then all layers)", "one_cycle": "fit_one_cycle (all layers)"}

st.title("Train")
config, summary = current_data()
manager, store = job_manager(), run_store()
job = manager.get(st.session_state.get("train.job_id", "")) or manager.latest("train")  # re-attach after a reload


def settings_form() -> TrainSettings:
    """The training settings, with fastai's defaults and a word on each."""
    for key, value in {"train.method": "fine_tune", "train.epochs": 3, "train.freeze_epochs": 1, "train.lr": 2e-3,
                       "train.lr_mult": 100.0, "train.patience": 0, "train.save_best": True}.items():
        st.session_state.setdefault(key, value)
    arch, pretrained = model_choice()
    method = st.segmented_control("Method", list(METHODS), format_func=METHODS.get, key="train.method", required=True, **KEEP)
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 500, key="train.epochs", help="Passes over the training images.", **KEEP)
    lr = c2.number_input("Learning rate", 1e-7, 10.0, key="train.lr", format="%.1e", step=1e-4,
                         help=st.session_state.get("train.lr_source", "fastai's default; the LR finder can suggest one."), **KEEP)
    if method == "fine_tune":
        freeze_epochs = c3.number_input("Head-only epochs first", 0, 50, key="train.freeze_epochs",
                                        help="With pretrained weights, the new head trains alone first.", **KEEP)
        lr_mult = c3.number_input("Layer LR spread (lr_mult)", 1.0, 1000.0, key="train.lr_mult", **KEEP)
        if pretrained:
            st.caption(f"Head only for {freeze_epochs} epoch(s) at {lr:.1e}; then every layer, from {lr / 2 / lr_mult:.1e} "
                       f"(earliest layers) to {lr / 2:.1e} (head), as fastai's fine_tune.")
        else:
            st.caption(f"From scratch there is nothing to keep frozen: every layer trains at {lr:.1e} for "
                       f"{freeze_epochs + epochs} epochs of one cycle.")
    else:
        freeze_epochs, lr_mult = 0, 100.0
        st.caption(f"Every layer trains with one cycle: the LR warms up to {lr:.1e}, then anneals.")
    c1, c2 = st.columns(2)
    patience = c1.number_input("Early stopping patience (0 = off)", 0, 100, key="train.patience",
                               help="Stop when the validation loss has not improved for this many epochs.", **KEEP)
    save_best = c2.toggle("Keep the best epoch's weights", key="train.save_best",
                          help="At the end, go back to the epoch with the lowest validation loss.", **KEEP)
    return TrainSettings(arch=arch, pretrained=pretrained, method=method, epochs=int(epochs), lr=float(lr),
                         lr_mult=float(lr_mult), freeze_epochs=int(freeze_epochs), patience=int(patience), save_best=save_best)


def launch_panel() -> None:
    """Settings, the time estimate and the Train button."""
    settings = settings_form()
    c1, c2, _ = st.columns([1, 1, 3])
    if c2.button("Estimate time", key="train.estimate_button", help="Times a few training steps on this computer."):
        try:
            with st.spinner("Timing a few steps…"):
                seconds = estimate_seconds(config, settings, presize_cache())
            st.session_state["train.estimate"] = f"About {format_seconds(seconds)} for {total_epochs(settings)} epoch(s) on this computer."
        except UserError as e:
            st.error(str(e))
    if "train.estimate" in st.session_state:
        st.caption(st.session_state["train.estimate"])
    if c1.button("Train", type="primary", key="train.start", icon=":material/model_training:"):
        title = f"{summary.name} · {settings.arch} · {total_epochs(settings)} epochs"
        job = manager.submit(Job("train", title, train_target(config, settings, presize_cache(), store),
                                 meta={"settings": settings, "n_train": summary.n_train, "bs": config.bs}))
        st.session_state["train.job_id"] = job.id
        st.rerun()


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    """Everything that moves during a run, redrawn every second: only this part of the page reruns."""
    job = manager.get(job_id)
    if job is None or not job.active:
        st.rerun()  # the whole page, to show the finished run
    events = job.since(0)
    run_id = next((e.data["run_id"] for e in events if e.kind == "run"), None)
    stage = next((e.data["text"] for e in reversed(events) if e.kind == "stage"), "Starting…")
    eta = job.eta_seconds
    st.progress(job.progress, text=f"{stage} · {job.state}" + (f" · about {format_seconds(eta)} left" if eta and job.state != PAUSED else ""))
    c1, c2, _ = st.columns([1, 1, 4])
    if job.state == PAUSED:
        if c1.button("Resume", key="train.resume", icon=":material/play_arrow:", type="primary"):
            job.resume()
    elif c1.button("Pause", key="train.pause", icon=":material/pause:"):
        job.pause()
    if c2.button("Stop", key="train.stop", icon=":material/stop:"):
        job.stop()
    if run_id is not None:
        batches, epochs = store.batches(run_id), store.epochs(run_id)
        n_batches = total_epochs(job.meta["settings"]) * max(1, job.meta["n_train"] // job.meta["bs"])
        st.plotly_chart(training_figure(batches, epochs, n_batches), key="train.live_chart")
        st.table(epoch_table(epochs), hide_index=True)


for event in (job.since(0) if job else []):
    if event.kind == "note":
        st.info(event.data["text"])

if job is not None and job.active:
    st.subheader(job.title)
    live(job.id)
    st.stop()
if config is None:
    st.info("Choose a data set on the Data page first.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/photo_library:")
else:
    launch_panel()

# ---- the last run, finished
if job is None:
    st.stop()
st.divider()
st.subheader(f"Last run: {job.title}")
run_id = next((e.data["run_id"] for e in job.since(0) if e.kind == "run"), None)
if job.state == FAILED:
    st.error(f"The run failed: {job.error}")
elif job.state == CANCELLED:
    st.warning("The run was stopped. Its epochs so far are kept below and on the Runs page.")
if run_id is None:
    st.stop()
run = store.run(run_id)
batches, epochs = store.batches(run_id), store.epochs(run_id)
best_epoch = job.result.get("best_epoch") if job.state in (DONE, CANCELLED) and job.result else None
final_metrics(epochs, best_epoch)
st.plotly_chart(training_figure(batches, epochs, best_epoch=best_epoch), key="train.final_chart")
st.table(epoch_table(epochs), hide_index=True)
if run and run.get("weights_path"):
    st.caption(f"Model saved in {run['weights_path']}")
if run and run.get("weights_path"):
    if st.session_state.get("train.linked_run") != run_id:  # the Interpret, Clean and Predict pages open on a new run
        st.session_state["train.linked_run"] = st.session_state["review.run_id"] = run_id
    c1, c2, c3 = st.columns(3)
    c1.page_link("pages/interpret.py", label="Interpret this model: top losses, confusion", icon=":material/troubleshoot:")
    c2.page_link("pages/clean.py", label="Clean the data with it", icon=":material/cleaning_services:")
    c3.page_link("pages/predict.py", label="Predict on your images, export", icon=":material/online_prediction:")
st.page_link("pages/runs.py", label="Compare with other runs", icon=":material/stacked_line_chart:")
