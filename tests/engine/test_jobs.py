"""Jobs: states, pause/resume/stop within a batch, races with the end of a run, failures, the queue and its owners,
reads while the worker writes, and the stop for a process exit.

No test depends on how fast the machine is: the test decides when each batch of a target happens (`Batches`), and
races are forced into one order with events. Timeouts are a safety net only (a hung test fails instead of hanging).
"""
from __future__ import annotations

import queue
import threading

import pytest

import engine.store.jobs
from engine.store.jobs import (CANCELLED, DONE, FAILED, FINISHED, INTERRUPTED, PAUSED, QUEUED, RUNNING, STOPPING,
                         Job, JobManager, stop_all_at_exit)

T = 60  # seconds: a safety net, never a measurement


class Batches:
    """A job target of n batches driven by the test: each batch waits for `go()`, then checks pause and stop as the
    fit loop does, then reports itself (an event "batch" and an entry in `done`)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._go = threading.Semaphore(0)
        self.done: queue.Queue[int] = queue.Queue()
        self.paused = threading.Event()  # set when a batch found the job paused and began to wait

    def go(self, k: int = 1) -> None:
        """Let k more batches begin."""
        for _ in range(k):
            self._go.release()

    def run(self, k: int) -> list[int]:
        """Let k batches begin and wait until they are done; their indices."""
        self.go(k)
        return [self.done.get(timeout=T) for _ in range(k)]

    def __call__(self, job: Job) -> int:
        count = 0
        for i in range(self.n):
            assert self._go.acquire(timeout=T), "the test never let this batch begin"
            if job.control.paused:
                self.paused.set()
                assert job.control.wait_while_paused(timeout=T)
            if job.control.stopped:
                break
            count += 1
            job.set_progress(count, self.n)
            job.emit("batch", i=i)
            self.done.put(i)
        return count


def kinds(job: Job) -> list[str]:
    return [e.kind for e in job.since(0)]


# ---------------------------------------------------------------- one job

def test_a_job_runs_to_done_with_its_events_and_result():
    manager, steps = JobManager(), Batches(5)
    steps.go(5)
    job = manager.submit(Job("train", "t", steps))
    assert manager.wait(job, timeout=T)
    assert job.state == DONE and job.result == 5 and job.progress == 1.0 and job.eta_seconds == 0
    assert kinds(job) == ["started"] + ["batch"] * 5 + ["done"]
    assert [e.i for e in job.since(3)] == [3, 4, 5, 6]
    assert manager.active is None


def test_pause_and_resume_act_within_a_batch():
    manager, steps = JobManager(), Batches(10)
    job = manager.submit(Job("train", "t", steps))
    assert steps.run(2) == [0, 1]
    job.pause()
    assert job.state == PAUSED and job.control.paused
    steps.go()  # the next batch begins, finds the job paused and waits
    assert steps.paused.wait(T)
    assert kinds(job).count("batch") == 2 and job.state == PAUSED  # nothing happens while paused
    job.resume()
    assert job.state == RUNNING and not job.control.paused
    assert steps.done.get(timeout=T) == 2  # the batch that waited goes on
    assert steps.run(1) == [3]
    job.stop()
    steps.go()  # the next batch sees the stop before doing anything
    assert manager.wait(job, timeout=T)
    assert job.state == CANCELLED and job.result == 4
    assert kinds(job) == ["started", "batch", "batch", "paused", "resumed", "batch", "batch", "stopping", "cancelled"]


def test_stop_acts_within_one_batch_and_keeps_what_was_done():
    manager, steps = JobManager(), Batches(1000)
    job = manager.submit(Job("train", "t", steps))
    steps.run(5)
    job.stop()
    assert job.state == STOPPING
    steps.go()
    assert manager.wait(job, timeout=T)
    assert job.state == CANCELLED and job.result == 5 and kinds(job).count("batch") == 5
    assert job.since(0)[-1].kind == "cancelled" and job.finished is not None


def test_stop_while_paused_wakes_the_waiting_worker():
    manager, steps = JobManager(), Batches(1000)
    job = manager.submit(Job("train", "t", steps))
    steps.run(2)
    job.pause()
    steps.go()
    assert steps.paused.wait(T)  # the worker is waiting for a resume
    job.stop()
    assert job.state == STOPPING and not job.control.paused
    assert manager.wait(job, timeout=T)
    assert job.state == CANCELLED and job.result == 2


def test_wait_while_paused_returns_at_once_unless_paused():
    manager, steps = JobManager(), Batches(2)
    job = Job("train", "t", steps)
    assert job.control.wait_while_paused(timeout=0)  # queued: not paused
    manager.submit(job)
    steps.run(1)
    assert job.control.wait_while_paused(timeout=0)
    job.pause()
    assert not job.control.wait_while_paused(timeout=0)
    job.stop()
    assert job.control.wait_while_paused(timeout=0)  # stopping is never held up by a pause
    steps.go()
    assert manager.wait(job, T) and job.state == CANCELLED


# ---------------------------------------------------------------- races with the end of a run, forced into one order

class GatedFinish(Job):
    """A job whose worker halts between the target's return and the step that finishes the job, until `proceed`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.returned, self.proceed = threading.Event(), threading.Event()

    def _finish(self, *args, **kwargs) -> None:
        self.returned.set()
        assert self.proceed.wait(T)
        super()._finish(*args, **kwargs)


