"""Loupe: fastai's image-classification workflow, visually. Run with `make run` (streamlit run app.py)."""
import streamlit as st

from ui.sidebar import render_sidebar

st.set_page_config(page_title="Loupe", page_icon="assets/loupe.svg", layout="wide")

page = st.navigation([
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:", default=True),
])
with st.sidebar:
    st.logo("assets/loupe.svg")
page.run()
render_sidebar()  # after the page, so it shows what the page just chose
