"""Run history in SQLite (LOUPE_HOME/runs.sqlite): each run's spec, per-batch and per-epoch rows, status, weights.

Rows are committed as the run goes, so a crash loses at most the batch in progress. A run left
'running' by a process that is gone shows as 'interrupted' the next time the store is opened: a process
of this machine is looked up by its pid; one of another machine (LOUPE_HOME on a shared disk) is judged
by its heartbeat, written every HEARTBEAT_SECONDS while the run is active, and gone after STALE_SECONDS.
The app, the command line (and torchrun) write to the same database, so the Runs page lists them all, and a
dashboard on any machine sharing LOUPE_HOME draws them live. On a network disk (NFS, SMB…, or LOUPE_SHARED_DB=1)
the database keeps SQLite's rollback journal: WAL mode needs memory shared by every reader, so one machine.
Databases made by older versions are migrated in place when opened: columns are added, and a run recorded before
the spec existed gets its spec rebuilt from the old `data` and `train` columns, which are then dropped (a run's spec
is kept in one shape only).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd

from engine.store.home import home_subdir, loupe_home
from engine.errors import UserError
from engine.spec import RunSpec, legacy_spec

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',
    name TEXT NOT NULL,        -- what the user calls the data set
    model TEXT NOT NULL,       -- JSON: arch, pretrained (as trained), classes
    status TEXT NOT NULL,      -- running, paused, done, cancelled, failed, interrupted
    owner TEXT NOT NULL,       -- process that writes it (to detect interrupted runs)
    started REAL, finished REAL, seconds REAL,
    best_accuracy REAL, best_epoch INTEGER,  -- old names: the kept model's accuracy and epoch
    weights_path TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    iter INTEGER NOT NULL, epoch INTEGER NOT NULL,
    loss REAL, smooth_loss REAL, lr REAL, mom REAL,
    PRIMARY KEY (run_id, iter)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, phase TEXT,
    train_loss REAL, valid_loss REAL, error_rate REAL, accuracy REAL, time REAL, last_iter INTEGER,
    PRIMARY KEY (run_id, epoch)
);
"""
# columns added since the first version: (name, declaration); older databases get them on open
MIGRATIONS = (
    ("spec", "TEXT"),  # JSON: the run's whole RunSpec, resolved and seeded (older runs: rebuilt on open)
    ("source", "TEXT NOT NULL DEFAULT 'app'"),  # app | cli | torchrun
    ("kept_epoch", "INTEGER"),  # the epoch whose weights the saved model has
    ("accuracy", "REAL"),  # validation accuracy of the saved model (of the latest epoch while running)
    ("valid_loss", "REAL"),  # likewise, its validation loss
    ("folder", "TEXT"),  # the run folder: spec.json from the start, the model once an epoch is done
    ("world_size", "INTEGER NOT NULL DEFAULT 1"),  # processes that trained it (torchrun), 1 otherwise
    ("host", "TEXT"),  # the machine of the process that writes it
    ("heartbeat", "REAL"),  # when that process last said it is alive (while the run is active)
    ("experiment", "TEXT"),  # the experiment the run is one value of ("lr-3f9a2c"; engine.train.experiment), else NULL
)
LEGACY_COLUMNS = {"data", "train"}  # JSON parts of a run's settings, from before the spec kept them all
HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 120.0  # a run of another machine without a heartbeat this long is interrupted (clocks may differ a little)
NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "lustre", "gpfs", "ceph",
                        "fuse.ceph", "glusterfs", "fuse.glusterfs", "beegfs", "afs", "fuse.s3fs", "fuse.gcsfuse")
ACTIVE = ("running", "paused", "stopping")
RUN_COLUMNS = ("id", "date", "source", "data", "images", "arch", "pretrained", "schedule", "epochs", "accuracy",
               "kept_epoch", "status", "seconds", "weights_path", "error")
SOURCES = ("app", "cli", "torchrun")


def _images(model: dict) -> str:
    """'787 / 195': the training and validation images a run used (as the Data page counts them); '' for older runs."""
    return f"{model['n_train']:,} / {model['n_valid']:,}" if "n_train" in model and "n_valid" in model else ""


def _owner() -> str:
    return f"{os.getpid()}@{_pid_space()}"


