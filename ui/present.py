"""Present: Loupe on a projector. Larger type, technical tables folded away, charts at full width, and the demo
script's steps in the sidebar of every page."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st

from ui.demo_script import start_step
from ui.explain import DEMO_STEPS
from ui.state import SessionKey

PRESENT = SessionKey[bool]("present.on", False)
FONT_PX = 21  # Streamlit's sizes are in rem of the page's 16 px: a third larger, readable from the back of a room
GRID_COLS, GRID_PX = 3, 200  # while presenting, pictures of a grid: at most 3 to a row, 200 px wide
CSS = f"""<style>/* loupe-present */
html {{ font-size: {FONT_PX}px !important; }}
.st-key-present-steps {{ gap: 0.3rem; }}
.st-key-present-steps button {{ min-height: 0; padding: 0.1rem 0.6rem; justify-content: flex-start; }}
.st-key-present-steps button p {{ font-size: 0.8rem; text-align: left; }}
/* the larger type no longer fits one line in a narrow column: labels wrap instead of ending in "…" */
[data-testid="stMain"] [data-testid="stWidgetLabel"], [data-testid="stMain"] [data-testid="stWidgetLabel"] *,
[data-testid="stMain"] button [data-testid="stMarkdownContainer"], [data-testid="stMain"] button [data-testid="stMarkdownContainer"] *,
[data-testid="stMain"] [data-testid="stPageLink"] span, [data-testid="stMain"] [data-testid="stPageLink"] p,
[data-testid="stMain"] [data-testid="stMetricLabel"], [data-testid="stMain"] [data-testid="stMetricLabel"] * {{
  white-space: normal; overflow: visible; text-overflow: clip; }}
[data-testid="stMain"] button {{ padding-left: 0.35rem; padding-right: 0.35rem; }}
</style>"""


def presenting() -> bool:
    """Whether this window is in Present mode."""
    return bool(PRESENT.get())


def grid_cols(cols: int) -> int:
    """Pictures to a row: `cols`, or fewer while presenting (the larger type leaves a narrow column too little room
    for a caption such as "emblems/mimetypes / 6.55 / 0.27", which then broke mid-word)."""
    return min(cols, GRID_COLS) if presenting() else cols


def grid_px(px: int) -> int:
    """How wide a grid's picture is shown: `px`, or GRID_PX while presenting."""
    return max(px, GRID_PX) if presenting() else px


def present_toggle() -> None:
    """The sidebar's switch, and the larger type while it is on."""
    PRESENT.setdefault(False)
    st.toggle("Present", key=PRESENT.key, persist_state="session",
              help="For a projector: larger type, technical tables folded away, charts at full width and the demo "
                   "script's steps here in the sidebar.")
    if presenting():
        st.html(CSS)


@contextmanager
def technical(label: str) -> Iterator[None]:
    """A technical table's place: folded into a closed expander while presenting, as it is otherwise."""
    if presenting():
        with st.expander(label, expanded=False, icon=":material/table:"):
            yield
    else:
        yield


def step_bar(current: str) -> None:
    """The demo script's steps while presenting, the shown page's step highlighted; each button opens its step.

    `current` is the shown page's file name without '.py' ('train')."""
    if not presenting():
        return
    with st.container(key="present-steps"):
        st.caption("Demo script")
        for i, (label, page, say) in enumerate(DEMO_STEPS):
            here = Path(page).stem == current
            st.button(label.split(":")[0], key=f"present.step.{i}", type="primary" if here else "secondary",
                      width="stretch", on_click=start_step, args=(page,), help=say)
            if here:
                st.caption(say)
