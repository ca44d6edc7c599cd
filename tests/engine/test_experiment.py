"""Experiments: values and specs (pure), the runner on a small real digits folder (one seed, the database rows, stop,
pause), the time estimate, and `python -m engine experiment`."""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import replace

import pytest

from engine.data.augment import AugSettings
from engine.cli import main
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.train.experiment import (ExperimentPlan, default_values, estimate_experiment, experiment_rows, parse_vary,
                               plan_experiment, run_experiment, scaled_augment, setting_of, short_number, timing_spec,
                               value_label, value_of, vary)
from engine.store.jobs import CANCELLED, DONE, PAUSED, Job, JobManager
from engine.data.labels import LabelRule
from engine.train.learner import Callback
from engine.store.runs import RunStore
from engine.spec import DataSpec, ModelSpec, RunSpec, TrainSpec

DIGITS = RunSpec()  # the built-in digits: no flips


# ---------------------------------------------------------------- values and specs

def test_scaled_augment_scales_fastais_defaults():
    aug = AugSettings()  # max_rotate 10, max_zoom 1.1, max_lighting 0.2, max_warp 0.2, min_scale 1
    for strength, (rotate, zoom, lighting, warp) in {0: (0, 1, 0, 0), 0.5: (5, 1.05, 0.1, 0.1), 1: (10, 1.1, 0.2, 0.2),
                                                     2: (20, 1.2, 0.4, 0.4)}.items():
        s = scaled_augment(aug, strength)
        assert (s.max_rotate, s.max_zoom, s.max_lighting, s.max_warp) == pytest.approx((rotate, zoom, lighting, warp))
        assert (s.min_scale, s.do_flip, s.p_affine, s.p_lighting, s.min_zoom) == (1.0, True, 0.75, 0.75, 1.0)
    assert scaled_augment(aug, 1) == aug


def test_scaled_augment_scales_the_area_a_crop_leaves_out():
    aug = AugSettings(min_scale=0.75)
    assert scaled_augment(aug, 2).min_scale == pytest.approx(0.5)
    assert scaled_augment(aug, 0).min_scale == 1.0
    assert scaled_augment(AugSettings(min_scale=0.35), 2).min_scale == 0.05  # never less than 5 % of the image


@pytest.mark.parametrize("text, expected", [
    ("lr=1e-5,3e-3,3", ("lr", [1e-5, 3e-3, 3.0])),
    ("aug=on,off", ("aug", [1.0, "off"])),
    ("aug=0, 0.5,2", ("aug", [0.0, 0.5, 2.0])),
    ("size=14,28,56,112", ("size", [14, 28, 56, 112])),
    ("arch=small,resnet18", ("arch", ["small", "resnet18"])),
    ("epochs=1,3", ("epochs", [1, 3])),
])
def test_parse_vary(text, expected):
    assert parse_vary(text) == expected


@pytest.mark.parametrize("text, message", [
    ("lr", "--vary looks like NAME=V1,V2"),
    ("speed=1,2", "An experiment varies one of lr, aug, size, arch, epochs (got “speed”)"),
    ("lr=1e-3", "compares 2 to 4 values of the learning rate (got 1)"),
    ("lr=1,2,3,4,5", "(got 5)"),
    ("lr=fast,slow", "The learning rate “fast” is not a number"),
    ("lr=0,1e-3", "A learning rate must be above 0"),
    ("aug=3,1", "An augmentation strength goes from 0 (none) to 2"),
    ("aug=lots,1", "(or on / off)"),
    ("size=4,28", "at least 8 px"),
    ("size=28.5,56", "is not a whole number"),
    ("arch=vgg,small", "Unknown model “vgg”"),
    ("epochs=0,2", "at least 1 epoch"),
    ("lr=1e-3,0.001", "Each value once, please: lr 1e-3 is there twice"),
])
def test_parse_vary_refuses_bad_input_with_a_message(text, message):
    with pytest.raises(UserError, match=None) as info:
        parse_vary(text)
    assert message in str(info.value)


def test_value_labels():
    assert [short_number(x) for x in (3e-3, 1.5e-5, 0.1, 10.0, 0.0123, 2e-2)] == ["3e-3", "1.5e-5", "0.1", "10", "0.0123",
                                                                                  "0.02"]
    assert value_label("lr", 1e-4) == "lr 1e-4"
    assert [value_label("aug", v) for v in ("off", 0.5, 2.0)] == ["aug off", "aug ×0.5", "aug ×2"]
    assert (value_label("size", 64), value_label("arch", "resnet18")) == ("64 px", "resnet18")
    assert (value_label("epochs", 1), value_label("epochs", 3)) == ("1 epoch", "3 epochs")