@pytest.mark.parametrize("actions, final", [
    (["pause"], DONE),
    (["pause", "resume"], DONE),
    (["stop"], CANCELLED),
    (["pause", "stop"], CANCELLED),
])
def test_the_end_of_a_run_wins_over_a_pause_that_races_it(actions, final):
    manager = JobManager()
    job = manager.submit(GatedFinish("train", "t", lambda job: "result"))
    assert job.returned.wait(T)  # the target has returned; the job still looks running
    for action in actions:
        getattr(job, action)()
    assert job.state in (PAUSED, RUNNING, STOPPING)
    job.proceed.set()
    assert manager.wait(job, timeout=T)
    assert job.state == final and job.result == "result"
    assert not job.control.paused and job._paused_since is None
    assert job.since(0)[-1].kind == final
    assert manager.active is None


@pytest.mark.parametrize("action", ["pause", "resume", "stop"])
def test_pause_resume_and_stop_after_the_end_change_nothing(action):
    manager, steps = JobManager(), Batches(2)
    steps.go(2)
    job = manager.submit(Job("train", "t", steps))
    assert manager.wait(job, timeout=T) and job.state == DONE
    events, finished = kinds(job), job.finished
    getattr(job, action)()
    assert job.state == DONE and kinds(job) == events and job.finished == finished
    assert not job.control.paused and not job.control.stopped


def test_a_failure_while_paused_ends_the_pause():
    entered, proceed = threading.Event(), threading.Event()

    def target(job):
        entered.set()
        assert proceed.wait(T)
        raise RuntimeError("disk full")

    manager = JobManager()
    job = manager.submit(Job("train", "t", target))
    assert entered.wait(T)
    job.pause()
    proceed.set()
    assert manager.wait(job, timeout=T)
    assert job.state == FAILED and job.error == "disk full" and not job.control.paused
    assert kinds(job) == ["started", "paused", "failed"]


def test_pause_while_queued_is_ignored_and_the_job_runs_when_its_turn_comes():
    manager, first, second_steps = JobManager(), Batches(1), Batches(1)
    running = manager.submit(Job("train", "1", first))
    waiting = manager.submit(Job("train", "2", second_steps))
    waiting.pause()
    assert waiting.state == QUEUED and not waiting.control.paused and len(waiting) == 0
    second_steps.go()
    first.go()
    assert manager.wait(running, timeout=T) and manager.wait(waiting, timeout=T)
    assert waiting.state == DONE and kinds(waiting) == ["started", "batch", "done"]


