"""End a page's run early without leaving its old fragments behind.

A page that has nothing more to show (no folder chosen yet, a run still reading) ends its run with `st.stop()`. In
Streamlit 1.67 a run that ends that way skips the step that forgets the fragments it did not draw, although the
browser, told the run ended normally, drops their elements. A fragment of the run before (the health check's
progress, polled every half second) then reruns at its old place in a page that is now shorter, and the browser
stops with "Bad delta path index" and a blank page. Seen under load after a click on "A folder on this computer".

`stop_page()` forgets those fragments first, as a run that reaches its end does, then stops.
"""
from __future__ import annotations

from typing import NoReturn

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx


def forget_undrawn_fragments() -> None:
    """Forget the fragments of earlier runs that this full run has not drawn (nothing in a fragment's own rerun)."""
    ctx = get_script_run_ctx()
    if ctx is None or ctx.fragment_ids_this_run:  # no session, or a fragment's rerun: the page's other parts stay
        return
    storage, shared = getattr(ctx, "fragment_storage", None), getattr(ctx, "shared", None)
    drawn = getattr(shared, "new_fragment_ids", None)
    if storage is None or drawn is None:
        return
    storage.clear(new_fragment_ids=drawn.snapshot())


def stop_page() -> NoReturn:
    """`st.stop()`, after forgetting the fragments this run did not draw."""
    forget_undrawn_fragments()
    st.stop()
