"""The ten-minute demo script: one button per step, each opening the right page with the right settings."""
from __future__ import annotations

import streamlit as st

from ui.explain import DEMO_STEPS, explaining
from ui.draft import update_draft
from ui.state import DEMO_GOTO, EXPLAIN, VIEW_MODE


def start_step(page: str) -> None:
    """A step's button: explain as we go, set what the step needs, then open its page (on the next run)."""
    EXPLAIN.set(True)
    if page == "pages/data.py":
        update_draft({"data.source": "builtin:digits-names"})
        VIEW_MODE.set("unique")  # one digit, many augmentations
    DEMO_GOTO.set(page)


def open_demo_step() -> None:
    """Open the page of the step whose button was just pressed (on this page or in Present mode's sidebar)."""
    goto = DEMO_GOTO.pop()
    if goto is not None:
        st.switch_page(goto)


def demo_script() -> None:
    """A collapsible list of the demo's steps (open while explaining)."""
    open_demo_step()
    with st.expander("Ten-minute demo script", expanded=explaining(), icon=":material/slideshow:"):
        st.caption("For a room new to deep learning: the built-in digits, start to finish. Each button opens the "
                   "step's page; turn on *Explain as I go* in the sidebar for notes on every page.")
        for i, (label, page, say) in enumerate(DEMO_STEPS):
            c1, c2 = st.columns([2, 3], vertical_alignment="center")
            c1.button(label, key=f"demo.step.{i}", width="stretch", on_click=start_step, args=(page,))
            c2.caption(say)
