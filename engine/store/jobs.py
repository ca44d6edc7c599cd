"""Background jobs: one active at a time, a queue behind it, each in its own thread.

A job's worker never touches the UI: it appends events to a lock-protected log that readers
poll with `since(i)` (or `of_kind(kind, since)` for one kind, or `last(kind)` for the newest of a
kind). Stop, pause and interrupt reach the work one way: the job's `control` (a `RunControl`), which the
fit loop and its callbacks hold too and check every batch; a paused worker waits on its condition. Every
state change (pause, resume, stop, the worker's start and finish) happens under the job's lock, so a pause
that races the end of a run can never leave the job paused for ever: finishing wins from any state.

Each job has an `owner`, an opaque id of whoever submitted it (a browser session), so that one
window is never shown another window's run as its own.

When the process exits (the Streamlit server after SIGTERM or Ctrl-C), an `atexit` hook stops every manager's
jobs with `reason="shutdown"` and waits, at most `SHUTDOWN_SECONDS`, for the worker to leave torch: a daemon
thread still inside torch while the interpreter finalizes aborts the process (exit code 134). A job stopped for a
shutdown ends INTERRUPTED, not CANCELLED (which means the user pressed Stop).
"""
from __future__ import annotations

import atexit
import itertools
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from engine.errors import plain_reason

QUEUED, RUNNING, PAUSED, STOPPING = "queued", "running", "paused", "stopping"
DONE, CANCELLED, FAILED, INTERRUPTED = "done", "cancelled", "failed", "interrupted"
FINISHED = (DONE, CANCELLED, FAILED, INTERRUPTED)
STOP_REASONS = ("user", "shutdown")
SHUTDOWN_SECONDS = 30.0  # how long the exit hook waits for a running job before giving up on it

_order = itertools.count()  # submission order: two jobs made within one clock tick still compare


