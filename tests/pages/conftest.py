"""Fixtures shared by the page tests: each module gets its own LOUPE_HOME and its own cached resources."""
from __future__ import annotations

import os
import shutil

import pytest
import streamlit as st


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
