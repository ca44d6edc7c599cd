"""Many files decoded at once, into one uint8 row file or into memory: by this process and worker processes.

A worker is a fresh interpreter (`python -m engine.data.decode_pool`) that imports numpy and PIL only, not torch,
not the app: it starts in a fraction of a second. It takes one work item (CHUNK files) at a time and writes the
rows straight into the file. `engine.data.images` decodes one file; `engine.data.cache` keeps the rows on disk.

    found = presize_to_file("rows.u8", paths, 160, "crop", progress)   # [Decoded] per file; the rows in the file
    images = presize_all(paths, 160, "crop")                            # PresizedImages in memory
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Generator, Sequence

import numpy as np

from engine.data.images import (PRESIZE_METHODS, Decoded, PresizedImages, Progress, decode_rows, decode_rows_into_file,
                                use_large_decode_lock)

CHUNK = 64  # files per work item: a process decodes them in one go; progress is reported per chunk


def default_workers() -> int:
    """Decode workers: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class _SharedFileLock:
    """A lock shared by a job's worker processes, through a file; filelock is imported only if a huge image needs it."""

    def __init__(self, path: str) -> None:
        self.path, self.lock = path, None

    def __enter__(self) -> None:
        if self.lock is None:
            from filelock import FileLock  # 80 ms: most jobs never get here

            self.lock = FileLock(self.path)
        self.lock.acquire()

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _worker_main() -> None:
    """A decode worker process: one work item per JSON line on stdin, its results as one JSON line on stdout."""
    use_large_decode_lock(_SharedFileLock(sys.argv[1]))  # huge images decode one at a time across the workers
    print("ready", flush=True)
    for line in sys.stdin:
        filename, start, paths, size, method = json.loads(line)
        print(json.dumps(decode_rows_into_file(filename, start, paths, size, method)), flush=True)


