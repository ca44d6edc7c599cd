"""Glossary: the words of a deep-learning demo, in plain language (the guided mode's notes link here)."""
from __future__ import annotations

import streamlit as st

from ui.explain import GLOSSARY, slug
from ui.frame import require_app_frame

require_app_frame("pages/glossary.py")

st.title("Glossary")
st.caption("The words you will hear during a demo, in plain language.")
for term, meaning in sorted(GLOSSARY.items()):
    st.subheader(term[0].upper() + term[1:], anchor=slug(term))
    st.write(meaning)