def test_a_job_stopped_before_its_thread_starts_never_runs():
    called = []
    job = Job("train", "t", lambda job: called.append(1))
    job.stop()
    assert job.state == CANCELLED and job.finished is not None
    job.run()  # what the worker thread would do next
    assert job.state == CANCELLED and called == [] and kinds(job) == ["cancelled"]


def test_many_threads_pausing_resuming_and_stopping_while_the_run_ends():
    """Whatever the order, a finished job is never left paused and its log ends with how it finished."""
    for _ in range(30):
        manager, steps = JobManager(), Batches(3)
        job = manager.submit(Job("train", "t", steps))
        start = threading.Barrier(5)

        def poke(action):
            start.wait(T)
            for _ in range(20):
                getattr(job, action)()

        threads = [threading.Thread(target=poke, args=(a,)) for a in ("pause", "resume", "pause", "resume")]
        for t in threads:
            t.start()
        start.wait(T)
        steps.go(3)
        if job.state == PAUSED:
            job.resume()
        while not job.wait(timeout=0):  # a pause landing after the resume above: resume until the end
            job.resume()
            job.wait(timeout=0.01)
        for t in threads:
            t.join(T)
        assert job.state == DONE and not job.control.paused and job._paused_since is None
        assert job.since(0)[-1].kind == DONE and kinds(job).count(DONE) == 1


# ---------------------------------------------------------------- failures and the queue

def test_a_failure_is_reported_and_the_next_job_runs():
    def broken(job):
        job.emit("batch", i=0)
        raise RuntimeError("CUDA out of memory")

    manager, steps = JobManager(), Batches(3)
    steps.go(3)
    bad = manager.submit(Job("train", "bad", broken))
    good = manager.submit(Job("train", "good", steps))
    assert manager.wait(bad, timeout=T) and manager.wait(good, timeout=T)
    assert bad.state == FAILED and bad.error == "CUDA out of memory" and "RuntimeError" in bad.error_detail
    assert bad.since(0)[-1].kind == "failed"
    assert good.state == DONE


def test_one_active_job_and_a_queue():
    manager, first_steps, second_steps = JobManager(), Batches(2), Batches(3)
    first = manager.submit(Job("train", "1", first_steps))
    second = manager.submit(Job("lr_find", "2", second_steps))
    third = manager.submit(Job("train", "3", Batches(3)))
    assert second.state == QUEUED and [j.id for j in manager.queued] == [second.id, third.id]
    assert manager.active is first
    third.stop()  # a queued job is cancelled at once and never runs
    assert third.state == CANCELLED and [j.id for j in manager.queued] == [second.id]
    second_steps.go(3)
    first_steps.go(2)
    assert manager.wait(first, T) and manager.wait(second, T)
    assert second.state == DONE and third.started is None
    assert manager.latest("lr_find") is second and manager.latest("train") is third
    assert {j.id for j in manager.jobs()} == {first.id, second.id, third.id}
    assert manager.get(second.id) is second and manager.get("nope") is None


# ---------------------------------------------------------------- owners: each browser window sees its own jobs

def test_jobs_belong_to_the_window_that_started_them():
    manager, mine, theirs, later = JobManager(), Batches(1), Batches(1), Batches(1)
    a = manager.submit(Job("train", "A's run", mine, owner="window-a"))
    b = manager.submit(Job("train", "B's run", theirs, owner="window-b"))
    c = manager.submit(Job("lr_find", "C's finder", later, owner="window-c"))

    assert manager.latest("train", owner="window-b") is b and manager.latest("train", owner="window-a") is a
    assert manager.latest("train", owner="window-c") is None and manager.latest("train") is b
    assert manager.jobs(owner="window-b") == [b]
    assert manager.others_active("window-b") is a and manager.others_active("window-a") is None
    assert manager.queue_position(b) == 1 and manager.queue_position(c) == 2 and manager.queue_position(a) is None

    b.stop()  # B gives up waiting
    assert b.state == CANCELLED and manager.queue_position(b) is None and manager.queue_position(c) == 1

    later.go()
    mine.go()  # A's run ends: C's starts by itself
    assert manager.wait(a, T) and manager.wait(c, T)
    assert a.state == DONE and c.state == DONE and b.started is None
    assert manager.others_active("window-a") is None and manager.active is None