class RunControl:
    """How a run is stopped, paused or interrupted: one object shared by whoever asks (a job, a signal handler) and
    whatever obeys (the fit loop, its callbacks, an experiment between its runs).

    A stop ends the run at the next batch; an interrupt is a stop because the process is shutting down (the run
    ends 'interrupted', not 'cancelled'). A paused worker blocks in `wait_while_paused` on a condition that
    resume and stop notify: it never polls.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._stop = threading.Event()  # set by stop() alone; read through `stopped` (or `stop_flag`)
        self._paused = self._interrupted = False

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_flag(self) -> threading.Event:
        """The stop as a `threading.Event`, for a function that takes one (a folder scan); never set it directly."""
        return self._stop

    def stop(self) -> None:
        """End the run at its next batch (a paused run wakes up to stop)."""
        with self._changed:
            self._stop.set()
            self._changed.notify_all()

    def interrupt(self) -> None:
        """Stop because the process is shutting down: the run ends 'interrupted'."""
        with self._changed:
            self._interrupted = True  # before the stop: whoever sees the stop sees why
            self._stop.set()
            self._changed.notify_all()

    def pause(self) -> None:
        """Hold the run at its next batch until `resume` (or a stop)."""
        with self._changed:
            self._paused = True
            self._changed.notify_all()

    def resume(self) -> None:
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused and not stopped; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._paused or self._stop.is_set(), timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the run is stopped; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(self._stop.is_set, timeout)


@dataclass(frozen=True)
class Event:
    i: int  # position in the job's log
    t: float  # seconds since the job started
    kind: str
    data: dict = field(default_factory=dict)


class Job:
    """A unit of background work with state, an append-only event log, progress and ETA."""

    def __init__(self, kind: str, title: str, target: Callable[["Job"], Any], meta: dict | None = None,
                 owner: str = "") -> None:
        self.id = uuid.uuid4().hex[:10]
        self.kind, self.title, self.target = kind, title, target
        self.owner = owner  # who submitted it (a browser session id); "" for scripts
        self.meta = dict(meta or {})  # what the submitter wants to remember (e.g. the settings)
        self.control = RunControl()  # what the worker obeys: stop, pause, interrupt
        self.stop_reason: str | None = None
        self.state = QUEUED
        self.error: str | None = None
        self.error_detail: str | None = None
        self.result: Any = None
        self.clock: Callable[[], float] = time.time  # wall time for durations and the ETA (tests replace it)
        self.created = self.clock()
        self.order = next(_order)
        self.started: float | None = None
        self.finished: float | None = None
        self.progress = 0.0  # 0..1
        self._events: list[Event] = []
        self._by_kind: dict[str, list[Event]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on every state change
        self._paused_total, self._paused_since = 0.0, None
        self._eta: tuple[float, float] | None = None  # (seconds left, running seconds when it was measured)
        self._t0 = time.perf_counter()

    # ---- what the worker calls

    def emit(self, kind: str, **data: Any) -> None:
        """Append an event to the log (thread-safe)."""
        with self._lock:
            self._append(kind, data)

    def _append(self, kind: str, data: dict) -> None:
        # called with the lock held
        event = Event(len(self._events), time.perf_counter() - self._t0, kind, data)
        self._events.append(event)
        self._by_kind.setdefault(kind, []).append(event)

    def set_progress(self, done: float, total: float) -> None:
        """Progress as done / total, clamped to [0, 1] (0 when total is 0)."""
        self.progress = min(max(done / total, 0.0), 1.0) if total else 0.0

    # ---- what readers call

    def since(self, i: int = 0) -> list[Event]:
        """Events from position i on (a copy: safe while the worker appends)."""
        with self._lock:
            return self._events[i:]

    def last(self, kind: str) -> Event | None:
        """The newest event of a kind (e.g. "stage", "run"), or None; O(1)."""
        with self._lock:
            events = self._by_kind.get(kind)
            return events[-1] if events else None

    def of_kind(self, kind: str, since: int = 0) -> list[Event]:
        """Events of one kind, from the `since`-th of that kind on (a copy); costs only what it returns."""
        with self._lock:
            return self._by_kind.get(kind, [])[since:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    @property
    def running_seconds(self) -> float:
        """Seconds spent working, not counting pauses."""
        with self._lock:
            if self.started is None:
                return 0.0
            now = self.clock()
            end = self.finished if self.finished is not None else now
            paused = self._paused_total + (now - self._paused_since if self._paused_since is not None else 0.0)
            return max(0.0, end - self.started - paused)

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds left, from the progress so far; None until there is some."""
        if self.state in FINISHED:
            return 0.0
        measured = self._eta
        if measured is not None:  # the worker's own estimate from recent steps, counting down since it was made
            eta, at_running = measured
            return max(0.0, eta - (self.running_seconds - at_running))
        if self.progress <= 0:
            return None
        return self.running_seconds * (1 - self.progress) / self.progress

    def set_eta(self, seconds: float) -> None:
        """The worker's estimate of the seconds left (from its measured steps); replaces the progress-based guess."""
        self._eta = (max(0.0, float(seconds)), self.running_seconds)

    @property
    def active(self) -> bool:
        return self.state not in FINISHED

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self.state in FINISHED, timeout)

    # ---- what the user does (any thread)

    def pause(self) -> None:
        """Pause a running job at its next batch; anything else (queued, stopping, finished) is left as it is."""
        with self._lock:
            if self.state != RUNNING:
                return
            self.control.pause()
            self._paused_since = self.clock()
            self.state = PAUSED
            self._append("paused", {})
            self._changed.notify_all()

    def resume(self) -> None:
        """Resume a paused job; anything else is left as it is."""
        with self._lock:
            if self.state != PAUSED:
                return
            self._end_pause()
            self.state = RUNNING
            self._append("resumed", {})
            self._changed.notify_all()

    def stop(self, reason: str = "user") -> None:
        """Ask the worker to stop at the next batch (a queued job is cancelled at once and never runs).

        `reason` is "user" (the Stop button: the job ends CANCELLED) or "shutdown" (the process is exiting: it ends
        INTERRUPTED); a job already stopping keeps its first reason.
        """
        if reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {reason!r}")
        with self._lock:
            if self.state in FINISHED or self.state == STOPPING:
                return
            self.stop_reason = reason
            if reason == "shutdown":
                self.control.interrupt()
            else:
                self.control.stop()
            self._end_pause()
            if self.state == QUEUED:
                self.state, self.finished = CANCELLED, self.clock()
                self._append("cancelled", {"reason": reason})
            else:
                self.state = STOPPING
                self._append("stopping", {"reason": reason})
            self._changed.notify_all()

    def _end_pause(self) -> None:
        # called with the lock held: close the pause interval and let the worker go on
        if self._paused_since is not None:
            self._paused_total += self.clock() - self._paused_since
            self._paused_since = None
        self.control.resume()

    # ---- the thread

    def run(self) -> None:
        """Run the target in this thread; any exception becomes the FAILED state with its message."""
        if not self._start():
            return
        try:
            result = self.target(self)
        except BaseException as e:  # the worker must never take the app down
            self._finish(FAILED, error=plain_reason(e), detail=traceback.format_exc())
        else:
            self._finish(DONE, result=result)

    def _start(self) -> bool:
        """QUEUED -> RUNNING; False if the job was cancelled before its thread got to it."""
        with self._lock:
            if self.state != QUEUED:
                return False
            self.started, self.state = self.clock(), RUNNING
            self._t0 = time.perf_counter()
            self._append("started", {})
            self._changed.notify_all()
            return True

    def _finish(self, state: str, result: Any = None, error: str | None = None, detail: str | None = None) -> None:
        """RUNNING, PAUSED or STOPPING -> DONE (CANCELLED or INTERRUPTED if asked to stop) or FAILED, in one step."""
        with self._lock:
            self._end_pause()  # a pause that came after the last batch must not outlive the run
            if state == FAILED:
                self.error, self.error_detail = error, detail
                self._append("failed", {"error": error})
            else:
                self.result = result
                state = (INTERRUPTED if self.control.interrupted else CANCELLED if self.control.stopped else DONE)
                if state == DONE:
                    self.progress = 1.0
                self._append(state, {})
            self.state, self.finished = state, self.clock()
            self._changed.notify_all()


