"""The window's draft run spec, kept under its id (`?draft=` in the page address), and the widgets bound to it:
`draft()`, `update_draft({...})`, `st.slider(..., **bind("train.epochs"))`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import streamlit as st

from engine.data.sources import is_downloaded
from engine.errors import UserError
from engine.data.resolve import data_root, resolve
from engine.spec import RunSpec, get, override
from engine.store.drafts import new_draft_id, valid_draft_id
from ui.shared import draft_store
from ui.state import DRAFT, DRAFT_ID, MOVED_BY_USER, PUSHED

_LOG = logging.getLogger("loupe.widgets")


def window_id() -> str:
    """This window's id: its draft's id, kept in the page address (`?draft=`) so reloads and restarts keep it.

    A window opened without one starts a new draft from the latest saved one.
    """
    draft_id = DRAFT_ID.get()
    if draft_id is None:
        asked = st.query_params.get("draft")
        store = draft_store()
        if valid_draft_id(asked):
            draft_id = asked
            if store.load(draft_id) is None:
                store.save(draft_id, store.latest() or RunSpec())
        else:
            draft_id = new_draft_id()
            store.save(draft_id, store.latest() or RunSpec())
        DRAFT_ID.set(draft_id)
    if st.query_params.get("draft") != draft_id:
        st.query_params["draft"] = draft_id
    return draft_id


def draft() -> RunSpec:
    """The settings this window is working on (automatic ones still None)."""
    spec = DRAFT.get()
    if spec is None:
        spec = draft_store().load(window_id()) or RunSpec()
        DRAFT.set(spec)
    return spec


def set_draft(spec: RunSpec) -> None:
    """Replace the draft (saved at once under LOUPE_HOME/drafts, so a reload or a restart comes back to it)."""
    DRAFT.set(spec)
    draft_store().save(window_id(), spec)


def update_draft(changes: dict[str, Any]) -> RunSpec:
    """Change settings of the draft by dotted name; a part still automatic (None) is filled in first."""
    spec = draft()
    for name in changes:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if get(spec, parent) is None:
                spec = override(spec, {parent: get(view_spec(spec), parent)})
    spec = override(spec, changes)
    set_draft(spec)
    return spec


def source_ready(spec: RunSpec) -> bool:
    """Whether the draft's images can be read now (a folder exists, a fastai set is downloaded)."""
    data = spec.data
    if not data.source:
        return False
    if data.kind == "builtin":
        return True
    if data.kind == "fastai":
        return is_downloaded(data.key.upper())
    return data_root(data).is_dir()


def view_spec(spec: RunSpec | None = None) -> RunSpec:
    """The draft with its automatic settings filled in, as the widgets show them."""
    spec = spec or draft()
    if not source_ready(spec):
        return spec
    try:
        return _resolved(spec.to_json())
    except (UserError, OSError):  # e.g. a folder with no images: the Data page says what is wrong
        return spec


@st.cache_data(max_entries=16, show_spinner=False)
def _resolved(spec_json: str) -> RunSpec:
    # never scans a folder (the sidebar asks on every page): the Data page writes a new folder's rules into the draft
    return resolve(RunSpec.from_json(spec_json), guess_rules=False)


def widget_key(name: str, part: str = "") -> str:
    """The session key of the widget bound to a draft setting (`part` tells apart widgets showing parts of one)."""
    return f"spec.{name}" + (f".{part}" if part else "")


def bind(name: str, to_widget: Callable[[Any], Any] = lambda v: v,
         from_widget: Callable[[Any], Any] = lambda v: v, part: str = "") -> dict:
    """Keyword arguments that bind a widget to a draft setting: its value comes from the draft, changes go back to it."""
    key = widget_key(name, part)
    take_missed_change(key, lambda: to_widget(get(view_spec(), name)), lambda v: update_draft({name: from_widget(v)}))
    value = to_widget(get(view_spec(), name))
    pushed = PUSHED.get()
    before = pushed.get(key)
    if key in MOVED_BY_USER.get():
        # the user moved it: going back to its earlier value later is a choice, never a stale echo
        MOVED_BY_USER.get().discard(key)
        pushed[key] = (None, value)
    elif before is None or before[1] != value:  # the page moves the widget (e.g. an automatic LR follows the schedule)
        pushed[key] = (None if before is None else before[1], value)
    st.session_state[key] = value
    return {"key": key, "on_change": _widget_changed, "args": (name, key, from_widget)}


def take_missed_change(key: str, draft_value: Callable[[], Any], apply: Callable[[Any], None]) -> bool:
    """Take a value the browser sent for a widget whose change callback never ran; True if there was one.

    Streamlit can deliver a widget's new value without calling its `on_change` (e.g. a change that arrives while a
    run is being replaced); the page would then draw the draft's old value over it and the click or the typed value
    would be lost. Called before the widget is drawn: a value that is neither what the page last showed, nor the
    draft's, nor the value the page replaced (a stale echo) is the user's, and goes to the draft now.
    """
    shown = PUSHED.get().get(key)
    if shown is None or key not in st.session_state:
        return False  # drawn for the first time (or not kept since): nothing can have been missed
    value, (previous, current) = st.session_state[key], shown
    if _same(value, current) or _same(value, draft_value()):
        return False  # as shown, or the callback has taken it
    if previous is not None and _same(value, previous):
        return False  # the browser's echo of the value the page replaced
    _LOG.warning("taking a change to %s that arrived without its callback", key)
    apply(value)
    MOVED_BY_USER.get().add(key)
    return True


def shown(key: str, value: Any) -> None:
    """Record that the page shows `value` in the widget `key` (for widgets bound by hand, not by `bind`)."""
    before = PUSHED.get().get(key)
    if before is None or not _same(before[1], value):
        PUSHED.get()[key] = (None if before is None else before[1], value)


def _same(a: Any, b: Any) -> bool:
    """Widget values compared as the browser sends them back (a range slider's tuple returns as a list)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def _widget_changed(name: str, key: str, from_widget: Callable[[Any], Any]) -> None:
    value = st.session_state[key]
    pushed = PUSHED.get()
    previous, current = pushed.get(key, (None, None))
    others_changed = any(other != key and other in st.session_state and not _same(st.session_state[other], shown)
                         for other, (_, shown) in pushed.items())
    if previous is not None and _same(value, previous) and not _same(value, current) and others_changed:
        # the browser sent back the value the page had just replaced, together with the change the user made
        # elsewhere (they clicked on before the new value arrived): a stale echo, not a choice
        pushed[key] = (None, current)
        st.session_state[key] = current
        return
    update_draft({name: from_widget(value)})
    MOVED_BY_USER.get().add(key)  # bind() records the new value as the user's, not as the page's move
