"""The chosen data set as the sidebar and later pages see it: its summary (usable images per split), what is wrong
with it, or that it is still being read."""
from __future__ import annotations

import json
from dataclasses import dataclass

from engine.data.builtin import ensure_builtin
from engine.data.data_prep import folder_stamp
from engine.data.loaders import DataCounts, label_items, usable_counts
from engine.errors import UserError, plain_reason
from engine.data.resolve import data_name, data_root
from engine.spec import RunSpec
from ui.draft import source_ready, view_spec, window_id
from ui.shared import data_prep
from ui.state import DATA_SUMMARY


@dataclass(frozen=True)
class DataSummary:
    """What the sidebar and later pages show of the chosen data set: the usable images (engine.data.loaders.usable_counts)."""

    name: str
    root: str
    classes: tuple[str, ...]
    n_train: int
    n_valid: int
    n_unreadable: int = 0


PENDING = "pending"  # the data set is still being read in the background


def _summary_key(spec: RunSpec) -> tuple[str, str]:
    """What the counts depend on: the data settings and the folder as it is (the cleaner's changes, pictures added)."""
    return json.dumps(spec.to_dict()["data"]), folder_stamp(data_root(spec.data))


def remember_data(spec: RunSpec, counts: DataCounts) -> None:
    """The Data page tells the others the counts it shows (usable images per split, after unreadable files)."""
    DATA_SUMMARY.set((_summary_key(spec), _summary(spec, counts)))


def _summary(spec: RunSpec, counts: DataCounts) -> DataSummary:
    return DataSummary(name=data_name(spec.data), root=str(data_root(spec.data)), classes=counts.classes, n_train=counts.n_train,
                       n_valid=counts.n_valid, n_unreadable=counts.n_unreadable)


def data_status(wait: float | None = None) -> DataSummary | str | None:
    """The draft's data set: its summary, the message of what is wrong with it, PENDING while it is read in the
    background for longer than `wait` seconds (None: wait for it), or None while none is chosen."""
    spec = view_spec()
    if not source_ready(spec) or spec.data.label is None:
        return None
    key = _summary_key(spec)
    known = DATA_SUMMARY.get()
    if known and known[0] == key:
        return known[1]
    try:
        if spec.data.kind == "builtin":
            ensure_builtin(spec.data.key)  # written on first use, as the Data page would
        read = data_prep().read(data_root(spec.data), spec.data.presize, spec.data.presize_method, owner=window_id())
        if not read.wait(wait):
            return PENDING
        if read.failed or read.images is None:
            raise UserError(read.failed or f"Reading {data_root(spec.data)} was stopped; open the Data page to read it again.")
        items = label_items(read.scan, spec.data.label, spec.data.split)
    except (UserError, OSError, ValueError) as e:
        status: DataSummary | str = plain_reason(e)
    else:
        status = _summary(spec, usable_counts(items, read.images))
    DATA_SUMMARY.set((key, status))
    return status


def data_summary() -> DataSummary | None:
    """The summary of the draft's data set: the Data page's, or computed now (after a reload or a restart)."""
    status = data_status()
    return status if isinstance(status, DataSummary) else None


def data_problem() -> str | None:
    """What is wrong with the draft's data settings (a bad label rule, a missing folder…), if anything."""
    status = data_status()
    return status if isinstance(status, str) and status != PENDING else None


def run_spec() -> RunSpec | None:
    """The draft, resolved, if its data set can be used (else None: the pages send the user to the Data page)."""
    spec = view_spec()
    if data_summary() is None:
        return None
    return spec
