"""AppTest of the Compare page: an experiment of two learning rates on the built-in digits, its overlaid chart, its
table of verdicts, the Runs page's view of it, and the Train page's verdict of a single run."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.train.experiment import setting_of
from engine.store.jobs import DONE, Job
from engine.train.learner import LRFinderResult
from engine.train.lr_suggest import Suggestion
from engine.data.resolve import resolve
from engine.train.run import HOLD_BATCH_ENV, HOLD_FILE_ENV, lr_finder_key
from ui.experiment_view import EXPERIMENT_SETTING, RUNS_EXPERIMENT
from ui.draft import widget_key
from ui.shared import job_manager, run_store
from ui.state import DRAFT, DRAFT_ID

# a real run's verdict (shown escaped for Markdown): another CPU's floating point can move a short run from one to another
VERDICT = re.compile(r"(Diverged|Too low|Overfitting|Unstable|Underfitting|Good)\\?: ")
APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()  # the Data page picks the built-in digits
    assert not at.exception
    at.switch_page("pages/train.py").run()  # one epoch of one cycle: short runs
    at.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
    at.number_input(key=widget_key("train.epochs")).set_value(1).run()
    assert not at.exception
    return at


def wait_for(job: Job, timeout: float = 300) -> Job:
    deadline = time.monotonic() + timeout
    while job.active:
        assert time.monotonic() < deadline, f"{job.kind} job did not finish"
        time.sleep(0.1)
    return job


def chart(at: AppTest, key: str) -> dict:
    """The figure of the Plotly chart with this key."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert found, f"no chart {key}"
    return json.loads(found[0].proto.spec)


def legend_names(figure: dict) -> list[str]:
    return [trace["name"] for trace in figure["data"] if trace.get("showlegend", True)]


def prefixed(widgets, prefix: str) -> list:
    return [w for w in widgets if w.key and w.key.startswith(prefix)]


def test_an_experiment_of_two_learning_rates(app):
    app.switch_page("pages/experiment.py").run()
    assert not app.exception
    assert app.session_state[EXPERIMENT_SETTING.key] == "lr"
    inputs = prefixed(app.number_input, "experiment.value.lr.")
    assert [i.value for i in inputs] == [1e-4, 1e-3, 1e-2]  # ÷10, ×1, ×10 of fit_one_cycle's default 1e-3
    assert any("Prefilled from the learning rate on the Train page (1e-3)" in c.value for c in app.caption)
    prefixed(app.button_group, "experiment.count.lr.")[0].set_value(2).run()
    inputs = prefixed(app.number_input, "experiment.value.lr.")
    assert len(inputs) == 2
    inputs[0].set_value(3e-3).run()
    prefixed(app.number_input, "experiment.value.lr.")[1].set_value(1e-2).run()
    assert any(c.value.startswith("About ") and "in all on this computer" in c.value for c in app.caption)
    app.button(key="experiment.start").click().run()
    assert not app.exception
    job = wait_for(job_manager().latest("experiment"))
    assert job.state == DONE, job.error_detail
    app.run()
    assert not app.exception
    # the setting and values the experiment ran with are still there, ready for the next one
    assert app.session_state[EXPERIMENT_SETTING.key] == "lr"
    assert prefixed(app.button_group, "experiment.count.lr.")[0].value == 2
    assert [i.value for i in prefixed(app.number_input, "experiment.value.lr.")] == [3e-3, 1e-2]

    table = app.table[-1].value
    assert list(table.columns) == ["value", "accuracy", "valid loss", "time", "verdict"]
    assert table["value"].tolist() == [r"lr 3e\-3", r"lr 0\.01"]  # escaped for Markdown
    verdicts = table["verdict"].tolist()
    assert len(verdicts) == 2 and all(VERDICT.match(v) for v in verdicts)  # which one: this CPU's arithmetic
    figure = chart(app, "experiment.final_chart")
    assert legend_names(figure) == ["lr 3e-3", "lr 0.01"]
    assert len(figure["data"]) == 4  # each value: training loss, and validation loss in the same legend entry

    runs = run_store().experiment_runs(job.result["experiment"])
    assert [r["spec"].train.lr for r in runs] == [3e-3, 1e-2]
    assert len({r["spec"].train.seed for r in runs}) == 1

    # the Runs page opens it as one overlaid view
    app.switch_page("pages/runs.py").run()
    assert not app.exception
    app.selectbox(key=RUNS_EXPERIMENT.key).set_value(job.result["experiment"]).run()
    assert not app.exception
    assert legend_names(chart(app, "runs.experiment_chart")) == ["lr 3e-3", "lr 0.01"]
    assert setting_of(job.result["experiment"]) == "lr"


