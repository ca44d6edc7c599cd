"""Loupe: fastai's image-classification workflow, visually. Run with `make run` (streamlit run app.py)."""
from ui.frame import app_frame

app_frame().run()
