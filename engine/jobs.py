"""Background jobs: one active at a time, a queue behind it, each in its own thread.

A job's worker never touches the UI: it appends events to a lock-protected log that readers
poll with `since(i)`, and it checks the job's stop and pause `threading.Event`s every batch.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

QUEUED, RUNNING, PAUSED, STOPPING = "queued", "running", "paused", "stopping"
DONE, CANCELLED, FAILED = "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)


@dataclass(frozen=True)
class Event:
    i: int  # position in the job's log
    t: float  # seconds since the job started
    kind: str
    data: dict = field(default_factory=dict)


class Job:
    """A unit of background work with state, an append-only event log, progress and ETA."""

    def __init__(self, kind: str, title: str, target: Callable[["Job"], Any], meta: dict | None = None) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.kind, self.title, self.target = kind, title, target
        self.meta = dict(meta or {})  # what the submitter wants to remember (e.g. the settings)
        self.stop_event, self.pause_event = threading.Event(), threading.Event()
        self.state = QUEUED
        self.error: str | None = None
        self.error_detail: str | None = None
        self.result: Any = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.progress = 0.0  # 0..1
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._paused_total, self._paused_since = 0.0, None
        self._t0 = time.perf_counter()

    # ---- what the worker calls

    def emit(self, kind: str, **data: Any) -> None:
        """Append an event to the log (thread-safe)."""
        with self._lock:
            self._events.append(Event(len(self._events), time.perf_counter() - self._t0, kind, data))

    def set_progress(self, done: float, total: float) -> None:
        self.progress = min(max(done / total, 0.0), 1.0) if total else 0.0

    # ---- what readers call

    def since(self, i: int = 0) -> list[Event]:
        """Events from position i on (a copy: safe while the worker appends)."""
        with self._lock:
            return self._events[i:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    @property
    def running_seconds(self) -> float:
        """Seconds spent working, not counting pauses."""
        if self.started is None:
            return 0.0
        end = self.finished or time.time()
        paused = self._paused_total + (time.time() - self._paused_since if self._paused_since else 0.0)
        return max(0.0, end - self.started - paused)

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds left, from the progress so far; None until there is some."""
        if self.state in FINISHED:
            return 0.0
        if self.progress <= 0:
            return None
        return self.running_seconds * (1 - self.progress) / self.progress

    @property
    def active(self) -> bool:
        return self.state not in FINISHED

    def pause(self) -> None:
        if self.state == RUNNING:
            self.pause_event.set()
            self._paused_since = time.time()
            self.state = PAUSED
            self.emit("paused")

    def resume(self) -> None:
        if self.state == PAUSED:
            self.pause_event.clear()
            self._paused_total += time.time() - (self._paused_since or time.time())
            self._paused_since = None
            self.state = RUNNING
            self.emit("resumed")

    def stop(self) -> None:
        """Ask the worker to stop at the next batch (a queued job is cancelled at once)."""
        if self.state in FINISHED:
            return
        self.stop_event.set()
        if self._paused_since:
            self._paused_total += time.time() - self._paused_since
            self._paused_since = None
        self.pause_event.clear()
        if self.state == QUEUED:
            self.state = CANCELLED
            self.finished = time.time()
            self.emit("cancelled")
        else:
            self.state = STOPPING
            self.emit("stopping")

    # ---- the thread

    def run(self) -> None:
        """Run the target in this thread; any exception becomes the FAILED state with its message."""
        if self.state == CANCELLED:
            return
        self.started, self.state = time.time(), RUNNING
        self._t0 = time.perf_counter()
        self.emit("started")
        try:
            self.result = self.target(self)
        except BaseException as e:  # the worker must never take the app down
            self.error = str(e) or type(e).__name__
            self.error_detail = traceback.format_exc()
            self.state = FAILED
            self.emit("failed", error=self.error)
        else:
            self.state = CANCELLED if self.stop_event.is_set() else DONE
            self.progress = 1.0 if self.state == DONE else self.progress
            self.emit(self.state)
        finally:
            self.finished = time.time()


class JobManager:
    """At most one running job and a queue of the next; finished jobs are kept for reading."""

    def __init__(self, keep: int = 20) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._active: Job | None = None
        self._finished: deque[Job] = deque(maxlen=keep)
        self._threads: dict[str, threading.Thread] = {}

    def submit(self, job: Job) -> Job:
        """Start the job now if nothing runs, else queue it."""
        with self._lock:
            self._queue.append(job)
            self._start_next()
        return job

    def _start_next(self) -> None:
        # called with the lock held
        if self._active is not None and self._active.active:
            return
        while self._queue:
            job = self._queue.popleft()
            if job.state == CANCELLED:
                self._finished.append(job)
                continue
            self._active = job
            thread = threading.Thread(target=self._work, args=(job,), name=f"loupe-{job.kind}-{job.id}", daemon=True)
            self._threads[job.id] = thread
            thread.start()
            return
        self._active = None

    def _work(self, job: Job) -> None:
        try:
            job.run()
        finally:
            with self._lock:
                self._finished.append(job)
                self._threads.pop(job.id, None)
                if self._active is job:
                    self._active = None
                self._start_next()

    @property
    def active(self) -> Job | None:
        with self._lock:
            return self._active

    @property
    def queued(self) -> list[Job]:
        with self._lock:
            return [j for j in self._queue if j.state == QUEUED]

    def jobs(self) -> list[Job]:
        """Every job this manager knows: finished ones, the active one, the queue (oldest first)."""
        with self._lock:
            out = list(self._finished)
            if self._active is not None and self._active not in out:
                out.append(self._active)
            return out + [j for j in self._queue if j not in out]

    def get(self, job_id: str) -> Job | None:
        return next((j for j in self.jobs() if j.id == job_id), None)

    def latest(self, kind: str) -> Job | None:
        """The most recent job of a kind (active, queued or finished)."""
        candidates = [j for j in self.jobs() if j.kind == kind]
        return max(candidates, key=lambda j: j.created) if candidates else None

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until the job has finished (for tests and the CLI); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        thread = self._threads.get(job.id)
        if thread is not None:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return True
