"""A page run that ends early (ui/stop.py) forgets the fragments it did not draw, as a run that reaches its end does.

Streamlit 1.67 keeps them after `st.stop()`: a polling fragment of the run before then reruns at its old place in a
shorter page, and the browser stops with "Bad delta path index" (a blank page)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def page(stop_with: str) -> None:
    """A long page with a polling fragment at its end; `short` makes it stop early, before the fragment."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from ui.stop import stop_page

    ctx = get_script_run_ctx()
    earlier = st.session_state.get("fragments", set())
    st.session_state["kept"] = sorted(f for f in earlier if ctx.fragment_storage.contains(f))
    if st.session_state.get("short"):
        st.write("nothing more to show")
        stop_page() if stop_with == "stop_page" else st.stop()
    for i in range(5):
        st.write(i)

    @st.fragment(run_every=600)
    def progress() -> None:
        st.write("polling")

    progress()
    st.session_state["fragments"] = set(ctx.shared.new_fragment_ids.snapshot())


def runs(stop_with: str) -> list[str]:
    """The long page, then the short one twice; the earlier fragments still kept when the third run starts."""
    at = AppTest.from_function(page, args=(stop_with,), default_timeout=60)
    at.run()
    assert not at.exception and at.session_state["fragments"]
    at.session_state["short"] = True
    at.run()
    at.run()
    assert not at.exception
    return at.session_state["kept"]


def test_stop_page_forgets_the_fragments_a_stopped_run_did_not_draw():
    assert runs("stop_page") == []


def test_plain_st_stop_keeps_them_in_this_streamlit():
    # what stop_page is for; when a Streamlit release forgets them by itself, stop_page can become st.stop again
    assert runs("st.stop") != []