def test_a_queued_job_starts_when_the_running_one_ends():
    manager, first_steps, second_steps = JobManager(), Batches(1), Batches(2)
    first = manager.submit(Job("train", "1", first_steps, owner="a"))
    second = manager.submit(Job("train", "2", second_steps, owner="b"))
    assert second.state == QUEUED
    first_steps.go()
    assert manager.wait(first, T)
    assert second_steps.run(1) == [0]  # it started without anyone asking
    assert manager.active is second and manager.others_active("a") is second and manager.others_active("b") is None
    second_steps.go()
    assert manager.wait(second, T) and second.state == DONE


def test_a_window_is_never_given_another_windows_finished_job():
    manager = JobManager()
    mine = manager.submit(Job("train", "mine", Batches(0), owner="a"))  # no batches: done at once
    assert manager.wait(mine, T)
    theirs = manager.submit(Job("train", "theirs", Batches(0), owner="b"))
    assert manager.wait(theirs, T) and theirs.state == DONE
    assert manager.latest("train", owner="a") is mine  # theirs is newer, and never a's
    assert manager.latest("train", owner="c") is None and manager.latest("train") is theirs
    assert manager.get(theirs.id, owner="a") is None and manager.get(theirs.id, owner="b") is theirs
    assert manager.get(theirs.id) is theirs


# ---------------------------------------------------------------- reading events

def test_last_and_of_kind_read_without_scanning():
    job = Job("train", "t", Batches(1))
    for i in range(5):
        job.emit("stage", text=f"stage {i}")
        job.emit("note", text=f"note {i}")
    job.emit("run", run_id=7)
    assert job.last("stage").data == {"text": "stage 4"} and job.last("run").data == {"run_id": 7}
    assert job.last("lr_step") is None and job.of_kind("lr_step") == []
    assert [e.data["text"] for e in job.of_kind("note", since=3)] == ["note 3", "note 4"]
    assert [e.i for e in job.of_kind("stage")] == [0, 2, 4, 6, 8]


