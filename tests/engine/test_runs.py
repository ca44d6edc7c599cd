"""Run history: written as a run goes, read back mid-run, interrupted runs detected, deletion to trash."""
from __future__ import annotations

import sqlite3

import pytest

from engine.runs import RunStore, _boot_id, run_dir


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def batch(i, epoch=0):
    return {"iter": i, "epoch": epoch, "loss": 1 / (i + 1), "smooth_loss": 1 / (i + 1), "lr": 1e-3 * i, "mom": 0.9}


def epoch_row(e, acc):
    return {"epoch": e, "phase": "one_cycle", "train_loss": 0.5, "valid_loss": 1 - acc, "error_rate": 1 - acc,
            "accuracy": acc, "time": 2.5, "last_iter": 10 * e + 9}


def test_a_run_written_midway_is_read_back_by_another_connection(store, tmp_path):
    run_id = store.create_run("Digits", {"size": 28}, {"arch": "small", "pretrained": False}, {"method": "one_cycle", "epochs": 3})
    for i in range(15):
        store.add_batch(run_id, batch(i, epoch=i // 10))
    store.add_epoch(run_id, epoch_row(0, 0.8))
    # a second connection, as after a restart: everything written so far is there
    other = RunStore(tmp_path / "runs.sqlite")
    assert len(other.batches(run_id)) == 15
    assert other.batches(run_id)["lr"].tolist()[:3] == pytest.approx([0, 1e-3, 2e-3])
    assert other.epochs(run_id)["accuracy"].tolist() == [0.8]
    row = other.runs().iloc[0]
    assert (row["id"], row["data"], row["arch"], row["epochs"], row["status"]) == (run_id, "Digits", "small", 1, "running")
    assert row["best_accuracy"] == 0.8
    other.close()


def test_finish_records_status_time_best_epoch_and_weights(store):
    run_id = store.create_run("Digits", {}, {"arch": "small"}, {"method": "fine_tune"})
    for e, acc in enumerate((0.7, 0.9, 0.85)):
        store.add_epoch(run_id, epoch_row(e, acc))
    store.finish(run_id, "done", weights_path="/x/model.pt")
    run = store.run(run_id)
    assert run["status"] == "done" and run["best_accuracy"] == 0.9 and run["best_epoch"] == 1
    assert run["weights_path"] == "/x/model.pt" and run["seconds"] >= 0
    assert run["model"] == {"arch": "small"} and run["train"] == {"method": "fine_tune"}


def test_runs_of_a_dead_process_show_as_interrupted(store, tmp_path):
    alive = store.create_run("mine", {}, {}, {})
    dead = store.create_run("crashed", {}, {}, {})
    old_boot = store.create_run("before reboot", {}, {}, {})
    finished = store.create_run("finished", {}, {}, {})
    store.finish(finished, "done")
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.execute("UPDATE runs SET owner = ? WHERE id = ?", (f"999999999@{_boot_id()}", dead))
    db.execute("UPDATE runs SET owner = ? WHERE id = ?", ("1@another-boot", old_boot))
    db.commit()
    db.close()
    reopened = RunStore(tmp_path / "runs.sqlite")
    status = dict(zip(reopened.runs()["id"], reopened.runs()["status"]))
    assert status == {alive: "running", dead: "interrupted", old_boot: "interrupted", finished: "done"}
    reopened.close()


def test_delete_moves_the_exported_files_to_trash(store, tmp_path):
    run_id = store.create_run("Digits", {}, {}, {})
    store.finish(run_id, "done")
    folder = run_dir(run_id)
    (folder / "model.pt").write_bytes(b"weights")
    store.delete_run(run_id)
    assert store.run(run_id) is None and not folder.exists()
    assert len(store.batches(run_id)) == 0
    trashed = list((tmp_path / "trash").glob(f"run-{run_id}-*/model.pt"))
    assert len(trashed) == 1 and trashed[0].read_bytes() == b"weights"


def test_an_active_run_cannot_be_deleted(store):
    run_id = store.create_run("Digits", {}, {}, {})
    with pytest.raises(ValueError, match="still going"):
        store.delete_run(run_id)
