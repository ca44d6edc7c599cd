"""Loupe: fastai's image-classification workflow, visually. Run with `make run` (streamlit run app.py)."""
from pathlib import Path

import streamlit as st

from ui.sidebar import render_sidebar

st.set_page_config(page_title="Loupe", page_icon="assets/loupe.svg", layout="wide")
st.html(Path(__file__).with_name("assets").joinpath("loupe.css").read_text().join(("<style>", "</style>")))

page = st.navigation([
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:", default=True),
    st.Page("pages/lr_find.py", title="LR finder", icon=":material/query_stats:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/stacked_line_chart:"),
    st.Page("pages/interpret.py", title="Interpret", icon=":material/troubleshoot:"),
    st.Page("pages/clean.py", title="Clean", icon=":material/cleaning_services:"),
    st.Page("pages/predict.py", title="Predict & export", icon=":material/online_prediction:"),
])
with st.sidebar:
    st.logo("assets/loupe.svg")
render_sidebar()  # a fragment that refreshes itself, so it catches up with what the page chooses
page.run()
