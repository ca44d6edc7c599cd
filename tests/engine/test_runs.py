"""Run history: written as a run goes, read back mid-run, interrupted runs detected, deletion to trash."""
from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from engine.store.runs import RunStore, _boot_id, run_dir
from engine.spec import RunSpec, TrainSpec

SPEC = RunSpec(train=TrainSpec(schedule="one_cycle", epochs=3, seed=1))


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
    run_id = store.create_run(SPEC, {"arch": "small", "pretrained": False}, source="cli", name="Digits — file names")
    for i in range(15):
        store.add_batch(run_id, batch(i, epoch=i // 10))
    store.add_epoch(run_id, epoch_row(0, 0.8))
    # a second connection, as after a restart: everything written so far is there
    other = RunStore(tmp_path / "runs.sqlite")
    assert len(other.batches(run_id)) == 15
    assert other.batches(run_id)["lr"].tolist()[:3] == pytest.approx([0, 1e-3, 2e-3])
    assert other.epochs(run_id)["accuracy"].tolist() == [0.8]
    row = other.runs().iloc[0]
    assert (row["id"], row["data"], row["arch"], row["epochs"], row["status"], row["source"], row["schedule"]) == \
        (run_id, "Digits — file names", "small", 1, "running", "cli", "one_cycle")
    assert row["accuracy"] == 0.8  # the latest epoch's, while running
    assert other.run(run_id)["spec"] == SPEC
    other.close()


def test_finish_records_status_time_the_kept_epoch_and_weights(store):
    run_id = store.create_run(SPEC, {"arch": "small"})
    for e, acc in enumerate((0.7, 0.9, 0.85)):
        store.add_epoch(run_id, epoch_row(e, acc))
    store.finish(run_id, "done", weights_path="/x/run", kept_epoch=1, accuracy=0.9, valid_loss=0.1)
    run = store.run(run_id)
    assert run["status"] == "done" and run["kept_epoch"] == 1 and run["accuracy"] == 0.9 and run["valid_loss"] == 0.1
    assert run["weights_path"] == "/x/run" and run["seconds"] >= 0 and run["source"] == "app"
    assert run["model"] == {"arch": "small"} and run["spec"].train.schedule == "one_cycle"
    row = store.runs().iloc[0]
    assert row["kept_epoch"] == 1 and row["accuracy"] == 0.9
    assert row["data"] == SPEC.data.source and row["schedule"] == "one_cycle"  # no name given: the source


OLD_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, kind TEXT NOT NULL DEFAULT 'train',
    name TEXT NOT NULL, data TEXT NOT NULL, model TEXT NOT NULL, train TEXT NOT NULL, status TEXT NOT NULL,
    owner TEXT NOT NULL, started REAL, finished REAL, seconds REAL, best_accuracy REAL, best_epoch INTEGER,
    weights_path TEXT, error TEXT);
CREATE TABLE batches (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, iter INTEGER NOT NULL,
    epoch INTEGER NOT NULL, loss REAL, smooth_loss REAL, lr REAL, mom REAL, PRIMARY KEY (run_id, iter));
CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, epoch INTEGER NOT NULL, phase TEXT,
    train_loss REAL, valid_loss REAL, error_rate REAL, accuracy REAL, time REAL, last_iter INTEGER,
    PRIMARY KEY (run_id, epoch));
