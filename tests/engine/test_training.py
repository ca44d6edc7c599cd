"""Training and LR-finder jobs on a small set of the real digits: the run history, the export, stop and failure."""
from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from engine.data.augment import AugSettings
from engine.data.builtin import DIGIT_WORDS
from engine.data.loaders import PresizeCache
from engine.train.export import load_run
from engine.store.jobs import DONE, FAILED, INTERRUPTED, Job, JobManager, RunControl
from engine.train import run
from engine.data.labels import LabelRule
from engine.train.learner import Callback, Learner
from engine.store.runs import RunStore
from engine.data.resolve import resolve
from engine.spec import DataSpec, LRFindSpec, ModelSpec, RunSpec, TrainSpec, load_spec
from engine.train.run import (build_learner, data_loaders, estimate_from_step, estimate_seconds, lr_find_target,
                             planned_batches, prepare_data, train_run, train_target)


@pytest.fixture(scope="module")
def config(tmp_path_factory, write_digits):
    """240 real digits: 192 train (6 batches of 32), 48 valid."""
    root = write_digits(tmp_path_factory.mktemp("train-digits"), count=240)
    return RunSpec(data=DataSpec(source=str(root), label=LabelRule(pattern=r"^(.+)_\d+\.png$"), size=28, presize=32,
                                 bs=32), augment=AugSettings(do_flip=False),
                   model=ModelSpec(arch="small", pretrained=False),
                   train=TrainSpec(schedule="one_cycle", epochs=2, lr=3e-3, seed=0))


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    yield JobManager(), store, PresizeCache()
    store.close()


def with_train(spec: RunSpec, **changes) -> RunSpec:
    return replace(spec, train=replace(spec.train, **changes))


def test_a_training_job_records_every_batch_and_epoch_and_exports(config, env):
    manager, store, cache = env
    job = manager.submit(Job("train", "digits", train_target(config, cache, store)))
    assert manager.wait(job, timeout=300)
    assert job.state == DONE, job.error_detail
    run_id = job.result["run_id"]
    n_batches = 2 * (192 // 32)
    kinds = [e.kind for e in job.since(0)]
    assert "batch" not in kinds and "epoch" not in kinds  # the pages read the curves from the runs database
    assert len(store.batches(run_id)) == n_batches
    epochs = store.epochs(run_id)
    assert epochs["epoch"].tolist() == [0, 1] and epochs["last_iter"].tolist() == [5, 11]
    run = store.run(run_id)
    assert run["status"] == "done" and run["model"]["arch"] == "small" and run["spec"].train.epochs == 2
    assert run["source"] == "app" and run["kept_epoch"] == job.result["kept_epoch"] is not None
    assert run["accuracy"] == job.result["accuracy"]
    exported = load_run(run["weights_path"])
    assert exported.classes == sorted(DIGIT_WORDS)
    assert load_spec(run["weights_path"]) == run["spec"] == replace(resolve(config), device=run["spec"].device)
    assert job.progress == 1.0


class StopAfterFirstEpoch(Callback):
    """Stops a run deterministically: at the end of its first epoch (no racing a running thread)."""

    def after_epoch(self, learn, logs):
        learn.control.stop()


def test_keep_best_keeps_the_epoch_with_the_lowest_validation_loss(config, env):
    _, store, cache = env
    kept = train_run(with_train(config, epochs=4, keep_best=True), cache, store)
    epochs = store.epochs(kept["run_id"])
    assert kept["kept_epoch"] == int(epochs.loc[epochs["valid_loss"].idxmin(), "epoch"])
    assert kept["valid_loss"] == pytest.approx(epochs["valid_loss"].min(), abs=1e-5)
    last = train_run(with_train(config, epochs=4, keep_best=False), cache, store)
    assert last["kept_epoch"] == 3
    assert last["valid_loss"] == pytest.approx(store.epochs(last["run_id"])["valid_loss"].iloc[-1], abs=1e-5)


def test_a_run_without_a_seed_draws_and_records_one(config, env):
    _, store, cache = env
    result = train_run(with_train(config, seed=None, epochs=1), cache, store)
    assert isinstance(result["seed"], int)
    assert store.run(result["run_id"])["spec"].train.seed == result["seed"]


def test_stopping_a_training_run_keeps_its_rows(config, env):
    _, store, cache = env
    result = train_run(with_train(config, epochs=50), cache, store, callbacks=[StopAfterFirstEpoch()])
    run = store.run(result["run_id"])
    assert run["status"] == "cancelled" and result["status"] == "cancelled"
    assert len(store.epochs(run["id"])) == 1 and run["kept_epoch"] == 0 and run["weights_path"]


class HoldAt(Callback):
    """After batch `at`, says so and waits until the run is stopped (the Hold hook, without files)."""

    def __init__(self, at: int) -> None:
        self.at, self.reached = at, threading.Event()

    def after_batch(self, learn, logs):
        if logs["iter"] == self.at:
            self.reached.set()
            assert learn.control.wait_stopped(60), "the run was never stopped"


def test_a_job_stopped_for_shutdown_is_interrupted_with_its_rows_kept(config, env):
    manager, store, cache = env
    hold = HoldAt(2)
    job = manager.submit(Job("train", "digits", lambda job: train_run(config, cache, store, job=job, callbacks=[hold])))
    assert hold.reached.wait(60)
    assert manager.shutdown() == []
    assert job.state == INTERRUPTED and job.result["status"] == "interrupted", job.error_detail
    run = store.run(job.result["run_id"])
    assert run["status"] == "interrupted" and run["finished"] is not None
    assert store.batches(run["id"])["iter"].tolist() == [0, 1, 2]  # the batches before the stop, kept
    assert run["weights_path"] is None and job.result["out"] is None  # no epoch finished: no model


def test_an_interrupted_run_keeps_the_model_of_its_finished_epochs(config, env):
    _, store, cache = env
    control = RunControl()

    class SignalAfterFirstEpoch(Callback):  # what the command line's SIGINT/SIGTERM handler does
        def after_epoch(self, learn, logs):
            control.interrupt()

    result = train_run(with_train(config, epochs=50), cache, store, control=control,
                       callbacks=[SignalAfterFirstEpoch()])
    run = store.run(result["run_id"])
    assert run["status"] == result["status"] == "interrupted"
    assert len(store.batches(run["id"])) == 6 and len(store.epochs(run["id"])) == 1
    assert run["kept_epoch"] == result["kept_epoch"] == 0 and load_run(run["weights_path"]).classes


def test_a_keyboard_interrupt_inside_training_is_recorded_as_interrupted(config, env):
    _, store, cache = env

    class SecondCtrlC(Callback):
        def after_batch(self, learn, logs):
            if logs["iter"] == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, cache, store, callbacks=[SecondCtrlC()])
    run = store.runs().iloc[0]
    assert run["status"] == "interrupted" and run["error"] is None
    assert len(store.batches(int(run["id"]))) == 2