def test_default_values_start_from_the_valley_else_the_specs_value():
    spec = override_lr(DIGITS, 2e-3)
    assert default_values("lr", spec, valley=1.2e-3) == [1.2e-4, 1.2e-3, 1.2e-2]
    assert default_values("lr", spec) == [2e-4, 2e-3, 2e-2]
    assert default_values("size", replace(spec, data=replace(spec.data, size=28))) == [14, 28]
    assert default_values("arch", spec) == ["small", "resnet18"]
    assert default_values("epochs", spec) == [1, 3, 6]
    assert default_values("aug", spec) == ["off", 1.0, 2.0]


def test_default_values_of_automatic_settings_are_the_specs_defaults():
    """An LR or size left automatic starts from what the run would use: the schedule's LR, the source's size."""
    auto = RunSpec()
    assert default_values("lr", auto) == [2e-4, 2e-3, 2e-2]  # fine_tune's base_lr
    assert default_values("lr", replace(auto, train=replace(auto.train, schedule="one_cycle"))) == [1e-4, 1e-3, 1e-2]
    assert default_values("size", auto) == [14, 28]  # the built-in digits' 28 px
    assert default_values("size", replace(auto, data=DataSpec(source="/some/folder"))) == [112, 224]


def override_lr(spec: RunSpec, lr: float) -> RunSpec:
    return replace(spec, train=replace(spec.train, lr=lr))


def test_vary_changes_one_setting_and_what_follows_from_it():
    base = RunSpec(data=DataSpec(size=28, presize=58), train=TrainSpec(schedule="one_cycle", lr=1e-3,
                                                                       lr_slice=(1e-5, 1e-3)))
    lr = vary(base, "lr", 1e-2)
    assert (lr.train.lr, lr.train.lr_slice) == (1e-2, pytest.approx((1e-4, 1e-2)))  # the slice keeps its spread
    size = vary(base, "size", 64)
    assert (size.data.size, size.data.presize) == (64, None)  # presize follows the size again (resolve fills it)
    assert vary(base, "aug", "off").augment == AugSettings.off()
    assert vary(base, "aug", 2.0).augment == scaled_augment(AugSettings(do_flip=False), 2.0)  # the digits' defaults
    assert vary(base, "arch", "resnet18").model.arch == "resnet18"
    assert vary(base, "epochs", 5).train.epochs == 5
    assert vary(base, "lr", 1e-2).data == base.data


def test_a_plan_gives_every_run_one_seed_and_differs_only_in_the_setting():
    plan = plan_experiment(DIGITS, "lr", ["1e-3", 1e-2, 0.1])
    seeds = {s.train.seed for s in plan.specs}
    assert len(seeds) == 1 and None not in seeds
    flats = [s.flat() for s in plan.specs]
    differ = {k for k in flats[0] if len({json.dumps(f[k]) for f in flats}) > 1}
    assert differ == {"train.lr"}
    assert plan.values == (1e-3, 1e-2, 0.1) and plan.labels == ["lr 1e-3", "lr 0.01", "lr 0.1"]
    assert setting_of(plan.id) == "lr"
    seeded = plan_experiment(replace(DIGITS, train=replace(DIGITS.train, seed=7)), "epochs", [1, 2])
    assert [s.train.seed for s in seeded.specs] == [7, 7]


def test_a_plan_reads_each_value_back_from_its_spec():
    plan = plan_experiment(DIGITS, "aug", [0.5, 2.0, "off"])
    assert [value_of("aug", s) for s in plan.specs] == [0.5, 2.0, "off"] == list(plan.values)
    # the digits have no flips: strength 0 is no augmentation at all, the same run as 'off'
    with pytest.raises(UserError, match="Two of the values give the same settings"):
        plan_experiment(DIGITS, "aug", [0.0, "off"])
    assert plan_experiment(DIGITS, "aug", [0.0, 1.0]).values == ("off", 1.0)


# ---------------------------------------------------------------- running

@pytest.fixture(scope="module")
def base(tmp_path_factory, write_digits, one_thread):
    """240 real digits (6 batches of 32 a run), the small model from scratch, one cycle, one epoch, no seed."""
    root = write_digits(tmp_path_factory.mktemp("experiment-digits"), count=240)
    return RunSpec(data=DataSpec(source=str(root), label=LabelRule(pattern=r"^(.+)_\d+\.png$"), size=28, presize=32,
                                 bs=32), augment=AugSettings(do_flip=False),
                   model=ModelSpec(arch="small", pretrained=False), train=TrainSpec(schedule="one_cycle", epochs=1))


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    yield JobManager(), store, PresizeCache()
    store.close()


