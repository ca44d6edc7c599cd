"""torchrun: each rank's part of every batch, DDP through fine_tune's freeze and unfreeze, a stop shared by every rank,
the same accuracy as one process, rank 0 alone recording; runs of other machines judged by their heartbeat."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.train import distributed
from engine.data.augment import AugSettings
from engine.data.loaders import DataLoaders, LabelledItems
from engine.errors import UserError
from engine.data.images import PresizedImages
from engine.data.labels import LabelReport
from engine.store.runs import STALE_SECONDS, RunStore, _alive, _boot_id, _pid_space
from engine.spec import RunSpec, TrainSpec, load_spec, with_seed
from engine.train.run import HOLD_BATCH_ENV, HOLD_FILE_ENV

ROOT = Path(__file__).resolve().parents[2]
T = 300  # seconds: a safety net, never a measurement


# ---------------------------------------------------------------- each rank's part of the data, without processes

def numbered_dls(n_train: int = 103, n_valid: int = 41, bs: int = 10, size: int = 16, seed: int = 0) -> DataLoaders:
    """Items in 4 classes whose every pixel is the item's number, so a batch says which items it holds."""
    n = n_train + n_valid
    pixels = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    labels = [f"c{i % 4}" for i in range(n)]
    names = [f"{i}.png" for i in range(n)]
    items = LabelledItems(root=Path("."), rel_paths=names, image_index=np.arange(n), scanned=names, labels=labels,
                          split=np.array(["train"] * n_train + ["valid"] * n_valid), classes=sorted(set(labels)),
                          n_files=n, label_report=LabelReport(labels=labels, n_matched=n))
    images = PresizedImages(pixels=pixels, ok=np.ones(n, dtype=bool), sizes=np.full((n, 2), size), modes=["RGB"] * n,
                            size=size)
    return DataLoaders(items, images, size=size, bs=bs, aug=AugSettings.off(), seed=seed)


def item_numbers(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0] * 255).round().long().tolist()


def epochs_of_batches(dls: DataLoaders, epochs: int = 2) -> list[list[list[int]]]:
    """The items of every training batch, epoch by epoch."""
    return [[item_numbers(x) for x, _ in dls.train(norm=False)] for _ in range(epochs)]


def test_each_rank_takes_an_equal_disjoint_part_of_every_batch_of_the_shared_order():
    one = epochs_of_batches(numbered_dls())  # 103 items, batches of 10: 10 batches, 3 items left out
    ranks = []
    for rank in range(3):
        dls = numbered_dls()
        dls.shard(rank, 3)
        ranks.append(epochs_of_batches(dls))
    for e in range(2):
        assert len(one[e]) == 10 and all(len(r[e]) == 10 for r in ranks)  # the same steps on every rank
        parts = [[r[e][k] for r in ranks] for k in range(10)]
        assert all([len(p) for p in batch] == [3, 3, 3] for batch in parts)  # 10 // 3 each: one of 10 left out
        seen = [i for batch in parts for p in batch for i in p]
        assert len(set(seen)) == len(seen) == 90  # disjoint: no image twice in an epoch
    # the first epoch in one process's order (later ones differ: there augmentation draws from the same stream)
    assert [sum((r[0][k] for r in ranks), []) for k in range(10)] == [batch[:9] for batch in one[0]]
    assert ranks[0][0] != ranks[0][1]  # reshuffled every epoch


def test_each_rank_draws_its_own_augmentation_reproducibly_from_the_seed():
    def first_draw(rank: int) -> float:
        dls = numbered_dls(seed=7)
        dls.shard(rank, 2)
        return torch.rand(1, generator=dls.aug_generator).item()

    assert first_draw(0) != first_draw(1)  # not the same rotation for the n-th image of every rank
    assert first_draw(1) == first_draw(1)  # and the same again from the same seed


