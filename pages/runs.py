"""Runs: every training run recorded, compared on one chart; delete with confirmation."""
from __future__ import annotations

import streamlit as st

from ui.charts_show import show_chart
from ui.charts_train import compare_figure
from ui.experiment_view import RUNS_EXPERIMENT, experiment_name, experiment_results
from ui.explain import explain
from ui.frame import require_app_frame
from ui.report_button import report_button
from ui.spec_view import replay_command, settings_table, spec_path
from ui.shared import run_store
from ui.state import RUNS_CONFIRM
from ui.text import md
from ui.runs_table import runs_table
from ui.train_view import epoch_table, kept_model_caption
from ui.watch import watch_runs_elsewhere
from ui.stop import stop_page

require_app_frame("pages/runs.py")

st.title("Runs")
explain("runs")
st.caption("Every training run is recorded as it goes, from this app or from the command line. "
           "Select runs to compare their curves.")
store = run_store()
watch_runs_elsewhere("runs")  # the command line's, torchrun's, another machine's: live
runs = store.runs()
if runs.empty:
    st.info("No runs yet: train a model on the Train page.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    stop_page()

latest = runs.iloc[0]
st.caption(f"{len(runs)} run(s) recorded · latest: #{latest['id']} {md(latest['data'])} · {latest['arch']} · "
           f"{latest['status']}")
selected = runs_table(runs)  # run ids: the ticks stay on the runs ticked when runs come or go
experiments = store.experiments()
if len(experiments):
    names = {r.experiment: experiment_name(r.experiment, r.runs, r.date) for r in experiments.itertuples()}
    chosen = st.selectbox("Open an experiment (its runs overlaid, with verdicts)", list(names), index=None,
                          format_func=names.get, placeholder="Choose an experiment", key=RUNS_EXPERIMENT.key)
    if chosen is not None:
        experiment_results(store, chosen, key="runs.experiment_chart")

if not selected:
    st.caption("Tick one or more runs in the table to compare them.")
    stop_page()

curves = {f"#{r} {runs.set_index('id').loc[r, 'arch']}": (store.batches(r), store.epochs(r)) for r in selected}
show_chart(compare_figure(curves), key="runs.compare")
for run_id in selected:
    run = store.run(run_id)
    with st.expander(f"Run #{run_id} · {md(run['name'])} · {run['model'].get('arch')} · {run['status']}"):
        if run.get("error"):
            st.error(md(run["error"]))
        st.caption(kept_model_caption(run) + f" Started from the {run.get('source') or 'app'}.")
        st.markdown("**Settings** (grey: Loupe's defaults)")
        st.dataframe(settings_table(run["spec"]), hide_index=True, key=f"runs.settings.{run_id}")
        st.markdown("**Replay this run** (the same numbers on the same computer):")
        st.code(replay_command(run), language="bash")
        if spec_path(run) is None:  # recorded before runs kept their spec.json
            st.download_button("Download its spec.json", run["spec"].to_json(), file_name=f"run-{run_id}-spec.json",
                               mime="application/json", key=f"runs.spec.{run_id}", on_click="ignore")
        epochs = store.epochs(run_id)
        if len(epochs):
            st.dataframe(epoch_table(epochs), hide_index=True)
        report_button(run, key=f"runs.report.{run_id}")

if RUNS_CONFIRM.get() != selected:
    if st.button(f"Delete {len(selected)} selected run(s)…", key="runs.delete", icon=":material/delete:"):
        RUNS_CONFIRM.set(selected)
        st.rerun()
else:
    st.warning(f"Delete run(s) {', '.join(f'#{r}' for r in selected)}? Their saved models move to Loupe's trash folder.")
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete", type="primary", key="runs.delete_yes"):
        errors = []
        for run_id in selected:
            try:
                store.delete_run(run_id)
            except ValueError as e:
                errors.append(f"#{run_id}: {e}")
        RUNS_CONFIRM.clear()
        for message in errors:
            st.error(md(message))
        if not errors:
            st.rerun()
    if c2.button("Cancel", key="runs.delete_no"):
        RUNS_CONFIRM.clear()
        st.rerun()
