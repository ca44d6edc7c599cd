"""The Runs and Train pages draw runs that another process writes to the runs database, live, and drop them when they end."""
from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine.store.jobs import Job
from engine.store.runs import RunStore
from engine.spec import RunSpec, TrainSpec
from ui.shared import job_manager

APP = str(Path(__file__).resolve().parents[2] / "app.py")
SPEC = RunSpec(train=TrainSpec(schedule="one_cycle", epochs=2, seed=3))


def batch(i: int) -> dict:
    return {"iter": i, "epoch": i // 10, "loss": 2 / (i + 1), "smooth_loss": 2 / (i + 1), "lr": 1e-4 * i, "mom": 0.9}


EPOCH_0 = {"epoch": 0, "phase": "one_cycle", "train_loss": 0.6, "valid_loss": 0.4, "error_rate": 0.125,
           "accuracy": 0.875, "time": 3.0, "last_iter": 9}


def charts(at: AppTest) -> dict[str, dict]:
    """The page's Plotly charts by element id (which holds the key), as the figure JSON the browser gets."""
    return {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def values(array) -> list:
    """A trace's x or y: a list, or Plotly's typed array ({"dtype", "bdata": base64})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def watched(at: AppTest, run_id: int) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith(f"**#{run_id} ")]


@pytest.fixture()
def other_process(home, monkeypatch):
    """The runs database as another process (the command line) holds it: its own connection."""
    monkeypatch.setenv("LOUPE_HOME", str(home))
    store = RunStore(home / "runs.sqlite")
    yield store
    store.close()


def test_a_command_line_run_is_watched_live_and_leaves_the_list_when_it_ends(other_process, home):
    run_id = other_process.create_run(SPEC, {"arch": "small", "pretrained": False}, source="cli")
    for i in range(12):
        other_process.add_batch(run_id, batch(i))
    other_process.add_epoch(run_id, EPOCH_0)

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert "In progress elsewhere" in [s.value for s in at.subheader]
    (heading,) = watched(at, run_id)
    assert "started from the command line" in heading and "running" in heading
    assert any(p.proto.text == "1 of 2 epoch(s) done · 12 batch(es) so far" for p in at.get("progress"))
    figure = charts(at)
    chart = next(fig for key, fig in figure.items() if f"runs.watch.chart.{run_id}" in key)
    lines = {trace["name"]: trace for trace in chart["data"]}
    assert values(lines["train loss (smoothed)"]["x"]) == list(range(12)) and values(lines["valid loss"]["y"]) == [0.4]
    assert at.table[0].value["accuracy"].tolist() == ["0.875000"]

    # a batch more, as the other process trains on: the next redraw shows it
    other_process.add_batch(run_id, batch(12))
    at.run()
    assert any("13 batch(es) so far" in p.proto.text for p in at.get("progress"))

    # the Train page shows it too while this window trains nothing
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert watched(at, run_id) and "In progress elsewhere" in [s.value for s in at.subheader]

    other_process.finish(run_id, "done", kept_epoch=0, accuracy=0.875, valid_loss=0.4)
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert not watched(at, run_id) and "In progress elsewhere" not in [s.value for s in at.subheader]
    table = at.dataframe[0].value
    assert table.set_index("id").loc[run_id, "status"] == "done"


def test_a_torchrun_run_says_how_many_processes_and_where(other_process):
    run_id = other_process.create_run(SPEC, {"arch": "small"}, source="torchrun", world_size=4)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    (heading,) = watched(at, run_id)
    assert "started from torchrun, 4 processes, on " in heading
    other_process.finish(run_id, "interrupted")


def test_this_servers_own_run_is_not_listed_as_elsewhere(other_process):
    run_id = other_process.create_run(SPEC, {"arch": "small"}, source="app")
    started, release = threading.Event(), threading.Event()

    def target(job: Job) -> None:  # a job of this server training run_id (its Train page shows it)
        job.emit("run", run_id=run_id)
        started.set()
        release.wait(60)

    job = job_manager().submit(Job("train", "held", target))
    try:
        assert started.wait(60)
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page("pages/runs.py").run()
        assert not at.exception
        assert not watched(at, run_id)
    finally:
        release.set()
        job_manager().wait(job, 60)
        other_process.finish(run_id, "done")