def test_the_lrs_start_from_the_lr_finders_valley_when_this_window_ran_it(app):
    valley = Suggestion("valley", 1.2e-3, 1.0, "")
    here = lr_finder_key(resolve(app.session_state[DRAFT.key], guess_rules=False))  # found on these data and model
    finder = Job("lr_find", "LR finder", lambda job: LRFinderResult([1e-3], [1.0], {"valley": valley}),
                 meta={"data": here}, owner=app.session_state[DRAFT_ID.key])
    manager = job_manager()
    assert manager.wait(manager.submit(finder), timeout=60)
    app.switch_page("pages/experiment.py").run()
    assert not app.exception
    assert [i.value for i in prefixed(app.number_input, "experiment.value.lr.")] == [1.2e-4, 1.2e-3, 1.2e-2]
    assert any("Prefilled from the LR finder's valley (1.2e-3)" in c.value for c in app.caption)


def test_bad_values_are_refused_on_the_page(app):
    app.switch_page("pages/experiment.py").run()
    app.button_group(key=EXPERIMENT_SETTING.key).set_value("epochs").run()
    inputs = prefixed(app.number_input, "experiment.value.epochs.")
    assert [i.value for i in inputs] == [1, 3]
    inputs[1].set_value(1).run()
    assert not app.exception
    assert any("Each value once, please" in e.value for e in app.error)
    assert "experiment.start" not in [b.key for b in app.button]


def test_the_train_page_shows_the_verdict_of_a_finished_run(app):
    app.button(key="train.start").click().run()
    job = wait_for(job_manager().latest("train"))
    assert job.state == DONE, job.error_detail
    app.run()
    assert not app.exception
    assert any(VERDICT.match(i.value) for i in app.info)


def test_the_live_view_and_stop_stops_the_whole_experiment(app, monkeypatch, tmp_path):
    monkeypatch.setenv(HOLD_BATCH_ENV, "3")  # the first run waits after its 4th batch: a live view to look at
    monkeypatch.setenv(HOLD_FILE_ENV, str(tmp_path / "never"))
    app.switch_page("pages/experiment.py").run()
    prefixed(app.button_group, "experiment.count.lr.")[0].set_value(2).run()
    app.button(key="experiment.start").click().run()
    job = job_manager().latest("experiment")
    deadline = time.monotonic() + 300
    while job.last("run") is None or len(run_store().batches(job.last("run").data["run_id"])) < 4:
        assert time.monotonic() < deadline and job.active, "the first run did not reach its hold"
        time.sleep(0.1)
    app.run()
    assert not app.exception
    assert any("Run 1 of 2" in p.proto.text for p in app.get("progress"))
    assert legend_names(chart(app, "experiment.live_chart")) == ["lr 1e-4"]
    assert app.table[-1].value["verdict"].tolist() == ["training…", "waiting"]
    app.button(key="experiment.stop").click().run()
    wait_for(job)
    assert job.state == "cancelled"
    app.run()
    assert not app.exception
    assert any("The experiment was stopped" in w.value for w in app.warning)
    runs = run_store().experiment_runs(job.meta["plan"].id)
    assert [r["status"] for r in runs] == ["cancelled"]  # the second run never started
    assert app.table[-1].value["verdict"].tolist()[1] == "not run"
