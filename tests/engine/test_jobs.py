"""Jobs: states, pause/resume/stop within a batch, failures, the queue, and reads while the worker writes."""
from __future__ import annotations

import threading
import time

import pytest

from engine.jobs import CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING, Job, JobManager


def batches(n: int, seconds: float = 0.01):
    """A job target that works in n 'batches', checking its events each batch like the fit loop."""
    def target(job: Job):
        done = 0
        for i in range(n):
            while job.pause_event.is_set() and not job.stop_event.is_set():
                time.sleep(0.005)
            if job.stop_event.is_set():
                break
            time.sleep(seconds)
            done += 1
            job.set_progress(done, n)
            job.emit("batch", i=i)
        return done
    return target


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_job_runs_to_done_with_its_events_and_result():
    manager = JobManager()
    job = manager.submit(Job("train", "t", batches(5)))
    assert manager.wait(job, timeout=5)
    assert job.state == DONE and job.result == 5 and job.progress == 1.0 and job.eta_seconds == 0
    kinds = [e.kind for e in job.since(0)]
    assert kinds == ["started"] + ["batch"] * 5 + ["done"]
    assert [e.i for e in job.since(3)] == [3, 4, 5, 6]
    assert manager.active is None


def test_pause_and_resume_act_within_a_batch():
    manager = JobManager()
    job = manager.submit(Job("train", "t", batches(200, 0.01)))
    wait_for(lambda: len(job) > 3)
    job.pause()
    assert job.state == PAUSED
    time.sleep(0.05)  # the batch in flight may finish
    count = len(job)
    time.sleep(0.2)
    assert len(job) == count  # nothing happens while paused
    job.resume()
    assert job.state == RUNNING
    wait_for(lambda: len(job) > count + 3)
    job.stop()
    assert manager.wait(job, timeout=5)
    assert job.state == CANCELLED and 0 < job.result < 200


def test_stop_acts_within_one_batch_and_keeps_what_was_done():
    manager = JobManager()
    job = manager.submit(Job("train", "t", batches(1000, 0.01)))
    wait_for(lambda: len(job) > 5)
    start = time.monotonic()
    job.stop()
    assert manager.wait(job, timeout=5)
    assert time.monotonic() - start < 0.5
    assert job.state == CANCELLED and job.result >= 5
    assert job.since(0)[-1].kind == "cancelled"


def test_stop_while_paused():
    manager = JobManager()
    job = manager.submit(Job("train", "t", batches(1000, 0.01)))
    wait_for(lambda: len(job) > 2)
    job.pause()
    job.stop()
    assert manager.wait(job, timeout=5) and job.state == CANCELLED


def test_a_failure_is_reported_and_the_next_job_runs():
    def broken(job):
        job.emit("batch", i=0)
        raise RuntimeError("CUDA out of memory")

    manager = JobManager()
    bad = manager.submit(Job("train", "bad", broken))
    good = manager.submit(Job("train", "good", batches(3)))
    assert manager.wait(bad, timeout=5) and manager.wait(good, timeout=5)
    assert bad.state == FAILED and bad.error == "CUDA out of memory" and "RuntimeError" in bad.error_detail
    assert bad.since(0)[-1].kind == "failed"
    assert good.state == DONE


def test_one_active_job_and_a_queue():
    manager = JobManager()
    first = manager.submit(Job("train", "1", batches(30, 0.01)))
    second = manager.submit(Job("lr_find", "2", batches(3)))
    third = manager.submit(Job("train", "3", batches(3)))
    assert second.state == QUEUED and [j.id for j in manager.queued] == [second.id, third.id]
    assert manager.active is first
    third.stop()  # a queued job is cancelled at once and never runs
    assert third.state == CANCELLED
    assert manager.wait(first, 5) and manager.wait(second, 5)
    assert second.state == DONE and third.started is None
    assert manager.latest("lr_find") is second
    assert {j.id for j in manager.jobs()} == {first.id, second.id, third.id}
    assert manager.get(second.id) is second and manager.get("nope") is None


def test_concurrent_reads_while_the_worker_writes():
    def chatty(job):
        for i in range(20_000):
            job.emit("batch", i=i)

    manager = JobManager()
    job = manager.submit(Job("train", "chatty", chatty))
    seen, errors = [], []

    def reader():
        i = 0
        try:
            while job.active or i < len(job):
                for event in job.since(i):
                    assert event.i == i  # no gaps, no repeats, in order
                    i += 1
                seen.append(i)
        except AssertionError as e:
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(10)
    assert not errors
    assert manager.wait(job, 5) and len(job) == 20_002  # started + 20,000 + done


def test_eta_from_progress():
    job = Job("train", "t", batches(1))
    assert job.eta_seconds is None
    job.started, job.state = time.time() - 10, RUNNING
    job.set_progress(1, 4)
    assert job.eta_seconds == pytest.approx(30, rel=0.05)
