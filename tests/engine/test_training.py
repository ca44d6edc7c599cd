"""Training and LR-finder jobs on a small set of the real digits: the run history, the export, stop and failure."""
from __future__ import annotations

import pytest

from engine.augment import AugSettings
from engine.builtin import DIGIT_WORDS
from engine.data import DataConfig, PresizeCache
from engine.export import load_run
from engine.jobs import CANCELLED, DONE, FAILED, Job, JobManager
from engine.labels import LabelRule
from engine.learner import Learner
from engine.runs import RunStore
from engine.training import TrainSettings, estimate_seconds, lr_find_target, train_target


@pytest.fixture(scope="module")
def config(tmp_path_factory, write_digits):
    root = write_digits(tmp_path_factory.mktemp("train-digits"), count=240)
    return DataConfig(root=str(root), name="digits (240)", label=LabelRule(pattern=r"^(.+)_\d+\.png$"),
                      size=28, presize=32, bs=32, aug=AugSettings(do_flip=False))


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    yield JobManager(), store, PresizeCache()
    store.close()


SETTINGS = TrainSettings(arch="small", pretrained=False, method="one_cycle", epochs=2, lr=3e-3, seed=0)


def test_a_training_job_records_every_batch_and_epoch_and_exports(config, env):
    manager, store, cache = env
    job = manager.submit(Job("train", "digits", train_target(config, SETTINGS, cache, store)))
    assert manager.wait(job, timeout=300)
    assert job.state == DONE, job.error_detail
    run_id = job.result["run_id"]
    n_batches = 2 * (192 // 32)
    kinds = [e.kind for e in job.since(0)]
    assert kinds.count("batch") == n_batches and kinds.count("epoch") == 2
    assert len(store.batches(run_id)) == n_batches
    epochs = store.epochs(run_id)
    assert epochs["epoch"].tolist() == [0, 1] and epochs["last_iter"].tolist() == [5, 11]
    run = store.run(run_id)
    assert run["status"] == "done" and run["model"]["arch"] == "small" and run["train"]["epochs"] == 2
    exported = load_run(run["weights_path"])
    assert exported.classes == sorted(DIGIT_WORDS)
    assert job.progress == 1.0


def test_stopping_a_training_job_keeps_its_rows(config, env):
    manager, store, cache = env
    job = Job("train", "digits", train_target(config, TrainSettings(arch="small", pretrained=False, method="one_cycle",
                                                                      epochs=50, lr=1e-3), cache, store))
    manager.submit(job)
    while sum(e.kind == "epoch" for e in job.since(0)) < 1:
        assert job.active, job.error_detail
    job.stop()
    assert manager.wait(job, timeout=60) and job.state == CANCELLED
    run = store.run(job.result["run_id"])
    assert run["status"] == "cancelled" and len(store.epochs(run["id"])) >= 1
    assert len(store.epochs(run["id"])) < 50


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
    job = manager.submit(Job("train", "digits", train_target(config, SETTINGS, cache, store)))
    assert manager.wait(job, timeout=60)
    assert job.state == FAILED and "fell off the bus" in job.error
    run = store.runs().iloc[0]
    assert run["status"] == "failed" and "fell off the bus" in run["error"]


def test_a_bad_data_configuration_fails_the_job_with_its_message(env, tmp_path):
    manager, store, cache = env
    bad = DataConfig(root=str(tmp_path / "missing"), name="missing")
    job = manager.submit(Job("train", "bad", train_target(bad, SETTINGS, cache, store)))
    assert manager.wait(job, timeout=30) and job.state == FAILED and "does not exist" in job.error


def test_lr_find_job(config, env):
    manager, _, cache = env
    job = manager.submit(Job("lr_find", "lr", lr_find_target(config, SETTINGS, cache, num_it=40)))
    assert manager.wait(job, timeout=120) and job.state == DONE, job.error_detail
    steps = [e for e in job.since(0) if e.kind == "lr_step"]
    assert len(steps) == len(job.result.lrs) and steps[0].data["lr"] == pytest.approx(1e-7)
    assert {"valley", "minimum", "steep"} <= set(job.result.suggestions)


def test_estimate_is_positive_and_scales_with_epochs(config, env):
    _, _, cache = env
    one = estimate_seconds(config, TrainSettings(arch="small", method="one_cycle", epochs=1), cache)
    four = estimate_seconds(config, TrainSettings(arch="small", method="one_cycle", epochs=4), cache)
    assert one > 0 and four > 2 * one
