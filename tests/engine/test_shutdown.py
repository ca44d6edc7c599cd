"""Shutdown with real processes: SIGINT and SIGTERM during training end the command line and the Streamlit server
cleanly, with the run 'interrupted' and its curves kept.

A run is held still with the Hold hook (LOUPE_HOLD_AT_BATCH, LOUPE_HOLD_FILE pointing to a file never created), and a
signal is sent once the runs database shows the rows wanted, so nothing depends on how fast the machine is. The
database is read with sqlite3 directly: opening a RunStore would mark the run of a dead process 'interrupted' itself.
"""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from engine.cli import COMMANDS, Interrupted, StopOnSignal, main
from engine.train.run import HOLD_BATCH_ENV, HOLD_FILE_ENV

ROOT = Path(__file__).resolve().parents[2]
T = 300  # seconds: a safety net, never a measurement
TRAIN = ["-m", "engine", "train", "--label", r"regex:^(.+)_\d+\.png$", "--arch", "small", "--no-pretrained",
         "--size", "28", "--presize", "32", "--bs", "32", "--epochs", "2", "--schedule", "one_cycle", "--no-flip",
         "--seed", "0", "--threads", "1", "--json"]

SPEC = """
import os
from engine.data.augment import AugSettings
from engine.data.labels import LabelRule
from engine.spec import DataSpec, DeviceSpec, ModelSpec, RunSpec, TrainSpec

spec = RunSpec(data=DataSpec(source=os.environ["DIGITS"], label=LabelRule(pattern=r"^(.+)_\\d+\\.png$"), size=28,
                             presize=32, bs=32), augment=AugSettings(do_flip=False),
               model=ModelSpec(arch="small", pretrained=False),
               train=TrainSpec(schedule="one_cycle", epochs=10, lr=3e-3, seed=0), device=DeviceSpec(threads=1))
"""  # the run of the job tests: 10 epochs of 7 batches (on the digits below), one thread


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory, write_digits) -> Path:
    """300 real digits: 240 train (7 batches of 32 an epoch), 60 valid."""
    return write_digits(tmp_path_factory.mktemp("shutdown-digits"), count=300)


class Process:
    """A child process with LOUPE_HOME of its own, its output in files (no pipe to fill up)."""

    def __init__(self, argv: list[str], tmp_path: Path, hold_at: int | None = None, env: dict | None = None) -> None:
        self.home, self.log = tmp_path / "home", tmp_path / "output.log"
        self.home.mkdir()
        env = {**os.environ, "LOUPE_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **(env or {})}
        if hold_at is not None:
            env.update({HOLD_BATCH_ENV: str(hold_at), HOLD_FILE_ENV: str(tmp_path / "never")})
        self._out = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def rows(self, table: str) -> int:
        """Rows of a table of the runs database (0 before it exists)."""
        db = self.home / "runs.sqlite"
        if not db.exists():
            return 0
        try:
            with closing(sqlite3.connect(db)) as con:
                return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # tables not made yet
            return 0

    def runs(self) -> list[dict]:
        with closing(sqlite3.connect(self.home / "runs.sqlite")) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT id, status, weights_path, kept_epoch, error FROM runs")]

    def wait_for_rows(self, table: str, n: int) -> None:
        """Wait until the database holds n rows of a table (the process still running)."""
        deadline = time.monotonic() + T
        while self.rows(table) < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {n} {table} rows (exit code {self.proc.poll()}):\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def signal_and_wait(self, signum: int) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=T)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()


def assert_clean(output: str) -> None:
    assert "Traceback" not in output and "Aborted" not in output and "terminate called" not in output, output


# ---------------------------------------------------------------- the command line

def test_ctrl_c_during_training_exits_130_with_the_run_interrupted_and_its_batches_kept(digits_dir, tmp_path):
    cli = Process([*TRAIN, "--data", str(digits_dir)], tmp_path, hold_at=1)
    cli.wait_for_rows("batches", 2)  # batches 0 and 1 done; the run waits after batch 1
    assert cli.signal_and_wait(signal.SIGINT) == 130
    output = cli.output()
    assert_clean(output)
    [run] = cli.runs()
    assert run["status"] == "interrupted" and run["weights_path"] is None and run["error"] is None
    assert cli.rows("batches") == 2 and cli.rows("epochs") == 0
    assert "SIGINT: stopping at the end of this batch" in output
    assert f"run #{run['id']} interrupted after 0 epoch(s)" in output and "no model (no epoch finished)" in output
    assert '"status": "interrupted"' in output  # the --json line still comes


def test_sigterm_during_training_exits_0_and_keeps_the_model_of_the_finished_epoch(digits_dir, tmp_path):
    cli = Process([*TRAIN, "--data", str(digits_dir)], tmp_path, hold_at=7)
    cli.wait_for_rows("batches", 8)  # epoch 0 (batches 0-6) done and validated; the run waits after batch 7
    assert cli.signal_and_wait(signal.SIGTERM) == 0
    output = cli.output()
    assert_clean(output)
    [run] = cli.runs()
    assert run["status"] == "interrupted" and run["kept_epoch"] == 0
    assert cli.rows("batches") == 8 and cli.rows("epochs") == 1
    assert (Path(run["weights_path"]) / "model.pt").is_file()
    assert f"model from epoch 0 and spec.json in {run['weights_path']}" in output