def test_an_experiment_trains_one_run_per_value_on_the_same_data_split_and_seed(base, env):
    manager, store, cache = env
    plan = plan_experiment(base, "lr", [1e-7, 3e-3])
    job = manager.submit(Job("experiment", "two LRs", lambda job: run_experiment(plan, cache, store, job=job)))
    assert manager.wait(job, timeout=300)
    assert job.state == DONE, job.error_detail
    runs = store.experiment_runs(plan.id)
    assert len(runs) == 2 and [r["status"] for r in runs] == ["done", "done"]
    specs = [r["spec"] for r in runs]
    assert specs[0].train.seed == specs[1].train.seed == plan.specs[0].train.seed
    assert specs[0].data == specs[1].data and specs[0].augment == specs[1].augment
    assert [s.train.lr for s in specs] == [1e-7, 3e-3]
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT experiment FROM runs ORDER BY id").fetchall() == [(plan.id,), (plan.id,)]
    db.close()
    rows = job.result["runs"]
    assert [(r["value"], r["label"], r["run_id"]) for r in rows] == [(1e-7, "lr 1e-7", runs[0]["id"]),
                                                                     (3e-3, "lr 3e-3", runs[1]["id"])]
    assert [r["verdict"] for r in rows] == ["too_low", "underfitting"]
    assert rows[1]["accuracy"] > rows[0]["accuracy"] and all(r["seconds"] > 0 for r in rows)
    assert job.result["status"] == "done" and job.result["experiment"] == plan.id
    assert [e.data["label"] for e in job.of_kind("experiment_run")] == ["lr 1e-7", "lr 3e-3"]
    assert len(job.of_kind("run")) == 2 and job.progress == 1.0
    listed = store.experiments()
    assert listed["experiment"].tolist() == [plan.id] and listed["runs"].tolist() == [2]


class StopAt(Callback):
    """Stops the job at a batch of the first run (deterministic: no racing a running thread)."""

    def __init__(self, job: Job, at: int) -> None:
        self.job, self.at = job, at

    def after_batch(self, learn, logs):
        if logs["iter"] == self.at:
            self.job.stop()


def test_stop_stops_the_whole_experiment(base, env):
    manager, store, cache = env
    plan = plan_experiment(base, "lr", [1e-3, 1e-2])
    job = Job("experiment", "stopped", lambda job: run_experiment(plan, cache, store, job=job, callbacks=[StopAt(job, 2)]))
    manager.submit(job)
    assert manager.wait(job, timeout=300)
    assert job.state == CANCELLED
    runs = store.experiment_runs(plan.id)
    assert [r["status"] for r in runs] == ["cancelled"]  # the second run never started
    assert len(store.batches(runs[0]["id"])) == 3
    assert job.result["status"] == "cancelled" and len(job.result["runs"]) == 1
    assert len(job.of_kind("experiment_run")) == 1


class PauseAfterFirstRun(Callback):
    """Pauses the job as its first run ends, and says so."""

    def __init__(self, job: Job) -> None:
        self.job, self.paused = job, threading.Event()

    def after_fit(self, learn, logs):
        if not self.paused.is_set():
            self.job.pause()
            self.paused.set()


def test_a_pause_holds_the_next_run_until_resumed(base, env):
    manager, store, cache = env
    plan = plan_experiment(base, "epochs", [1, 2])
    job = Job("experiment", "paused", target=None)
    pauser = PauseAfterFirstRun(job)
    job.target = lambda job: run_experiment(plan, cache, store, job=job, callbacks=[pauser])
    manager.submit(job)
    assert pauser.paused.wait(timeout=300)
    assert job.state == PAUSED
    assert len(store.experiment_runs(plan.id)) == 1  # the runner waits before the second run: it cannot have begun
    assert 0 < job.progress == pytest.approx(1 / 3)  # 1 epoch of 3
    job.resume()
    assert manager.wait(job, timeout=300)
    assert job.state == DONE and len(store.experiment_runs(plan.id)) == 2


def test_experiment_rows_read_an_experiment_back(base, env):
    _, store, cache = env
    plan = plan_experiment(base, "aug", ["off", 2.0])
    result = run_experiment(plan, cache, store)
    assert result["runs"] == experiment_rows(store, plan.id)
    assert [r["label"] for r in result["runs"]] == ["aug off", "aug ×2"]
    assert experiment_rows(store, "lr-000000") == []