def test_a_failure_inside_training_is_recorded(config, env, monkeypatch):
    manager, store, cache = env
    calls = {"n": 0}
    original = Learner.train_step

    def failing(self, x, y):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the GPU fell off the bus")
        return original(self, x, y)

    monkeypatch.setattr(Learner, "train_step", failing)
    job = manager.submit(Job("train", "digits", train_target(config, cache, store)))
    assert manager.wait(job, timeout=60)
    assert job.state == FAILED and "fell off the bus" in job.error
    run = store.runs().iloc[0]
    assert run["status"] == "failed" and "fell off the bus" in run["error"]


def test_a_bad_data_configuration_fails_the_job_with_its_message(env, tmp_path):
    manager, store, cache = env
    bad = RunSpec(data=DataSpec(source=str(tmp_path / "missing")))
    job = manager.submit(Job("train", "bad", train_target(bad, cache, store)))
    assert manager.wait(job, timeout=30) and job.state == FAILED and "does not exist" in job.error


def test_lr_find_job(config, env):
    manager, _, cache = env
    job = manager.submit(Job("lr_find", "lr", lr_find_target(config, cache, LRFindSpec(num_it=40))))
    assert manager.wait(job, timeout=120) and job.state == DONE, job.error_detail
    steps = [e for e in job.since(0) if e.kind == "lr_step"]
    assert len(steps) == len(job.result.lrs) and steps[0].data["lr"] == pytest.approx(1e-7)
    assert {"valley", "minimum", "steep"} <= set(job.result.suggestions)


def test_the_work_a_run_plans_and_its_estimate_from_a_step_time(config):
    assert planned_batches(config, n_train=192, n_valid=48) == (2 * 6, 2 * 2)
    fine_tune = with_train(config, schedule="fine_tune", epochs=3, freeze_epochs=1)
    assert planned_batches(fine_tune, n_train=192, n_valid=48) == (4 * 6, 4 * 2)
    assert estimate_from_step(0.5, config, 192, 48) == pytest.approx(0.5 * 12 + 0.5 / 3 * 4)
    four = with_train(config, epochs=4)
    assert estimate_from_step(0.5, four, 192, 48) == pytest.approx(2 * estimate_from_step(0.5, config, 192, 48))