def test_concurrent_reads_while_the_worker_writes():
    def chatty(job):
        for i in range(20_000):
            job.emit("batch", i=i)

    manager = JobManager()
    job = manager.submit(Job("train", "chatty", chatty))
    errors = []

    def by_position():
        i = 0
        try:
            while job.active or i < len(job):
                for event in job.since(i):
                    assert event.i == i  # no gaps, no repeats, in order
                    i += 1
        except AssertionError as e:
            errors.append(e)

    def by_kind():
        seen = 0
        try:
            while job.active or seen < 20_000:
                for event in job.of_kind("batch", since=seen):
                    assert event.data["i"] == seen
                    seen += 1
        except AssertionError as e:
            errors.append(e)

    readers = [threading.Thread(target=f) for f in (by_position, by_position, by_kind)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(T)
    assert not any(t.is_alive() for t in readers) and not errors
    assert manager.wait(job, T) and len(job) == 20_002  # started + 20,000 + done


def test_eta_and_running_time_leave_pauses_out():
    now = [100.0]
    manager, steps = JobManager(), Batches(4)
    job = Job("train", "t", steps)
    job.clock = lambda: now[0]
    assert job.eta_seconds is None and job.running_seconds == 0
    manager.submit(job)
    steps.run(1)  # started at 100, a quarter done
    now[0] = 104.0
    job.pause()
    now[0] = 105.0
    assert job.running_seconds == 4.0  # the second in pause does not count
    now[0] = 106.0
    job.resume()
    now[0] = 110.0
    assert job.running_seconds == 8.0 and job.eta_seconds == 24.0  # 8 s for a quarter: 24 s for the rest
    job.stop()
    steps.go()
    assert manager.wait(job, T)
    now[0] = 500.0
    assert job.running_seconds == 8.0 and job.eta_seconds == 0.0
    assert job.state in FINISHED


# ---------------------------------------------------------------- the process is exiting

class UntilStopped:
    """A job target that does one batch, then waits until it is stopped (as a run held by the Hold hook)."""

    def __init__(self) -> None:
        self.reached = threading.Event()

    def __call__(self, job: Job) -> int:
        job.emit("batch", i=0)
        self.reached.set()
        assert job.control.wait_stopped(T), "the job was never stopped"
        return 1


def test_a_stop_for_shutdown_ends_interrupted_not_cancelled():
    manager, work = JobManager(), UntilStopped()
    job = manager.submit(Job("train", "t", work))
    assert work.reached.wait(T)
    job.stop(reason="shutdown")
    assert job.state == STOPPING and job.stop_reason == "shutdown" and job.control.interrupted
    job.stop()  # a Stop pressed now changes nothing: the first reason stays
    assert manager.wait(job, T)
    assert job.state == INTERRUPTED and job.result == 1 and job.state in FINISHED
    assert kinds(job) == ["started", "batch", "stopping", "interrupted"]
    assert job.last("stopping").data == {"reason": "shutdown"}


def test_a_users_stop_is_not_an_interruption():
    manager, work = JobManager(), UntilStopped()
    job = manager.submit(Job("train", "t", work))
    assert work.reached.wait(T)
    job.stop()
    job.stop(reason="shutdown")  # the process exits while the job is stopping: it stays the user's stop
    assert manager.wait(job, T)
    assert job.state == CANCELLED and job.stop_reason == "user" and not job.control.interrupted
    with pytest.raises(ValueError, match="unknown stop reason"):
        Job("train", "t", work).stop(reason="tired")


def test_shutdown_interrupts_the_running_job_cancels_the_queue_and_starts_nothing_after():
    manager, work = JobManager(), UntilStopped()
    running = manager.submit(Job("train", "run", work, owner="a"))
    queued = manager.submit(Job("lr_find", "next", Batches(1), owner="b"))
    assert work.reached.wait(T)
    assert manager.shutdown() == []  # every thread left in time
    assert running.state == INTERRUPTED and queued.state == CANCELLED and queued.started is None
    assert queued.last("cancelled").data == {"reason": "shutdown"}
    late = manager.submit(Job("train", "late", Batches(0)))
    assert late.state == CANCELLED and late.started is None and manager.active is None
    assert manager.shutdown() == []  # a second call is harmless


def test_shutdown_gives_up_on_a_job_that_does_not_stop(capsys):
    started, release = threading.Event(), threading.Event()

    def stuck(job: Job) -> str:  # never looks at its stop event
        started.set()
        assert release.wait(T)
        return "late"

    manager = JobManager(shutdown_seconds=0)  # give up at once: no waiting on the clock
    job = manager.submit(Job("train", "stuck", stuck))
    assert started.wait(T)
    stop_all_at_exit([manager])
    assert job.state == STOPPING and "'stuck' did not stop within 0 s" in capsys.readouterr().err
    assert manager.shutdown(timeout=0) == [job]
    release.set()
    assert manager.wait(job, T) and job.state == INTERRUPTED and job.result == "late"


def test_every_manager_is_stopped_by_the_exit_hook_which_says_so(capsys):
    manager, work = JobManager(), UntilStopped()
    job = manager.submit(Job("train", "digits", work))
    assert work.reached.wait(T)
    assert manager in engine.store.jobs._managers and engine.store.jobs._hook_registered  # atexit runs stop_all_at_exit
    stop_all_at_exit([manager])
    assert job.state == INTERRUPTED
    err = capsys.readouterr().err
    assert "Loupe: stopping 'digits' for shutdown" in err and "Loupe: 'digits' interrupted" in err