def test_the_estimate_times_each_model_and_size_once_and_scales_by_epochs(base, env, monkeypatch):
    _, _, cache = env
    timed = []

    def fake_estimate(spec, cache, steps=3, default_threads=None):
        timed.append((spec.model.arch, spec.data.size, spec.train.epochs))
        return 10.0 * spec.train.epochs

    monkeypatch.setattr("engine.train.experiment.estimate_seconds", fake_estimate)
    assert estimate_experiment(plan_experiment(base, "epochs", [2, 4, 8]).specs, cache) == [20.0, 40.0, 80.0]
    assert timed == [("small", 28, 1)]  # one epoch timed, scaled
    timed.clear()
    assert estimate_experiment(plan_experiment(base, "size", [28, 56]).specs, cache) == [10.0, 10.0]
    assert timed == [("small", 28, 1), ("small", 56, 1)]
    timed.clear()
    assert estimate_experiment(plan_experiment(base, "lr", [1e-3, 1e-2]).specs, cache, measure=lambda s: 7.0) == [7.0, 7.0]
    assert timed == []


def test_runs_that_differ_in_the_lr_or_seed_share_one_timing_spec(base):
    one, other = plan_experiment(base, "lr", [1e-3, 1e-2]).specs
    assert timing_spec(one) == timing_spec(replace(other, train=replace(other.train, seed=99)))
    assert timing_spec(one).train.epochs == 1 and timing_spec(one).data == one.data


def test_the_real_estimate_is_positive(base, env):
    _, _, cache = env
    seconds = estimate_experiment(plan_experiment(base, "lr", [1e-3, 1e-2]).specs, cache)
    assert len(seconds) == 2 and seconds[0] == seconds[1] > 0


# ---------------------------------------------------------------- the command line

def test_the_experiment_command_prints_one_json_line(base, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    code = main(["experiment", "--data", base.data.source, "--label", r"regex:^(.+)_\d+\.png$", "--arch", "small",
                 "--no-pretrained", "--size", "28", "--presize", "32", "--bs", "32", "--epochs", "1",
                 "--schedule", "one_cycle", "--no-flip", "--vary", "lr=1e-7,3e-3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert setting_of(result["experiment"]) == "lr"
    assert [r["value"] for r in result["runs"]] == [1e-7, 3e-3]
    assert [r["verdict"] for r in result["runs"]] == ["too_low", "underfitting"]
    for row in result["runs"]:
        assert {"value", "accuracy", "valid_loss", "seconds", "verdict", "run_id"} <= set(row)
    store = RunStore(tmp_path / "runs.sqlite")
    runs = store.experiment_runs(result["experiment"])
    assert [r["id"] for r in runs] == [r["run_id"] for r in result["runs"]]
    assert {r["source"] for r in runs} == {"cli"} and len({r["spec"].train.seed for r in runs}) == 1
    store.close()
    assert "run 1 of 2: lr 1e-7" in captured.err and "run 2 of 2: lr 3e-3" in captured.err


@pytest.mark.parametrize("vary, message", [
    ("lr=1e-3", "compares 2 to 4 values"),
    ("colour=red,blue", "An experiment varies one of"),
    ("aug=5,1", "An augmentation strength goes from 0"),
    ("arch=vgg,small", "Unknown model"),
])
def test_the_experiment_command_refuses_bad_values_with_exit_code_2(vary, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    assert main(["experiment", "--vary", vary]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_an_experiment_plan_is_plain_data():
    plan = plan_experiment(DIGITS, "epochs", [1, 2], experiment_id="epochs-abcdef")
    assert isinstance(plan, ExperimentPlan) and plan.id == "epochs-abcdef" and plan.values == (1, 2)


def test_an_older_database_gains_the_experiment_column(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.executescript(  # the first version's runs table: none of the columns added since
        "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, kind TEXT NOT NULL DEFAULT "
        "'train', name TEXT NOT NULL, data TEXT NOT NULL, model TEXT NOT NULL, train TEXT NOT NULL, status TEXT NOT NULL, "
        "owner TEXT NOT NULL, started REAL, finished REAL, seconds REAL, best_accuracy REAL, best_epoch INTEGER, "
        "weights_path TEXT, error TEXT)")
    db.execute("INSERT INTO runs (created, name, data, model, train, status, owner) "
               "VALUES (0, 'Digits', '{}', '{\"arch\": \"small\"}', '{}', 'done', '1@x')")
    db.commit()
    db.close()
    store = RunStore(tmp_path / "runs.sqlite")
    assert store.experiments().empty and len(store.runs()) == 1
    run_id = store.create_run(DIGITS, {"arch": "small"}, experiment="lr-abcdef")
    assert store.experiments()["experiment"].tolist() == ["lr-abcdef"]
    assert [r["id"] for r in store.experiment_runs("lr-abcdef")] == [run_id]
    store.close()