def _pid_space() -> str:
    """Where this process's pid means something: this boot of this kernel, this PID namespace (a container has its own)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        namespace = ""
    return f"{_boot_id()}/{namespace}" if namespace else _boot_id()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _alive(run: dict | sqlite3.Row, now: float | None = None) -> bool:
    """Whether the process writing an active run is still there: looked up by pid when it can be; a process of this
    machine before a reboot is gone; one of another machine (or container) lives while its heartbeat is fresh."""
    pid, _, space = run["owner"].partition("@")
    if space == _pid_space() or space == _boot_id():  # (an owner without a namespace: recorded before they were)
        return _pid_alive(pid)
    if run["host"] is None or (run["host"] == socket.gethostname() and space.split("/")[0] != _boot_id()):
        return False  # recorded before hosts were, by another boot; or on this machine before it rebooted
    heartbeat = run["heartbeat"]
    return heartbeat is not None and (time.time() if now is None else now) - heartbeat < STALE_SECONDS


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Thread-safe access to the run history; the worker thread writes, pages read."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else loupe_home() / "runs.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._beating: set[int] = set()  # this store's active runs, whose heartbeat it writes
        self._closed = threading.Event()
        self._heart: threading.Thread | None = None
        with self._lock:
            if on_network_disk(self.path):
                try:
                    self._db.execute("PRAGMA journal_mode=DELETE")
                except sqlite3.OperationalError:  # a process elsewhere still holds it in WAL mode
                    pass
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("BEGIN IMMEDIATE")  # one process migrates; another opening at once waits, then sees it done
            try:
                for statement in SCHEMA.split(";"):  # (executescript would commit the transaction first)
                    if statement.strip():
                        self._db.execute(statement)
                have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
                for name, decl in MIGRATIONS:
                    if name not in have:
                        self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
                if LEGACY_COLUMNS & have:
                    self._migrate_legacy_rows()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.mark_interrupted()

    def _migrate_legacy_rows(self) -> None:
        """Runs recorded before the spec existed get one, rebuilt from their `data` and `train` columns, which are then
        dropped. Those recorded before kept_epoch existed also get the epoch their model kept (lowest validation loss
        with save_best, else the last) and its accuracy — never the max-accuracy epoch older versions called best.
        Runs under the store's lock, inside the transaction that opened the database."""
        rows = self._db.execute("SELECT id, data, model, train, kept_epoch FROM runs WHERE spec IS NULL").fetchall()
        for r in rows:
            data, model, train = (json.loads(r[k] or "{}") for k in ("data", "model", "train"))
            try:
                spec = legacy_spec(data, model, train)
            except UserError:  # a column no reading makes sense of: the defaults, on the same data
                spec = RunSpec()
            self._db.execute("UPDATE runs SET spec = ? WHERE id = ?", (json.dumps(spec.to_dict()), r["id"]))
            epochs = self._db.execute("SELECT epoch, accuracy, valid_loss FROM epochs WHERE run_id = ? ORDER BY epoch",
                                      (r["id"],)).fetchall()
            if r["kept_epoch"] is not None or not epochs:
                continue
            kept = min(epochs, key=lambda e: (e["valid_loss"], e["epoch"])) if train.get("save_best", False) else epochs[-1]
            self._db.execute("UPDATE runs SET kept_epoch = ?, accuracy = ?, valid_loss = ? WHERE id = ?",
                             (kept["epoch"], kept["accuracy"], kept["valid_loss"], r["id"]))
        for column in LEGACY_COLUMNS:
            self._db.execute(f"ALTER TABLE runs DROP COLUMN {column}")  # SQLite 3.35 or later

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def close(self) -> None:
        self._closed.set()
        if self._heart is not None:
            self._heart.join(timeout=5)
        with self._lock:
            self._db.close()

    def _beat(self) -> None:
        """Every HEARTBEAT_SECONDS while this store has active runs: say they are alive (for other machines)."""
        while not self._closed.wait(HEARTBEAT_SECONDS):
            with self._lock:
                ids = sorted(self._beating)
                if not ids:
                    self._heart = None
                    return
                try:
                    self._db.execute(f"UPDATE runs SET heartbeat = ? WHERE id IN ({','.join('?' * len(ids))})",
                                     (time.time(), *ids))
                except sqlite3.Error:  # busy or briefly unreachable (a shared disk): the next beat tries again
                    pass

    # ---- writing, from the worker

    def create_run(self, spec: RunSpec, model: dict, source: str = "app", kind: str = "train",
                   world_size: int = 1, experiment: str | None = None, name: str | None = None) -> int:
        """A new run, 'running', with its spec; `model` is what was built (arch, pretrained as loaded, classes);
        `world_size` the processes that train it (torchrun); `experiment` the id of the experiment it belongs to;
        `name` what the user calls the data set (engine.data.resolve.data_name; else its source)."""
        if source not in SOURCES:
            raise ValueError(f"unknown run source {source!r}")
        now = time.time()
        cur = self._exec(
            "INSERT INTO runs (created, kind, name, model, status, owner, started, spec, source, "
            "world_size, host, heartbeat, experiment) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (now, kind, name or spec.data.source, json.dumps(model), "running", _owner(), now,
             json.dumps(spec.to_dict()), source, world_size, socket.gethostname(), now, experiment),
        )
        run_id = int(cur.lastrowid)
        with self._lock:
            self._beating.add(run_id)
            if self._heart is None:
                self._heart = threading.Thread(target=self._beat, name="loupe-run-heartbeat", daemon=True)
                self._heart.start()
        return run_id

    def add_batch(self, run_id: int, row: dict) -> None:
        self._exec("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?)",
                   (run_id, row["iter"], row["epoch"], row["loss"], row["smooth_loss"], row["lr"], row["mom"]))

    def add_epoch(self, run_id: int, row: dict) -> None:
        self._exec("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)",
                   (run_id, row["epoch"], row.get("phase"), row["train_loss"], row["valid_loss"], row["error_rate"],
                    row["accuracy"], row["time"], row.get("last_iter")))
        self._exec("UPDATE runs SET accuracy = ?, valid_loss = ? WHERE id = ?", (row["accuracy"], row["valid_loss"], run_id))

    def set_folder(self, run_id: int, folder: str) -> None:
        self._exec("UPDATE runs SET folder = ? WHERE id = ?", (folder, run_id))

    def finish(self, run_id: int, status: str, weights_path: str | None = None, error: str | None = None,
               kept_epoch: int | None = None, accuracy: float | None = None, valid_loss: float | None = None) -> None:
        """Close a run: its status, where its model went, and the kept model's epoch and metrics."""
        now = time.time()
        with self._lock:
            self._beating.discard(run_id)
        self._exec("UPDATE runs SET status = ?, finished = ?, seconds = ? - started, weights_path = ?, error = ?, "
                   "kept_epoch = COALESCE(?, kept_epoch), accuracy = COALESCE(?, accuracy), "
                   "valid_loss = COALESCE(?, valid_loss), best_epoch = COALESCE(?, best_epoch), "
                   "best_accuracy = COALESCE(?, best_accuracy) WHERE id = ?",
                   (status, now, now, weights_path, error, kept_epoch, accuracy, valid_loss, kept_epoch, accuracy, run_id))

    def mark_interrupted(self) -> int:
        """Runs still marked active whose process is gone become 'interrupted'; returns how many."""
        rows = self._exec(f"SELECT id, owner, host, heartbeat FROM runs WHERE status IN ({','.join('?' * len(ACTIVE))})",
                          ACTIVE).fetchall()
        gone = [r["id"] for r in rows if not _alive(r)]
        for run_id in gone:
            self._exec("UPDATE runs SET status = 'interrupted', finished = COALESCE(finished, ?) WHERE id = ?",
                       (time.time(), run_id))
        return len(gone)

    # ---- reading, from the pages

    def runs(self, kind: str | None = "train") -> pd.DataFrame:
        """One row per run, newest first: id, date, source, data, arch, pretrained, schedule, epochs, accuracy,
        kept_epoch, status, seconds, weights_path, error."""
        self.mark_interrupted()  # another process's run may have died since
        sql = ("SELECT id, created, source, name, model, spec, status, seconds, accuracy, kept_epoch, "
               "weights_path, error, "
               "(SELECT COUNT(*) FROM epochs e WHERE e.run_id = runs.id) AS epochs FROM runs")
        rows = self._exec(sql + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC", (kind,) if kind else ()).fetchall()
        records = []
        for r in rows:
            model, train = json.loads(r["model"]), json.loads(r["spec"])["train"]
            accuracy = r["accuracy"]
            kept = r["kept_epoch"]
            records.append({
                "id": r["id"], "date": pd.Timestamp(r["created"], unit="s").tz_localize("UTC").tz_convert(None).floor("s"),
                "source": r["source"] or "app", "data": r["name"], "images": _images(model), "arch": model.get("arch"),
                "pretrained": model.get("pretrained"), "schedule": train.get("schedule"),
                "epochs": r["epochs"], "accuracy": accuracy, "kept_epoch": kept, "status": r["status"],
                "seconds": r["seconds"], "weights_path": r["weights_path"], "error": r["error"],
            })
        frame = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
        frame["kept_epoch"] = frame["kept_epoch"].astype("Int64")
        return frame

    def run(self, run_id: int) -> dict | None:
        """One run's row, with `model` (what was built) and `spec` (its RunSpec)."""
        row = self._exec("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["model"] = json.loads(out["model"])
        out["spec"] = RunSpec.from_dict(json.loads(out["spec"]))
        return out

    def active_runs(self, kind: str = "train") -> list[dict]:
        """Runs in progress (running, paused or stopping) of any process or machine, oldest first, each as `run` gives it."""
        self.mark_interrupted()
        rows = self._exec(f"SELECT id FROM runs WHERE kind = ? AND status IN ({','.join('?' * len(ACTIVE))}) ORDER BY id",
                          (kind, *ACTIVE)).fetchall()
        return [run for run in (self.run(r["id"]) for r in rows) if run is not None]

    def experiments(self) -> pd.DataFrame:
        """One row per experiment, newest first: experiment (its id), date (of its first run), runs, data."""
        self.mark_interrupted()
        rows = self._exec("SELECT experiment, MIN(created) AS created, COUNT(*) AS runs, MIN(name) AS data FROM runs "
                          "WHERE experiment IS NOT NULL GROUP BY experiment ORDER BY MIN(id) DESC").fetchall()
        return pd.DataFrame.from_records(
            [{"experiment": r["experiment"], "runs": r["runs"], "data": r["data"],
              "date": pd.Timestamp(r["created"], unit="s").tz_localize("UTC").tz_convert(None).floor("s")} for r in rows],
            columns=["experiment", "date", "runs", "data"])

    def experiment_runs(self, experiment: str) -> list[dict]:
        """The runs of one experiment (each as `run` gives it), in the order they were made."""
        self.mark_interrupted()
        rows = self._exec("SELECT id FROM runs WHERE experiment = ? ORDER BY id", (experiment,)).fetchall()
        ids = [r["id"] for r in rows]
        return [run for run in (self.run(i) for i in ids) if run is not None]

    def batches(self, run_id: int) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query("SELECT iter, epoch, loss, smooth_loss, lr, mom FROM batches WHERE run_id = ? ORDER BY iter",
                                     self._db, params=(run_id,))

    def epochs(self, run_id: int) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query("SELECT epoch, phase, train_loss, valid_loss, error_rate, accuracy, time, last_iter "
                                     "FROM epochs WHERE run_id = ? ORDER BY epoch", self._db, params=(run_id,))

    def delete_run(self, run_id: int) -> None:
        """Remove a run's rows; its exported files move to LOUPE_HOME/trash (nothing is destroyed)."""
        run = self.run(run_id)
        if run is None:
            return
        if run["status"] in ACTIVE and _alive(run):
            raise ValueError("This run is still going: stop it before deleting it.")
        folder = run_dir(run_id, create=False)
        if folder.exists():
            trash = home_subdir("trash")
            shutil.move(str(folder), str(trash / f"run-{run_id}-{int(time.time())}"))
        self._exec("DELETE FROM runs WHERE id = ?", (run_id,))


def on_network_disk(path: Path) -> bool:
    """Whether `path` is on a disk shared over the network (NFS, SMB…), or LOUPE_SHARED_DB=1 says it is."""
    forced = os.environ.get("LOUPE_SHARED_DB")
    if forced:
        return forced not in ("0", "no", "false")
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:  # not Linux: say so with LOUPE_SHARED_DB
        return False
    where = os.path.realpath(Path(path).parent)
    best, fs_type = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (where == point or where.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fs_type = point, fields[2]
    return fs_type in NETWORK_FILE_SYSTEMS


def run_dir(run_id: int, create: bool = True) -> Path:
    """Where a run's exported model lives: LOUPE_HOME/runs/<id>."""
    path = loupe_home() / "runs" / str(run_id)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
