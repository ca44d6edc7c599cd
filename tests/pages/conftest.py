"""Fixtures shared by the page tests: each module gets its own LOUPE_HOME and its own cached resources, and can
train a small run in it as the Train page's job does."""
from __future__ import annotations

import os
import shutil

from typing import Callable

import pytest
import streamlit as st

from engine.data.builtin import ensure_builtin
from engine.data.loaders import PresizeCache
from engine.spec import RunSpec, override
from engine.store.jobs import Job
from engine.train.run import train_target
from ui.shared import run_store


# the pages wait for their background work (folder reads, health checks) instead of drawing a progress bar, so a
# single AppTest run shows the finished page; tests of the progress bar itself set it back to 0
os.environ.setdefault("LOUPE_PAGE_WAIT_S", "300")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("loupe-home")


@pytest.fixture(scope="module", autouse=True)
def fresh_resources(home):
    """LOUPE_HOME points at this module's home, and the job manager, run store and caches start empty."""
    old = os.environ.get("LOUPE_HOME")
    os.environ["LOUPE_HOME"] = str(home)
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()
    if old is None:
        os.environ.pop("LOUPE_HOME", None)
    else:
        os.environ["LOUPE_HOME"] = old


@pytest.fixture(autouse=True)
def fresh_drafts(home):
    """Each test's window starts from Loupe's defaults, not from the draft an earlier test left behind."""
    shutil.rmtree(home / "drafts", ignore_errors=True)


# one epoch of the small model, one cycle, seeded: the small run the page tests look at
ONE_EPOCH = {"data.presize": 32, "train.schedule": "one_cycle", "train.epochs": 1, "train.lr": 3e-3, "train.seed": 0}


@pytest.fixture(scope="module")
def train_now(fresh_resources) -> Callable[..., int]:
    """train_now(title, settings): one epoch of the small model with these settings (dotted names, as
    `override` takes them) trained now in this module's run history, as the Train page's job does; its run id."""
    def train(title: str, settings: dict) -> int:
        spec = override(RunSpec(), {**ONE_EPOCH, **settings})
        job = Job("train", title, train_target(spec, PresizeCache(), run_store()))
        job.run()
        assert job.state == "done", job.error_detail
        return job.result["run_id"]
    return train


@pytest.fixture(scope="module")
def digits_run(train_now) -> int:
    """One epoch of the small model on the built-in digits, recorded in this module's run history."""
    ensure_builtin("digits-names")
    return train_now("digits", {})
