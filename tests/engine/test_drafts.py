"""Draft specs: one per window id, saved as they change, the latest one for a new window, ids never paths."""
from __future__ import annotations

import os
import threading

import pytest

from engine.store.drafts import DraftStore, new_draft_id, valid_draft_id
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


def test_two_windows_saving_one_draft_at_once_never_fail_or_leave_half_a_file(tmp_path):
    """Two tabs on one draft address save it at the same moment: each save completes, the file is always whole."""
    store = DraftStore(tmp_path)
    draft_id = new_draft_id()
    specs = [override(RunSpec(), {"train.epochs": n}) for n in range(1, 9)]
    errors: list[BaseException] = []

    def save_many(spec: RunSpec) -> None:
        try:
            for _ in range(40):
                store.save(draft_id, spec)
                assert store.load(draft_id) in specs
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=save_many, args=(spec,)) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.load(draft_id) in specs
    assert [p.name for p in tmp_path.iterdir()] == [f"{draft_id}.json"]  # no temporary file left behind
