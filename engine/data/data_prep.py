"""A data set read in the background: the folder scan, the decoding and the health check run as jobs the pages poll.

A page never waits for them: it draws what is ready and a progress bar for the rest. Each result is kept by
what it depends on, so a page redrawn after a label-rule or split change reuses the scan and the pixels and
only checks health again:

    read   (folder, as the cleaner last left it, presize, method) -> FolderScan, PresizedImages
    check  (those pixels, the data rules)                          -> HealthCheck

A read is reused for `READ_FRESH_S` seconds (a folder changed deep inside by another program is read again
after that); the cleaner's changes, and pictures added to or taken from the folder or one of the folders directly in
it (a camera shot, a file dropped into a class folder), are seen at once, by `folder_stamp`.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from engine.data.loaders import LabelledItems, PresizeCache
from engine.errors import UserError
from engine.data.health import HealthCheck, health_check
from engine.data.images import PresizedImages
from engine.store.jobs import CANCELLED, DONE, FAILED, Job, JobManager
from engine.data.sources import TRASH_DIR, FolderScan, ScanStopped, scan_folder

MAX_STAMPED_FOLDERS = 2000  # folders directly in a data set whose times make its stamp (more are left out)
READ_FRESH_S = 30.0  # a finished read older than this is done again (cheap: the pixels come from the disk cache)
KEEP_READS, KEEP_CHECKS = 4, 8


def clean_stamp(root: str | Path) -> str:
    """Changes whenever the cleaner applies or undoes a batch in this data set (from any window or command)."""
    log = Path(root) / TRASH_DIR / "log.jsonl"
    try:
        stat = log.stat()
    except OSError:
        return ""
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def folder_stamp(root: str | Path) -> str:
    """Changes with `clean_stamp`, and when a picture is added to or taken from the folder or one of the folders
    directly in it (their modification times): what a read of the folder, and the counts shown, depend on."""
    root = Path(root)
    parts = [clean_stamp(root)]
    try:
        parts.append(str(root.stat().st_mtime_ns))
        with os.scandir(root) as entries:
            for entry in entries:
                if len(parts) > MAX_STAMPED_FOLDERS:
                    break
                if entry.name != TRASH_DIR and entry.is_dir(follow_symlinks=False):
                    parts.append(f"{entry.name}:{entry.stat(follow_symlinks=False).st_mtime_ns}")
    except OSError:
        pass
    return hashlib.sha1("|".join(sorted(parts)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


class FolderRead:
    """One folder scanned and its images presized, by a background job (`scan` is set as soon as it is scanned)."""

    def __init__(self, root: Path, presize: int, method: str, cache: PresizeCache, owner: str = "",
                 scan: FolderScan | None = None) -> None:
        self.root, self.presize, self.method, self.cache = root, presize, method, cache
        self.scan: FolderScan | None = scan  # a fresh scan of the same folder may be handed over
        self.images: PresizedImages | None = None
        self.scanned = threading.Event()
        self.made = time.monotonic()
        self.job = Job("data-read", f"Reading {root.name or root}", self._work, owner=owner)

    def _work(self, job: Job) -> None:
        try:
            if self.scan is None:
                job.emit("stage", text="scan")
                self.scan = scan_folder(self.root, stop=job.control.stop_flag,
                                        progress=lambda looked, found: job.emit("scan", looked=looked, found=found))
        except ScanStopped:
            return None  # the job ends CANCELLED: the user stopped it
        finally:
            self.scanned.set()  # the scan is there, or it never will be (the job says why)
        job.emit("stage", text="decode")

        def decoded(done: int, total: int) -> None:
            job.set_progress(done, total)
            job.emit("decode", done=done, total=total)

        self.images = self.cache.get(self.scan.images, self.presize, self.method, progress=decoded)
        job.emit("read", got=self.cache.last_get.status)

    @property
    def failed(self) -> str | None:
        """What went wrong, in the user's words, or None."""
        return self.job.error if self.job.state == FAILED else None

    def wait_scanned(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the scan stage to end (then `scan` is set, or `failed` says why not)."""
        return self.scanned.wait(timeout) and (self.scan is not None or self.job.wait(timeout))

    def wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: for as long as it takes) for the read to end."""
        return self.job.wait(timeout)


class HealthRun:
    """One health check of one data set's pixels under one set of rules, by a background job."""

    def __init__(self, items: LabelledItems, images: PresizedImages, scan: FolderScan, owner: str = "") -> None:
        self.items, self.images, self.scan = items, images, scan
        self.check: HealthCheck | None = None
        self.job = Job("health", "Checking the images for copies and leaks", self._work, owner=owner)

    def _work(self, job: Job) -> HealthCheck:
        self.check = health_check(self.items, self.images, broken_links=tuple(self.scan.broken_links),
                                  unreadable_folders=tuple(self.scan.unreadable))
        return self.check

    def wait(self, timeout: float | None) -> bool:
        return self.job.wait(timeout)


class DataPrep:
    """The folder reads and health checks of this process, kept by what they depend on (thread-safe).

    Reads and checks each have their own job manager (one at a time, the rest queued), apart from training's, so
    a training run never holds the Data page. A newer request stops the queued ones of the same kind, which
    nobody is waiting for any more.
    """

    def __init__(self, cache: PresizeCache, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache, self.clock = cache, clock
        self.reads_jobs, self.checks_jobs = JobManager(keep=KEEP_READS), JobManager(keep=KEEP_CHECKS)
        self._reads: OrderedDict[tuple, FolderRead] = OrderedDict()
        self._checks: OrderedDict[tuple, HealthRun] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, root: str | Path, presize: int, method: str = "crop", owner: str = "") -> FolderRead:
        """The read of this folder at this presize: the running or recent one, else a new one started now."""
        root = Path(root).expanduser()
        stamp = folder_stamp(root)
        key = (str(root), stamp, presize, method)
        with self._lock:
            known = self._reads.get(key)
            if known is not None and self._usable(known):
                self._reads.move_to_end(key)
                return known
            # another presize of the same folder, scanned moments ago: its scan is reused
            scan = next((r.scan for (folder, s, _, _), r in reversed(self._reads.items())
                         if folder == str(root) and s == stamp and r.scan is not None
                         and self.clock() - r.made < READ_FRESH_S), None)
            fresh = FolderRead(root, presize, method, self.cache, owner=owner, scan=scan)
            fresh.made = self.clock()
            self._reads[key] = fresh
            while len(self._reads) > KEEP_READS:
                self._reads.popitem(last=False)
        self._submit(self.reads_jobs, fresh.job)
        return fresh

    def _usable(self, read: FolderRead) -> bool:
        state = read.job.state
        if state in (CANCELLED, FAILED) and not read.job.active:
            return state == FAILED and self.clock() - read.made < READ_FRESH_S  # a bad folder is said once, not retried each rerun
        return read.job.active or self.clock() - read.made < READ_FRESH_S

    def check(self, key: str, rules: str, items: LabelledItems, images: PresizedImages, scan: FolderScan,
              owner: str = "") -> HealthRun:
        """The health check of these pixels (`key`: PresizeCache.key) under these rules: kept, running, or started now."""
        with self._lock:
            known = self._checks.get((key, rules))
            if known is not None and known.job.state != CANCELLED:
                self._checks.move_to_end((key, rules))
                return known
            run = HealthRun(items, images, scan, owner=owner)
            self._checks[(key, rules)] = run
            while len(self._checks) > KEEP_CHECKS:
                self._checks.popitem(last=False)
        self._submit(self.checks_jobs, run.job)
        return run

    @staticmethod
    def _submit(manager: JobManager, job: Job) -> None:
        for waiting in manager.queued:  # asked for before this one: nobody waits for them any more
            waiting.stop()
        manager.submit(job)


def read_now(prep: DataPrep, root: str | Path, presize: int, method: str = "crop") -> FolderRead:
    """A read waited for to its end (scripts and pages that need the numbers now); a UserError if it failed."""
    read = prep.read(root, presize, method)
    read.wait(None)
    if read.failed:
        raise UserError(read.failed)
    if read.job.state != DONE:
        raise UserError(f"Reading '{root}' was stopped; nothing was loaded.")
    return read
