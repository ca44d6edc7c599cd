"""The app's frame (page config, styles, navigation, sidebar), and a guard that keeps every page inside it.

Streamlit still knows the old `pages/` folder convention: on a freshly started server, a browser that
opens /train directly (a bookmark, a tab restored after `make run` restarts) runs pages/train.py on
its own, without app.py, so the navigation and sidebar would be missing. Each page calls
`require_app_frame` first: in a session that has not been through app.py yet, it goes through app.py,
which then opens the page that was asked for.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.demo_script import open_demo_step
from ui.explain import explain_toggle
from ui.present import present_toggle, step_bar
from ui.sidebar import render_sidebar
from ui.draft import window_id
from ui.shared import server_started
from ui.state import FRAMED, INTENDED_PAGE

ROOT = Path(__file__).resolve().parents[1]


def app_frame():
    """Page config, styles, the navigation and the shared sidebar; returns the page to run."""
    st.set_page_config(page_title="Loupe", page_icon=str(ROOT / "assets/loupe.svg"), layout="wide")
    st.html((ROOT / "assets/loupe.css").read_text().join(("<style>", "</style>")))
    pages = [
        st.Page("pages/data.py", title="Data", icon=":material/photo_library:", default=True),
        st.Page("pages/camera.py", title="Camera", icon=":material/photo_camera:"),
        st.Page("pages/lr_find.py", title="LR finder", icon=":material/query_stats:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/experiment.py", title="Compare", icon=":material/compare:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/stacked_line_chart:"),
        st.Page("pages/interpret.py", title="Interpret", icon=":material/troubleshoot:"),
        st.Page("pages/inside.py", title="Look inside", icon=":material/layers:"),
        st.Page("pages/clean.py", title="Clean", icon=":material/cleaning_services:"),
        st.Page("pages/predict.py", title="Predict & export", icon=":material/online_prediction:"),
        st.Page("pages/learning.py", title="How learning works", icon=":material/school:"),
        st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:"),
    ]
    # Loupe draws its own navigation (showSidebarNavigation is off in .streamlit/config.toml): Streamlit's would
    # first show the pages/ folder's raw file names for a moment on every first load
    page = st.navigation(pages, position="hidden")
    server_started()
    FRAMED.set(True)
    window_id()  # this window's draft: its id goes into the page address
    intended = INTENDED_PAGE.pop()
    if intended is not None:  # a page opened by its address came through here: open it now
        st.switch_page(intended, query_params={"draft": window_id()})
    open_demo_step()  # a demo step's button was pressed (the Data page's script, or Present mode's step bar)
    with st.sidebar:
        st.logo(str(ROOT / "assets/loupe.svg"))
        with st.container(key="loupe-nav"):
            for p in pages:
                st.page_link(p)
        explain_toggle()
        present_toggle()
        step_bar(page.url_path or "data")  # the default page's address is the bare one
    render_sidebar()  # a fragment that refreshes itself, so it catches up with what the page chooses
    return page


def require_app_frame(page_file: str) -> None:
    """Called first by each page (`page_file` relative to app.py): a session new to app.py goes through it."""
    if FRAMED.get():
        return
    INTENDED_PAGE.set(page_file)
    window_id()  # read the draft id from this address before the switch leaves it behind
    st.switch_page("app.py", query_params={"draft": window_id()})