def test_estimate_times_real_steps(config, env):
    _, _, cache = env
    assert estimate_seconds(config, cache) > 0


def test_the_data_pages_preview_draws_the_batches_a_run_of_the_spec_draws(config, env):
    """`data_loaders` (what show_batch uses) and a prepared learner make the same DataLoaders from one spec."""
    _, _, cache = env
    data = prepare_data(config, cache)
    preview = data_loaders(data.spec, data.items, data.images)
    learn = build_learner(data).learn
    assert (preview.size, preview.bs, preview.aug) == (learn.dls.size, learn.dls.bs, learn.dls.aug) == (28, 32, config.augment)
    (x1, y1), (x2, y2) = next(preview.train()), next(learn.dls.train())
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same seed: the same first batch, augmentation included


def test_the_estimate_and_the_run_share_one_preparation(config, env, monkeypatch):
    """The command line's route: the data is prepared once, timed, then trained on; the run is the one it would be."""
    _, store, cache = env
    loads = []
    real = run.load_items
    monkeypatch.setattr(run, "load_items", lambda data: loads.append(data) or real(data))
    data = prepare_data(with_train(config, seed=None, epochs=1), cache)
    assert estimate_seconds(data, cache) > 0
    result = train_run(data, cache, store)
    assert len(loads) == 1 and result["status"] == "done" and result["seed"] == data.spec.train.seed
    again = train_run(with_train(config, seed=data.spec.train.seed, epochs=1), cache, store)
    assert again["valid_loss"] == result["valid_loss"]  # the timed steps drew nothing from the run's streams


def test_the_eta_comes_from_the_steps_measured_so_far():
    """JobEvents measures recent batches and validations on the job's clock; the ETA counts down between updates."""
    from engine.train.run import JobEvents

    now = [100.0]
    job = Job("train", "t", lambda job: None)
    job.clock = lambda: now[0]
    job.started = now[0]
    events = JobEvents(job, n_total=10, n_epochs=2)

    class Learn:
        pass

    logs = {"iter": 0, "epoch": 0, "loss": 1.0, "smooth_loss": 1.0, "lr": 1e-3, "mom": 0.9}
    events.before_fit(Learn(), {})
    for i in range(5):  # epoch 0: five batches of 2 s
        now[0] += 2.0
        events.after_batch(Learn(), {**logs, "iter": i})
    assert job.eta_seconds == pytest.approx(5 * 2.0 + 2 * 2.0)  # 5 batches left, 2 validations guessed at a batch
    now[0] += 6.0  # the validation takes 6 s
    events.after_epoch(Learn(), {**logs, "phase": "one_cycle", "train_loss": 1.0, "valid_loss": 1.0, "error_rate": 0.5,
                                  "accuracy": 0.5, "time": 16.0})
    now[0] += 1.0
    events.after_batch(Learn(), {**logs, "iter": 5})
    step = (5 * 2.0 + 1.0) / 6  # the batches measured so far, validation left out
    assert job.eta_seconds == pytest.approx(4 * step + 1 * 6.0)  # and the one validation left, as measured
    now[0] += 3.0  # no new batch: the estimate counts down, never stale
    assert job.eta_seconds == pytest.approx(4 * step + 6.0 - 3.0)


def test_an_lr_found_for_one_schedule_holds_for_the_other_unless_fine_tune_freezes_a_pretrained_body():
    from engine.spec import RunSpec, override
    from engine.train.run import lr_finder_key

    def key(arch: str, schedule: str, pretrained: bool = True) -> str:
        return lr_finder_key(override(RunSpec(), {"model.arch": arch, "model.pretrained": pretrained,
                                                  "train.schedule": schedule}))

    assert key("small", "fine_tune") == key("small", "one_cycle")  # nothing to freeze: the same finder
    assert key("resnet18", "fine_tune", pretrained=False) == key("resnet18", "one_cycle", pretrained=False)
    assert key("resnet18", "fine_tune") != key("resnet18", "one_cycle")  # the finder ran on a frozen body
    assert key("small", "one_cycle") != key("resnet18", "one_cycle")  # another model