class JobManager:
    """At most one running job and a queue of the next; finished jobs are kept for reading.

    Every manager is stopped by `shutdown()` when the process exits (see `stop_all_at_exit`).
    """

    def __init__(self, keep: int = 20, shutdown_seconds: float = SHUTDOWN_SECONDS) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._active: Job | None = None
        self._finished: deque[Job] = deque(maxlen=keep)
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False  # set by shutdown(): nothing starts any more
        self.shutdown_seconds = shutdown_seconds
        _register(self)

    def submit(self, job: Job) -> Job:
        """Start the job now if nothing runs, else queue it (after `shutdown()`, it is cancelled at once)."""
        with self._lock:
            if self._closed:
                job.stop(reason="shutdown")
                self._finished.append(job)
                return job
            self._queue.append(job)
            self._start_next()
        return job

    def _start_next(self) -> None:
        # called with the lock held
        if self._active is not None and self._active.active:
            return
        while self._queue:
            job = self._queue.popleft()
            if self._closed:
                job.stop(reason="shutdown")
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
        """The job running now (or paused, or stopping), if any."""
        with self._lock:
            return self._active

    @property
    def queued(self) -> list[Job]:
        """Jobs waiting for the active one, next first (cancelled ones left out)."""
        with self._lock:
            return [j for j in self._queue if j.state == QUEUED]

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Every job this manager knows (of one owner, if given): finished ones, the active one, the queue."""
        with self._lock:
            out = list(self._finished)
            if self._active is not None and self._active not in out:
                out.append(self._active)
            out += [j for j in self._queue if j not in out]
        return out if owner is None else [j for j in out if j.owner == owner]

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job with this id (only if `owner` submitted it, when given), else None."""
        return next((j for j in self.jobs(owner) if j.id == job_id), None)

    def latest(self, kind: str, owner: str | None = None) -> Job | None:
        """The most recently submitted job of a kind (of one owner, if given): active, queued or finished."""
        candidates = [j for j in self.jobs(owner) if j.kind == kind]
        return max(candidates, key=lambda j: j.order) if candidates else None

    def others_active(self, owner: str) -> Job | None:
        """The running job if another owner (another browser window) submitted it, else None."""
        job = self.active
        return job if job is not None and job.active and job.owner != owner else None

    def queue_position(self, job: Job) -> int | None:
        """1 for the queued job that starts next, 2 for the one after, …; None if the job is not waiting."""
        queued = self.queued
        return queued.index(job) + 1 if job in queued else None

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until the job has finished and its thread has handed over to the next (for tests and the CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not job.wait(timeout):
            return False
        with self._lock:
            thread = self._threads.get(job.id)
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return not thread.is_alive()
        return True

    def shutdown(self, timeout: float | None = None) -> list[Job]:
        """Stop everything for a process exit: queued jobs are cancelled, the running one stops at its next batch
        (ending INTERRUPTED), nothing starts any more. Waits up to `timeout` seconds (default `shutdown_seconds`)
        for the worker threads; returns the jobs whose thread is still alive after that (stuck: given up on)."""
        timeout = self.shutdown_seconds if timeout is None else timeout
        with self._lock:
            self._closed = True
            jobs = [*self._queue, *([self._active] if self._active is not None else [])]
            threads = {job_id: t for job_id, t in self._threads.items() if t is not threading.current_thread()}
        for job in jobs:
            job.stop(reason="shutdown")
        deadline = time.monotonic() + timeout
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = {job_id for job_id, t in threads.items() if t.is_alive()}
        return [j for j in self.jobs() if j.id in stuck]


# ---------------------------------------------------------------- process exit

_managers: "weakref.WeakSet[JobManager]" = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_registered = False


def _register(manager: JobManager) -> None:
    """Remember a manager for the exit hook, registering the hook the first time."""
    global _hook_registered
    with _hook_lock:
        _managers.add(manager)
        if not _hook_registered:
            # atexit hooks run after the main thread has returned and before the interpreter finalizes, while
            # daemon threads still run: the last moment a worker can be stopped and joined safely
            atexit.register(stop_all_at_exit)
            _hook_registered = True


def stop_all_at_exit(managers: Iterable[JobManager] | None = None) -> None:
    """The exit hook: stop every live manager's jobs (or these managers') for shutdown and wait, bounded, for them,
    saying so on stderr."""
    for manager in list(_managers if managers is None else managers):
        running = [j for j in manager.jobs() if j.state not in FINISHED and j.state != QUEUED]
        for job in running:
            print(f"Loupe: stopping {job.title!r} for shutdown…", file=sys.stderr, flush=True)
        stuck = manager.shutdown()
        for job in running:
            if job in stuck:
                print(f"Loupe: {job.title!r} did not stop within {manager.shutdown_seconds:.0f} s; it will show as "
                      "interrupted next time.", file=sys.stderr, flush=True)
            else:
                print(f"Loupe: {job.title!r} {job.state}; what it did so far is kept.", file=sys.stderr, flush=True)
