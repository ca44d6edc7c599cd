"""Draft specs: one per window id, saved as they change, the latest one for a new window, ids never paths."""
from __future__ import annotations

import os

import pytest

from engine.drafts import DraftStore, new_draft_id, valid_draft_id
from engine.spec import RunSpec, override


def test_drafts_are_kept_per_window_and_the_latest_starts_a_new_one(tmp_path):
    store = DraftStore(tmp_path)
    assert store.latest() is None and store.load(new_draft_id()) is None
    a, b = new_draft_id(), new_draft_id()
    assert a != b and valid_draft_id(a)
    store.save(a, override(RunSpec(), {"train.epochs": 7}))
    store.save(b, override(RunSpec(), {"train.epochs": 9}))
    os.utime(tmp_path / f"{a}.json", (1, 1))  # a is the older one
    assert store.load(a).train.epochs == 7 and store.load(b).train.epochs == 9
    assert store.latest().train.epochs == 9
    again = DraftStore(tmp_path)  # a restarted server reads the same drafts
    assert again.load(a).train.epochs == 7


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF012345", "abc", "", None, 12, "0123456789ab/"])
def test_ids_from_a_page_address_are_never_paths(tmp_path, bad):
    assert not valid_draft_id(bad)
    with pytest.raises(ValueError):
        DraftStore(tmp_path).load(bad)


def test_a_damaged_or_newer_draft_is_skipped(tmp_path):
    store = DraftStore(tmp_path)
    good, bad = new_draft_id(), new_draft_id()
    store.save(good, RunSpec())
    (tmp_path / f"{bad}.json").write_text('{"version": 99}')
    assert store.load(bad) is None and store.latest() == RunSpec()