"""


def test_a_database_of_an_older_version_is_migrated_and_keeps_its_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.executescript(OLD_SCHEMA)
    data = ('{"root": "/x/builtin/digits-names", "name": "Digits", "label": {"kind": "regex", "pattern": "^(.+)_\\\\d+", '
            '"on": "name"}, "split": {"kind": "random"}, "size": 28, "presize": 32, "method": "squish", "bs": 16, '
            '"aug": {"do_flip": false}}')
    for run_id, save_best in ((1, "true"), (2, "false")):
        db.execute("INSERT INTO runs (created, name, data, model, train, status, owner, best_accuracy, best_epoch) "
                   "VALUES (0, 'Digits', ?, '{\"arch\": \"small\"}', ?, 'done', '1@x', 0.9, 1)",
                   (data, f'{{"method": "one_cycle", "epochs": 3, "lr": 0.003, "save_best": {save_best}, "seed": 5}}'))
        # epoch 1 has the best accuracy, epoch 2 the lowest validation loss
        for e, (acc, loss) in enumerate(((0.7, 0.5), (0.9, 0.4), (0.85, 0.3))):
            db.execute("INSERT INTO epochs VALUES (?, ?, 'one_cycle', 0.5, ?, ?, ?, 1.0, ?)",
                       (run_id, e, loss, 1 - acc, acc, 10 * e + 9))
    db.commit()
    db.close()
    store = RunStore(tmp_path / "runs.sqlite")
    runs = store.runs().set_index("id")
    assert runs.loc[1, "kept_epoch"] == 2 and runs.loc[1, "accuracy"] == 0.85  # lowest valid loss, as save_best kept
    assert runs.loc[2, "kept_epoch"] == 2  # no save_best: the last epoch
    assert runs.loc[1, "source"] == "app" and len(store.epochs(1)) == 3
    spec = store.run(1)["spec"]  # rebuilt from the old columns
    assert spec.data.source == "builtin:digits-names" and spec.data.presize_method == "squish" and spec.data.bs == 16
    assert (spec.train.schedule, spec.train.epochs, spec.train.lr, spec.train.seed) == ("one_cycle", 3, 0.003, 5)
    assert spec.augment.do_flip is False
    new = store.create_run(SPEC, {"arch": "small"})  # and new runs go in beside them
    assert store.run(new)["spec"] == SPEC
    store.close()
    # one shape: the spec column alone holds the settings; the old data and train columns are gone
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    specs = [json.loads(text) for (text,) in db.execute("SELECT spec FROM runs ORDER BY id")]
    db.close()
    assert "data" not in columns and "train" not in columns and {"spec", "model", "name"} <= columns
    assert [s["train"]["keep_best"] for s in specs] == [True, False, SPEC.train.keep_best]
    assert specs[0]["data"]["size"] == 28 and specs[0]["data"]["bs"] == 16 and specs[0]["data"]["presize"] == 32
    again = RunStore(tmp_path / "runs.sqlite")  # opening a migrated database again changes nothing
    assert again.run(1)["spec"] == spec and again.runs().set_index("id").loc[1, "kept_epoch"] == 2
    again.close()


def test_two_stores_opening_an_old_database_at_once_migrate_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO runs (created, name, data, model, train, status, owner) VALUES (0, 'Digits', "
               "'{\"root\": \"/x/builtin/digits-names\"}', '{}', '{\"epochs\": 5}', 'done', '1@x')")
    db.commit()
    db.close()
    stores = [None, None]
    errors = []

    def open_store(i):
        try:
            stores[i] = RunStore(tmp_path / "runs.sqlite")
        except Exception as e:  # noqa: BLE001 (the test reports it)
            errors.append(e)

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.run(1)["spec"].train.epochs for s in stores] == [5, 5]
    for s in stores:
        s.close()


def test_runs_of_a_dead_process_show_as_interrupted(store, tmp_path):
    alive, dead, old_boot, finished = (store.create_run(SPEC, {}) for _ in range(4))
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
    run_id = store.create_run(SPEC, {})
    store.finish(run_id, "done")
    folder = run_dir(run_id)
    (folder / "model.pt").write_bytes(b"weights")
    store.delete_run(run_id)
    assert store.run(run_id) is None and not folder.exists()
    assert len(store.batches(run_id)) == 0
    trashed = list((tmp_path / "trash").glob(f"run-{run_id}-*/model.pt"))
    assert len(trashed) == 1 and trashed[0].read_bytes() == b"weights"


def test_an_active_run_cannot_be_deleted(store):
    run_id = store.create_run(SPEC, {})
    with pytest.raises(ValueError, match="still going"):
        store.delete_run(run_id)