def _start_worker(lock_path: Path) -> subprocess.Popen:
    # a fresh interpreter that imports only this module and engine.data.images: not a fork of the app (its threads, its torch), and
    # not multiprocessing, which runs the caller's main script again in every worker
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "engine.data.decode_pool", str(lock_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _in_worker_processes(filename: str, chunks: list[tuple[int, list[str]]], size: int, method: str,
                         workers: int) -> Generator[list[Decoded], None, None]:
    """Each chunk's results in order, decoded by a thread of this process and `workers` - 1 worker processes, each
    taking the next chunk when done with one (this process starts at once, while the workers start up). A worker
    that dies fails only the chunk it had."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in enumerate(chunks):
        todo.put(item)
    results = [Future() for _ in chunks]
    lock_dir = tempfile.mkdtemp(prefix="loupe-decode-")

    def next_chunk() -> tuple[int, tuple[int, list[str]]] | None:
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def decode_here() -> None:
        while (item := next_chunk()) is not None:
            k, (start, paths) = item
            try:
                results[k].set_result(decode_rows_into_file(filename, start, paths, size, method))
            except Exception as e:
                results[k].set_exception(e)

    def launch() -> subprocess.Popen | None:
        """A worker that started and said so, or None where none can (this process then decodes its share)."""
        try:
            proc = _start_worker(Path(lock_dir) / "large.lock")
        except OSError:
            return None
        if proc.stdout.readline() == "ready\n":
            return proc
        proc.kill()
        proc.wait()
        return None

    def serve_a_worker() -> None:  # hands one worker process a chunk at a time
        proc = launch()
        try:
            while proc is not None and (item := next_chunk()) is not None:
                k, (start, paths) = item
                try:
                    proc.stdin.write(json.dumps([filename, start, paths, size, method]) + "\n")
                    proc.stdin.flush()
                    answer = proc.stdout.readline()
                except OSError:
                    answer = ""
                try:
                    if answer:
                        results[k].set_result([Decoded(*d) for d in json.loads(answer)])
                    else:  # it died on one of these files: they fail, a new worker takes the next chunk
                        code = proc.wait()
                        results[k].set_result([Decoded(failure=f"the decoder stopped on this file or one decoded with it "
                                                               f"(exit code {code})")] * len(paths))
                        proc = launch()
                except Exception as e:
                    results[k].set_exception(e)
        finally:
            if proc is not None:
                with suppress(OSError):
                    proc.stdin.close()  # the worker ends at the end of its input
                proc.wait()

    threads = [threading.Thread(target=decode_here, daemon=True)]
    threads += [threading.Thread(target=serve_a_worker, daemon=True) for _ in range(workers - 1)]
    for t in threads:
        t.start()
    try:
        for result in results:
            yield result.result()
    finally:
        while next_chunk() is not None:  # stopped early (an exception, a progress callback that raised): no more work
            pass
        for t in threads:
            t.join()
        shutil.rmtree(lock_dir, ignore_errors=True)


def presize_to_file(filename: str | Path, paths: Sequence[str | Path], size: int, method: str = "crop",
                    progress: Progress | None = None, workers: int | None = None, processes: bool = True) -> list[Decoded]:
    """Decode and presize `paths` into the uint8 file `filename` ([n, 3, size, size], created or truncated).

    `workers` decode CHUNK files at a time each and write their rows straight into the file: this process and
    `workers` - 1 worker processes (or `workers` threads if not `processes`); with one worker or one chunk it all
    happens in this thread. Progress is reported after each chunk, in order. Failures are recorded, never raised.
    When it returns or raises (a progress callback may stop it), nothing writes into the file any more.
    """
    if method not in PRESIZE_METHODS:
        raise ValueError(f"unknown presize method {method!r}")
    n, filename = len(paths), str(filename)
    with open(filename, "wb") as f:
        f.truncate(n * 3 * size * size)  # zeros, where decoding fails
    chunks = [(start, [str(p) for p in paths[start:start + CHUNK]]) for start in range(0, n, CHUNK)]
    workers = min(workers or default_workers(), len(chunks))
    threads = ThreadPoolExecutor(workers) if workers > 1 and not processes else None
    if workers <= 1:
        results: Generator[list[Decoded], None, None] = (decode_rows_into_file(filename, start, chunk, size, method)
                                            for start, chunk in chunks)
    elif processes:
        results = _in_worker_processes(filename, chunks, size, method, workers)
    else:
        results = (f.result() for f in [threads.submit(decode_rows_into_file, filename, start, chunk, size, method)
                                        for start, chunk in chunks])
    found: list[Decoded] = []
    try:
        for (start, chunk), result in zip(chunks, results):
            found += result
            if progress is not None:
                progress(start + len(chunk), n)
    finally:
        results.close()  # stopped early: the workers finish the chunks they have and take no more
        if threads is not None:
            threads.shutdown(cancel_futures=True)
    return found


def presize_all(
    paths: Sequence[Path],
    size: int,
    method: str = "crop",
    progress: Progress | None = None,
    workers: int | None = None,
) -> PresizedImages:
    """Decode and presize every path into memory (in worker processes when there is more than a chunk); failures
    are recorded, never raised."""
    import torch

    if method not in PRESIZE_METHODS:
        raise ValueError(f"unknown presize method {method!r}")
    n = len(paths)
    if min(workers or default_workers(), -(-n // CHUNK)) <= 1:
        pixels = np.zeros((n, 3, size, size), dtype=np.uint8)
        found: list[Decoded] = []
        for start in range(0, n, CHUNK):
            found += decode_rows(pixels[start:start + CHUNK], paths[start:start + CHUNK], size, method)
            if progress is not None:
                progress(min(start + CHUNK, n), n)
    else:
        with tempfile.TemporaryDirectory(prefix="loupe-presize-") as tmp:
            filename = Path(tmp) / "pixels.u8"
            found = presize_to_file(filename, paths, size, method, progress, workers)
            pixels = np.fromfile(filename, dtype=np.uint8).reshape(n, 3, size, size)
    return PresizedImages.from_decoded(torch.from_numpy(pixels), found, size, method)




if __name__ == "__main__":
    _worker_main()