def test_the_validation_set_is_split_into_near_equal_parts_that_cover_it():
    parts = []
    for rank in range(3):
        dls = numbered_dls()
        dls.shard(rank, 3)
        parts.append([i for x, _ in dls.valid(norm=False) for i in item_numbers(x)])
    assert [len(p) for p in parts] == [14, 14, 13]
    assert parts[0] + parts[1] + parts[2] == list(range(103, 144))


def test_more_processes_than_a_batch_can_share_is_refused():
    with pytest.raises(UserError, match="4 processes need a batch size"):
        numbered_dls(bs=3).shard(0, 4)


def test_torchrun_environment_gives_the_rank():
    assert distributed.from_env({}) is None
    d = distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.is_main) == (3, 4, 1, False)
    assert d.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert d.device(torch.device("cpu")) == torch.device("cpu")


# ---------------------------------------------------------------- two processes, in-process data (gloo)

def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: agree on a spec, fine_tune (freeze, then unfreeze) under DDP, then a run that rank 0 stops."""
    from engine.train.learner import Callback, Learner
    from engine.train.models import count_params, create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = distributed.from_env()
    distributed.init(d, torch.device("cpu"))
    result: dict = {}
    try:
        result["seed"] = d.from_main(lambda: with_seed(RunSpec()).train.seed)  # drawn on rank 0 only
        try:
            d.from_main(lambda: (_ for _ in ()).throw(UserError("no images here")))
        except UserError as e:
            result["error"] = str(e)

        class Phases(Callback):
            def before_fit(self, learn, logs):
                result.setdefault("phases", []).append([logs["phase"], count_params(learn.model)[0]])

        def learner(seed: int) -> Learner:
            dls = numbered_dls(n_train=160, n_valid=40, bs=16, seed=seed)
            dls.shard(rank, world_size)
            torch.manual_seed(seed + rank)  # different starting weights: DDP must make them rank 0's
            model, _ = create_model("small", len(dls.classes))
            learn = Learner(model, dls, pretrained=True)  # as if pretrained, so fine_tune freezes then unfreezes
            learn.dist = d
            return learn

        learn = learner(0)
        learn.callbacks.append(Phases())
        logs = learn.fine_tune(1, base_lr=1e-2, freeze_epochs=1)
        result.update(status=logs["status"], iter=learn.iter, epochs=learn.recorder.epochs,
                      losses=[b["loss"] for b in learn.recorder.batches])
        torch.save(learn.model.state_dict(), Path(out) / f"fine_tune-{rank}.pt")

        class StopOnRank0(Callback):
            def after_batch(self, learn, logs):
                if rank == 0 and logs["iter"] == 2:
                    learn.control.stop()

        stopped = learner(1)
        stopped.callbacks.append(StopOnRank0())
        logs = stopped.fit_one_cycle(2, 1e-2)
        result.update(stop_status=logs["status"], stop_iter=stopped.iter, stop_event=stopped.control.stopped)
    finally:
        distributed.close()
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)], out


def test_every_rank_gets_rank_0s_spec_and_rank_0s_errors(two_ranks):
    (r0, r1), _ = two_ranks
    assert r0["seed"] == r1["seed"]
    assert "no images here" in r1["error"] and r0["error"] == "no images here"


def test_fine_tune_freezes_then_unfreezes_under_ddp_and_the_ranks_end_identical(two_ranks):
    (r0, r1), out = two_ranks
    assert r0["status"] == r1["status"] == "done"
    (frozen, head_only), (unfrozen, everything) = r0["phases"]
    assert (frozen, unfrozen) == ("frozen", "unfrozen") and head_only < everything  # DDP wrapped for each
    assert r0["iter"] == r1["iter"] == 20  # 2 epochs of 160 // 16 steps, 8 images of each batch per rank
    metrics = [[{k: v for k, v in e.items() if k != "time"} for e in r["epochs"]] for r in (r0, r1)]
    assert metrics[0] == metrics[1]  # the validation metrics are the whole set's on both
    assert r0["losses"] == r1["losses"]  # each batch's loss over both ranks' parts
    s0, s1 = (torch.load(out / f"fine_tune-{r}.pt") for r in range(2))
    assert all(torch.equal(s0[k], s1[k]) for k in s0)  # gradients averaged alike, buffers rank 0's


def test_a_stop_on_rank_0_stops_every_rank_at_the_same_batch(two_ranks):
    (r0, r1), _ = two_ranks
    assert r0["stop_status"] == r1["stop_status"] == "stopped"
    assert r0["stop_iter"] == r1["stop_iter"] == 3 and r1["stop_event"]


# ---------------------------------------------------------------- torchrun on the real digits, against one process

# 3 epochs of one_cycle (lr_max 1e-3) on the built-in digits (1,437 train, 360 valid); one process reaches 96-98 %.
# The two runs share the spec (seed, order, starting weights) and every step sees the same 64 images; what differs
# is each rank drawing its own augmentation and BatchNorm normalising 32 images instead of 64. Over seeds those
# moved the accuracy by under 1.5 points (a few validation images), so 3 points is a safe band for "within noise".
DIGITS_RUN = ["--arch", "small", "--no-pretrained", "--schedule", "one_cycle", "--epochs", "3", "--threads", "1",
              "--seed", "1"]


def _env(home: Path, **extra: str) -> dict:
    return {**os.environ, "LOUPE_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "engine", "train", *args]


def _db_rows(home: Path) -> list[dict]:
    with closing(sqlite3.connect(home / "runs.sqlite")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT id, source, world_size, status, seconds, folder FROM runs")]


@pytest.fixture(scope="module")
def single_and_torchrun(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess, Path, Path]:
    base = tmp_path_factory.mktemp("digits-ddp")
    one_home, ddp_home = base / "one", base / "ddp"
    one = subprocess.run([sys.executable, "-m", "engine", "train", *DIGITS_RUN, "--json"], cwd=ROOT,
                         env=_env(one_home), capture_output=True, text=True, timeout=T)
    assert one.returncode == 0, one.stderr
    single = json.loads(one.stdout.strip().splitlines()[-1])
    # the same spec, read back from the single run's folder
    ddp = subprocess.run(_torchrun("--spec", str(Path(single["out"]) / "spec.json"), "--json"), cwd=ROOT,
                         env=_env(ddp_home), capture_output=True, text=True, timeout=T)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return single, ddp, one_home, ddp_home


def test_two_processes_reach_the_accuracy_of_one(single_and_torchrun):
    single, ddp, _, _ = single_and_torchrun
    result = json.loads(ddp.stdout.strip().splitlines()[-1])
    print(f"accuracy: one process {single['accuracy']:.4f}, two processes {result['accuracy']:.4f}")
    assert single["accuracy"] > 0.9 and result["epochs"] == 3 and result["world_size"] == 2
    assert abs(result["accuracy"] - single["accuracy"]) < 0.03


def test_rank_0_alone_prints_writes_the_folder_and_records_the_run(single_and_torchrun):
    single, ddp, one_home, ddp_home = single_and_torchrun
    lines = ddp.stdout.strip().splitlines()
    assert sum(line.startswith("{") for line in lines) == 1  # one JSON line
    assert sum(line.split()[:1] == ["epoch"] for line in lines) == 1 and len(lines) == 1 + 3 + 1  # one table
    assert ddp.stderr.count("model and spec.json in") == 1
    rows = _db_rows(ddp_home)
    assert len(rows) == 1 and (rows[0]["source"], rows[0]["world_size"], rows[0]["status"]) == ("torchrun", 2, "done")
    assert [p.name for p in (ddp_home / "runs").iterdir()] == [str(rows[0]["id"])]
    assert load_spec(rows[0]["folder"]) == load_spec(single["out"])  # the spec every rank trained
    assert _db_rows(one_home)[0]["world_size"] == 1


def test_sigterm_to_torchrun_stops_every_rank_cleanly_with_the_run_interrupted(tmp_path):
    home = tmp_path / "home"
    log = (tmp_path / "output.log").open("w")
    env = _env(home, **{HOLD_BATCH_ENV: "3", HOLD_FILE_ENV: str(tmp_path / "never")})
    proc = subprocess.Popen(_torchrun("--arch", "small", "--no-pretrained", "--epochs", "1", "--seed", "0", "--json"),
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + T
        while not _batches_written(home, 4):  # both ranks wait in the Hold hook after batch 3
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "output.log").read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it to every rank
        proc.wait(timeout=T)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "output.log").read_text()
    (row,) = _db_rows(home)
    assert row["status"] == "interrupted" and row["seconds"] is not None, output  # finished by rank 0, not left behind
    assert output.count("interrupted after 0 epoch(s)") == 1 and output.count("SIGTERM: stopping") == 1  # rank 0's
    assert "forcefully exiting" not in output  # every rank ended by itself, none was killed by torchrun
    assert f'File "{ROOT / "engine"}' not in output  # (torchrun itself prints a traceback of the signal it got)


def _batches_written(home: Path, n: int) -> bool:
    try:
        with closing(sqlite3.connect(home / "runs.sqlite")) as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] >= n
    except sqlite3.OperationalError:  # not made yet
        return False


# ---------------------------------------------------------------- runs of other machines

def test_a_run_of_another_machine_is_judged_by_its_heartbeat_not_its_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    store = RunStore(tmp_path / "runs.sqlite")
    here = store.create_run(RunSpec(train=TrainSpec(seed=1)), {})
    remote_fresh, remote_stale, rebooted = (store.create_run(RunSpec(), {}, source="torchrun") for _ in range(3))
    now = time.time()
    with closing(sqlite3.connect(tmp_path / "runs.sqlite")) as db:
        # a pid that means nothing here, on another machine: alive while its heartbeat is fresh
        db.execute("UPDATE runs SET owner = '1@other-boot/pid:[1]', host = 'gpu-box', heartbeat = ? WHERE id = ?",
                   (now - 5, remote_fresh))
        db.execute("UPDATE runs SET owner = '1@other-boot/pid:[1]', host = 'gpu-box', heartbeat = ? WHERE id = ?",
                   (now - STALE_SECONDS - 1, remote_stale))
        # this machine before a reboot: gone at once, whatever its heartbeat says
        db.execute("UPDATE runs SET owner = '1@old-boot/pid:[1]', host = ?, heartbeat = ? WHERE id = ?",
                   (socket.gethostname(), now, rebooted))
        db.commit()
    status = dict(zip(store.runs()["id"], store.runs()["status"]))
    assert status == {here: "running", remote_fresh: "running", remote_stale: "interrupted", rebooted: "interrupted"}
    assert [r["id"] for r in store.active_runs()] == [here, remote_fresh]
    store.close()


def test_a_container_on_this_machine_is_judged_by_its_heartbeat_too():
    other_container = {"owner": f"1@{_boot_id()}/pid:[4026599999]", "host": socket.gethostname(), "heartbeat": 100.0}
    assert _pid_space() != other_container["owner"].split("@")[1]
    assert _alive(other_container, now=100.0 + STALE_SECONDS - 1)
    assert not _alive(other_container, now=100.0 + STALE_SECONDS + 1)


def test_the_heartbeat_is_written_while_the_run_is_active(tmp_path, monkeypatch):
    import engine.store.runs

    monkeypatch.setattr(engine.store.runs, "HEARTBEAT_SECONDS", 0.05)
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(RunSpec(), {})
    first = store.run(run_id)["heartbeat"]
    deadline = time.monotonic() + T
    while store.run(run_id)["heartbeat"] == first:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    store.finish(run_id, "done")
    store.close()
