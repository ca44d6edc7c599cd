"""Clean: go through the images a model finds hardest, and keep, delete (to a trash folder) or relabel them; undo any
time."""
from __future__ import annotations

import streamlit as st

from ui.clean_view import apply_bar, hardest_view, history_panel, pending_choices, reset_panel
from ui.frame import require_app_frame
from ui.state import CLEAN_MESSAGE
from ui.text import md

require_app_frame("pages/clean.py")

st.title("Clean")
st.caption("Deleted images go to a trash folder inside the data set, and every change can be undone.")
if CLEAN_MESSAGE.is_set():
    st.success(md(CLEAN_MESSAGE.pop()))
target = hardest_view()
apply_bar(target, pending_choices(target))
history_panel(target.root)
reset_panel(target.root)
