"""Tests for engine/data/cache.py: presized pixels kept on disk, read back after a restart or by another process,
decoded again only for files that changed, written safely, and kept under a size limit."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine.data.decode_pool as pool_module
import engine.data.images as images_module
from engine.data.cache import (MAX_ROW_FILES, CacheGet, MappedPixels, cache_dir, cache_entries, cache_size, clear_cache,
                          presize_cached)
from engine.data.decode_pool import presize_all
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.data.images import open_image, presize

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def decoded(monkeypatch, tmp_path):
    """The names of the files decoded, in order, in a fresh Loupe home (decoding in this process, where it is seen)."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LOUPE_CACHE_DISK_GB", raising=False)
    calls = []
    load = images_module._load_presized

    def counting(path, size, method):
        calls.append(Path(path).name)
        return load(path, size, method)

    monkeypatch.setattr(images_module, "_load_presized", counting)
    monkeypatch.setattr(pool_module, "default_workers", lambda: 1)
    return calls


def noise(path: Path, seed: int, size=(12, 9)) -> Path:
    """A small image of random colours (each seed its own), written to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def images_in(folder: Path, n: int, first_seed: int = 0) -> list[Path]:
    return [noise(folder / f"{i}.png", first_seed + i) for i in range(n)]


def same_pixels(images, paths: list[Path], size: int = 8) -> bool:
    """Whether `images` holds the presized pixels of `paths`, each read straight from its file (zeros if unreadable)."""
    expected = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            expected[i] = torch.from_numpy(np.array(presize(open_image(path), size))).permute(2, 0, 1)
        except (ValueError, OSError):
            pass
    return torch.equal(images.pixels[torch.arange(len(paths))], expected)


def row_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("rows-"))


def entry_folder() -> Path:
    (folder,) = [e.folder for e in cache_entries()]
    return folder


# ---------------------------------------------------------------- reading back

def test_a_restart_reads_the_pixels_from_disk_without_decoding(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 5)
    first, got = presize_cached(paths, 8)
    assert (got.status, got.decoded, got.on_disk) == ("miss", 5, True) and got.decode_s > 0
    assert decoded == [f"{i}.png" for i in range(5)] and same_pixels(first, paths)
    decoded.clear()
    for in_memory in (False, True):
        again, got = presize_cached(paths, 8, in_memory=in_memory)
        assert got == CacheGet() and decoded == []
        assert same_pixels(again, paths) and again.sizes.tolist() == [[12, 9]] * 5 and again.modes == ["RGB"] * 5
        if in_memory:  # copied into memory in the background
            assert torch.equal(again.pixels.load(), first.pixels.load()) and again.in_memory
        else:
            assert not again.in_memory
    cache = PresizeCache()  # a new process's cache starts empty in memory
    assert same_pixels(cache.get(paths, 8), paths) and cache.last_get.status == "hit" and decoded == []


def test_mapped_pixels_index_like_a_tensor(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 6)
    mapped, _ = presize_cached(paths, 8, in_memory=False)
    pixels, reference = mapped.pixels, presize_all(paths, 8, workers=1).pixels
    assert isinstance(pixels, MappedPixels) and pixels.shape == reference.shape and len(pixels) == 6
    assert pixels.numel() == reference.numel() and pixels.dtype == torch.uint8
    assert torch.equal(pixels[3], reference[3]) and torch.equal(pixels[1:5:2], reference[1:5:2])
    assert torch.equal(pixels[2, :, 0, 1], reference[2, :, 0, 1]) and torch.equal(pixels[:3, 1], reference[:3, 1])
    assert torch.equal(pixels[torch.tensor([5, 0, 5])], reference[torch.tensor([5, 0, 5])])
    assert not mapped.in_memory and torch.equal(pixels.load(), reference) and mapped.in_memory
    assert torch.equal(pixels[torch.tensor([5, 0, 5])], reference[torch.tensor([5, 0, 5])])  # now read from memory


def test_only_the_file_that_changed_is_decoded_again(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 6)
    presize_cached(paths, 8)
    noise(paths[2], seed=99)  # new content, size and time
    decoded.clear()
    images, got = presize_cached(paths, 8)
    assert decoded == ["2.png"] and (got.status, got.decoded) == ("partial", 1)
    assert same_pixels(images, paths)

    decoded.clear()  # fewer files, or the same in another order: nothing to decode
    subset = [paths[5], paths[0], paths[2]]
    images, got = presize_cached(subset, 8, in_memory=False)
    assert decoded == [] and got.status == "hit" and same_pixels(images, subset)

    added = paths + [noise(paths[0].parent / "new.png", seed=7)]
    images, got = presize_cached(added, 8)
    assert decoded == ["new.png"] and got.status == "partial" and same_pixels(images, added)


def test_unreadable_and_missing_files_are_remembered_not_decoded_again(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 3)
    (bad := tmp_path / "img" / "bad.png").write_text("not an image")
    gone = tmp_path / "img" / "gone.png"
    first, _ = presize_cached([*paths, bad, gone], 8)
    assert first.ok.tolist() == [True, True, True, False, False]
    assert first.failures[3].startswith("not a readable image") and first.failures[4].startswith("not a readable image")
    assert "gone.png" not in decoded  # a file that is not there is not even opened
    decoded.clear()
    again, got = presize_cached([*paths, bad, gone], 8, in_memory=False)
    assert decoded == [] and got.status == "hit"
    assert again.failures == first.failures and again.ok.tolist() == first.ok.tolist()
    assert torch.equal(again.pixels[3], torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_many_small_changes_are_compacted_into_one_row_file(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 12)
    presize_cached(paths, 8)
    for i in range(MAX_ROW_FILES):  # each change adds a row file of one row, until there are too many
        noise(paths[i], seed=100 + i)
        decoded.clear()
        images, _ = presize_cached(paths, 8)
        assert decoded == [f"{i}.png"] and same_pixels(images, paths)
        assert len(row_files(entry_folder())) == (i + 2 if i + 2 <= MAX_ROW_FILES else 1)
    manifest = json.loads((entry_folder() / "manifest.json").read_text())
    assert manifest["chunks"] == {row_files(entry_folder())[0]: 12}


# ---------------------------------------------------------------- writing safely

def test_row_files_cut_short_and_broken_manifests_are_never_read_as_valid(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 4)
    presize_cached(paths, 8)
    folder = entry_folder()
    (rows,) = row_files(folder)
    with open(folder / rows, "r+b") as f:
        f.truncate(100)  # what a crash, a full disk or a lost write could leave
    (folder / "rows-left-by-a-crash.u8.partial").write_bytes(b"\0" * 10)
    decoded.clear()
    images, got = presize_cached(paths, 8)
    assert len(decoded) == 4 and got.status == "miss" and same_pixels(images, paths)
    assert not list(folder.glob("*.partial")) and rows not in row_files(folder)

    (folder / "manifest.json").write_text('{"format": 1, "chunks"')  # torn
    decoded.clear()
    images, _ = presize_cached(paths, 8)
    assert len(decoded) == 4 and same_pixels(images, paths)


CRASH = """
import os, signal, sys
import engine.data.decode_pool as decode_pool
import engine.data.images as images
from engine.data.cache import presize_cached
load, n = images._load_presized, 0
def crash_on_the_third(path, size, method):
    global n
    n += 1
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return load(path, size, method)
images._load_presized = crash_on_the_third
decode_pool.default_workers = lambda: 1
presize_cached([p for p in sys.argv[1:]], 8)
"""


def test_a_write_stopped_by_its_progress_callback_returns_only_after_every_decode_worker_ended(tmp_path, monkeypatch,
                                                                                              capfd):
    # the writer deletes its .partial row file on the way out: a worker still decoding into it, or handed the next
    # work item, failed on opening it (FileNotFoundError), and the workers went on with the rest of the work
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pool_module, "CHUNK", 1)  # 40 work items: most are still to do when the first one is reported
    paths = images_in(tmp_path / "img", 40)
    start, workers, handed_work = pool_module._start_worker, [], threading.Event()
    decode_here, released, here = pool_module.decode_rows_into_file, threading.Event(), []

    class Handing:  # a worker's input: says when a worker was handed a work item, and when it was told to end
        def __init__(self, pipe) -> None:
            self.pipe = pipe

        def write(self, text: str) -> int:
            return self.pipe.write(text)

        def flush(self) -> None:
            self.pipe.flush()
            handed_work.set()

        def close(self) -> None:
            self.pipe.close()
            released.set()

    def recorded(lock_path):
        proc = start(lock_path)
        workers.append(proc)
        proc.stdin = Handing(proc.stdin)
        return proc

    def first_here_then_wait(*args):  # this process decodes the first work item, then waits for the workers' end:
        here.append(args)                # only they take work items until then
        if len(here) > 1:
            assert released.wait(timeout=60)
        return decode_here(*args)

    class Stop(Exception):
        pass

    def stop_while_a_worker_decodes(done, total):
        assert handed_work.wait(timeout=60)
        raise Stop

    monkeypatch.setattr(pool_module, "_start_worker", recorded)
    monkeypatch.setattr(pool_module, "decode_rows_into_file", first_here_then_wait)
    with pytest.raises(Stop):
        presize_cached(paths, 8, progress=stop_while_a_worker_decodes, workers=3)
    assert workers and [w.poll() for w in workers] == [0] * len(workers)  # every worker ended, none by an error
    assert not list(entry_folder().glob("*.partial")) and "Traceback" not in capfd.readouterr().err
    images, got = presize_cached(paths, 8, workers=3)
    assert got.status == "miss" and same_pixels(images, paths)


def test_a_writer_killed_mid_write_leaves_nothing_that_is_read(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 5)
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", CRASH, *map(str, paths)], cwd=REPO, env=env, timeout=120)
    assert result.returncode == -9
    assert list(entry_folder().glob("*.partial")) and not (entry_folder() / "manifest.json").exists()
    images, got = presize_cached(paths, 8)  # the dead writer's lock is free again
    assert got.status == "miss" and len(decoded) == 5 and same_pixels(images, paths)
    assert not list(entry_folder().glob("*.partial"))


FILL = """
import sys
from engine.data.cache import presize_cached
print("ready", flush=True)
sys.stdin.readline()
images, got = presize_cached(sys.argv[1:], 8)
print(got.status, int(images.ok.sum()), flush=True)
"""


def test_two_processes_filling_the_same_entry_leave_one_valid_entry(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 300)
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", FILL, *map(str, paths)], cwd=REPO, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline() == "ready\n"  # both imported and waiting: now let them go together
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(status for status, _ in outputs) in (["hit", "miss"], ["miss", "miss"])
    assert all(ok == "300" for _, ok in outputs)
    images, got = presize_cached(paths, 8)
    assert got.status == "hit" and decoded == [] and same_pixels(images, paths)
    assert len(row_files(entry_folder())) == 1 and not list(entry_folder().glob("*.partial"))


# ---------------------------------------------------------------- size on disk

def test_least_recently_used_data_sets_are_evicted_to_stay_under_the_limit(tmp_path, decoded):
    sets = [images_in(tmp_path / name, 10, first_seed=10 * k) for k, name in enumerate("abc")]
    presize_cached(sets[0], 8)
    one = cache_size()
    limit = int(2.5 * one)  # room for two data sets
    presize_cached(sets[1], 8, limit=limit)
    by_root = {Path(e.root).name: e.folder for e in cache_entries()}
    os.utime(by_root["a"] / "last-used", (1e9, 1e9))  # a: used long ago
    os.utime(by_root["b"] / "last-used", (1.5e9, 1.5e9))
    presize_cached(sets[0], 8, limit=limit)  # a hit: a is now the most recent
    assert (by_root["a"] / "last-used").stat().st_mtime > 1.5e9
    presize_cached(sets[2], 8, limit=limit)
    assert sorted(Path(e.root).name for e in cache_entries()) == ["a", "c"] and cache_size() <= limit
    decoded.clear()
    presize_cached(sets[1], 8, limit=limit)  # b was evicted: decoded again, evicting a (now the oldest)
    assert len(decoded) == 10 and sorted(Path(e.root).name for e in cache_entries()) == ["b", "c"]
    assert cache_size() <= limit


def test_a_data_set_larger_than_the_limit_is_decoded_into_memory_only(tmp_path, decoded):
    paths = images_in(tmp_path / "img", 4)
    images, got = presize_cached(paths, 8, limit=100)  # 4 × 192 bytes do not fit
    assert got.status == "miss" and not got.on_disk and images.in_memory and same_pixels(images, paths)
    assert cache_entries() == []
    with pytest.raises(UserError, match="cannot be cached on disk because it is larger than the disk cache"):
        presize_cached(paths, 8, in_memory=False, limit=100)


def test_size_entries_and_clear(tmp_path, decoded, monkeypatch):
    a, b = images_in(tmp_path / "a", 3), images_in(tmp_path / "b", 5)
    assert cache_size() == 0 and cache_entries() == []
    presize_cached(a, 8)
    presize_cached(b, 16, "squish")
    entries = cache_entries()
    assert sorted((Path(e.root).name, e.presize, e.method, e.images) for e in entries) == [
        ("a", 8, "crop", 3), ("b", 16, "squish", 5)]
    assert cache_size() == sum(e.bytes for e in entries) >= 3 * 192 + 5 * 768
    assert all(e.folder.parent == cache_dir() for e in entries)
    assert clear_cache() == sum(e.bytes for e in entries)
    assert cache_size() == 0 and cache_entries() == []
    decoded.clear()
    presize_cached(a, 8)
    assert len(decoded) == 3  # decoded again
    monkeypatch.setenv("LOUPE_CACHE_DISK_GB", "0.000001")  # 1,073 bytes: the next data set goes to memory only
    assert not presize_cached(b, 16)[1].on_disk


def test_the_limit_set_in_the_app_is_kept_and_applied(tmp_path, monkeypatch):
    from engine.data.cache import disk_limit_bytes, set_disk_limit
    from engine.errors import UserError

    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    monkeypatch.delenv("LOUPE_CACHE_DISK_GB", raising=False)
    assert disk_limit_bytes() == 10 * 1024**3
    set_disk_limit(3.5)
    assert disk_limit_bytes() == int(3.5 * 1024**3)  # read back from LOUPE_HOME: a restart keeps it
    monkeypatch.setenv("LOUPE_CACHE_DISK_GB", "1")
    assert disk_limit_bytes() == 1024**3  # the environment wins
    with pytest.raises(UserError):
        set_disk_limit(0)
