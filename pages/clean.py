"""Clean: keep, delete (to a trash folder) or relabel images a model, the health check or a search for likely wrong
labels points at; undo any time."""
from __future__ import annotations

import streamlit as st

from ui.explain import explain
from ui.clean_view import (HARDEST, HEALTH, ISSUES, VIEWS, adopt_health_handoff, apply_bar, hardest_view, health_view,
                           history_panel, pending_choices, reset_panel)
from ui.frame import require_app_frame
from ui.label_issues_view import issues_view
from ui.state import CLEAN_MESSAGE, CLEAN_VIEW
from ui.text import md
from ui.stop import stop_page

require_app_frame("pages/clean.py")

st.title("Clean")
st.caption("Deleted images go to a trash folder inside the data set, and every change can be undone.")
explain("clean")
adopt_health_handoff()  # the Data page's health check may have sent its list here
if CLEAN_MESSAGE.is_set():
    st.success(md(CLEAN_MESSAGE.pop()))
if CLEAN_VIEW.get() not in VIEWS:
    CLEAN_VIEW.set(HARDEST)
view = st.segmented_control("Images", list(VIEWS), format_func=VIEWS.get, key=CLEAN_VIEW.key, required=True)
target = {HARDEST: hardest_view, HEALTH: health_view, ISSUES: issues_view}[view]()
if target is None:
    stop_page()
apply_bar(target, pending_choices(target))
history_panel(target.root)
reset_panel(target.root)