def test_a_second_signal_or_one_before_training_ends_the_command_at_once(monkeypatch, capsys):
    signals = StopOnSignal()
    with pytest.raises(Interrupted) as early:  # nothing to stop yet: the data is still being read
        signals._handle(signal.SIGTERM, None)
    assert early.value.exit_code == 0 and not signals.control.stopped
    signals.before_fit(None, {})
    signals._handle(signal.SIGINT, None)  # the first while training: stop at the end of the batch
    assert signals.control.stopped and signals.control.interrupted and signals.exit_code == 130
    with pytest.raises(Interrupted) as second:
        signals._handle(signal.SIGTERM, None)
    assert second.value.exit_code == 130  # the first signal decides
    for raised, code in ((Interrupted(signal.SIGTERM), 0), (KeyboardInterrupt(), 130)):
        def command(args, raised=raised):
            raise raised
        monkeypatch.setitem(COMMANDS, "runs", command)
        assert main(["runs"]) == code
    assert capsys.readouterr().err.splitlines()[-2:] == ["interrupted (SIGTERM)", "interrupted (SIGINT)"]


# ---------------------------------------------------------------- a JobManager in a plain process

JOB_PROCESS = SPEC + """
import signal, threading
from engine.data.loaders import PresizeCache
from engine.store.jobs import Job, JobManager
from engine.store.runs import RunStore
from engine.train.run import train_target

exiting = threading.Event()
for s in (signal.SIGTERM, signal.SIGINT):  # as Streamlit does: the main thread returns, the interpreter exits
    signal.signal(s, lambda *_: exiting.set())
JobManager().submit(Job("train", "digits", train_target(spec, PresizeCache(), RunStore())))
while not exiting.wait(0.1):
    pass
"""


def test_sigterm_to_a_process_whose_job_is_in_torch_exits_0_with_the_run_interrupted(digits_dir, tmp_path):
    # held late (batch 40 of 70), signalled after the first batch: the worker is most likely inside torch, where a
    # daemon thread left running while the interpreter finalizes aborts the process (exit 134)
    process = Process(["-c", JOB_PROCESS], tmp_path, hold_at=40, env={"DIGITS": str(digits_dir)})
    process.wait_for_rows("batches", 1)
    assert process.signal_and_wait(signal.SIGTERM) == 0
    output = process.output()
    assert_clean(output)
    [run] = process.runs()
    assert run["status"] == "interrupted" and process.rows("batches") >= 1
    assert "Loupe: stopping 'digits' for shutdown" in output and "Loupe: 'digits' interrupted" in output


# ---------------------------------------------------------------- the Streamlit server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(script: Path, tmp_path: Path, **kwargs) -> tuple[Process, int]:
    """`python -m streamlit run script` on a free localhost port, as tests/e2e/conftest.py starts Loupe."""
    port = free_port()
    server = Process(["-m", "streamlit", "run", str(script), "--server.port", str(port), "--server.headless", "true",
                      "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
                      "--browser.gatherUsageStats", "false"], tmp_path, **kwargs)
    deadline = time.monotonic() + T
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return server, port
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.proc.kill()
            pytest.fail("the server did not start:\n" + server.output()[-3000:])
        time.sleep(0.3)


def run_script_once(port: int) -> None:
    """Run the server's script in a new session, as a browser tab does: connect, ask for a run, read until it ends."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"]) as ws:
        ws.send(BackMsg(rerun_script=ClientState()).SerializeToString())
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=T))
            if msg.WhichOneof("type") == "script_finished":
                return


def test_sigterm_to_an_idle_server_exits_0_without_a_traceback(tmp_path):
    server, _ = start_server(ROOT / "app.py", tmp_path)
    assert server.signal_and_wait(signal.SIGTERM) == 0
    assert_clean(server.output())


JOB_PAGE = SPEC + """
import streamlit as st
from engine.store.jobs import Job
from engine.train.run import train_target
from ui.shared import job_manager, presize_cache, run_store

if job_manager().latest("train") is None:
    job_manager().submit(Job("train", "digits", train_target(spec, presize_cache(), run_store())))
st.write("training")
"""


def test_sigterm_to_a_server_with_a_training_job_exits_0_with_the_run_interrupted(digits_dir, tmp_path):
    # a page that starts a job through ui.shared's JobManager, as the Train page does, without a browser
    page = tmp_path / "job_page.py"
    page.write_text(JOB_PAGE)
    server, port = start_server(page, tmp_path, hold_at=40, env={"DIGITS": str(digits_dir)})
    run_script_once(port)
    server.wait_for_rows("batches", 1)
    assert server.signal_and_wait(signal.SIGTERM) == 0
    output = server.output()
    assert_clean(output)
    [run] = server.runs()
    assert run["status"] == "interrupted" and server.rows("batches") >= 1, run["error"]
    assert "Loupe: 'digits' interrupted" in output
