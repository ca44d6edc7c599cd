"""Fixtures for the whole suite."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def loupe_home_for_the_suite(tmp_path_factory):
    """Loupe's files (the presize cache, runs, drafts) go to a temporary folder, never the real ~/.cache/loupe;
    tests that need their own LOUPE_HOME still set it."""
    if "LOUPE_HOME" not in os.environ:
        os.environ["LOUPE_HOME"] = str(tmp_path_factory.mktemp("loupe-home-suite"))
    yield
