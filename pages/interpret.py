"""Interpret: where a trained model is wrong. Top losses, confusion matrix, per-class scores, most unsure, Grad-CAM."""
from __future__ import annotations

import streamlit as st

from engine.results.interpret import cell_items, confusion_matrix, most_confused, most_unsure, per_class_metrics, top_losses
from ui.charts_interpret import class_metrics_figure, clicked_cell, confusion_figure
from ui.charts_show import show_chart
from ui.explain import explain
from ui.frame import require_app_frame
from ui.gallery import review_gallery
from ui.present import technical
from ui.run_picker import pick_review
from ui.state import (INTERPRET_ACTUAL, INTERPRET_CAM, INTERPRET_CLICKED, INTERPRET_K, INTERPRET_MIN_VAL,
                      INTERPRET_NORMALISE, INTERPRET_PREDICTED, INTERPRET_UNSURE_K)
from ui.text import md
from ui.train_view import kept_model_caption

require_app_frame("pages/interpret.py")

KEEP = dict(persist_state="session")
MAX_CELL_IMAGES = 50

st.title("Interpret")
explain("interpret")
st.caption("Where is the model wrong, and how sure was it? Everything here is computed on the validation images.")
run, review = pick_review()
p = review.preds
wrong = int((p.preds != p.targets).sum())
st.caption(f"{kept_model_caption(run)} {len(p):,} validation images · {wrong:,} wrong · accuracy {p.accuracy:.1%} "
           "(the data as it is on disk now, so cleaning shows up here at once)")
cam = st.toggle("Grad-CAM: colour where the model looked", key=INTERPRET_CAM.key, **KEEP,
                help="Red marks the regions that pushed the model most towards its prediction "
                     "(gradients of that class on the last convolutional block).")


top_tab, confusion_tab, class_tab, unsure_tab = st.tabs(["Top losses", "Confusion matrix", "Per class", "Most unsure"])

with top_tab:
    top_k_max = min(100, len(p))
    INTERPRET_K.set(min(INTERPRET_K.get(), top_k_max))  # a smaller run
    k = st.number_input("Images to show (k)", 1, top_k_max, key=INTERPRET_K.key, **KEEP)
    table = top_losses(p, int(k))
    st.caption("Each image is titled **prediction / actual / loss / probability** of the prediction, as fastai's plot_top_losses.")
    titles = [f"{r.predicted}/{r.actual} / {r.loss:.2f} / {r.probability:.2f}" for r in table.itertuples()]
    review_gallery(review, table["pos"].tolist(), titles, key="gallery-top_losses", cam=cam)
    with st.expander("As a table"):
        st.dataframe(table.drop(columns=["index", "pos"]), hide_index=True)

with confusion_tab:
    normalise = st.toggle("Normalise each row (share of the actual class)", key=INTERPRET_NORMALISE.key, **KEEP)
    cm = confusion_matrix(p)
    event = show_chart(confusion_figure(cm, p.classes, normalise), key="interpret.confusion", width="content",
                       on_select="rerun", selection_mode="points")
    points = event.selection.points if event and event.selection else []
    clicked = clicked_cell(points[0], p.classes) if points else None
    if clicked:
        if clicked != INTERPRET_CLICKED.get():  # a new click picks the cell below
            INTERPRET_CLICKED.set(clicked)
            INTERPRET_ACTUAL.set(clicked[0])
            INTERPRET_PREDICTED.set(clicked[1])
    st.caption("Click a cell to see its images, or choose it here:")
    c1, c2 = st.columns(2)
    if INTERPRET_ACTUAL.get() not in p.classes:  # first visit, or another run's classes
        INTERPRET_ACTUAL.set(p.classes[0])
    if INTERPRET_PREDICTED.get() not in p.classes:
        INTERPRET_PREDICTED.set(p.classes[min(1, len(p.classes) - 1)])
    actual = c1.selectbox("Actual class", p.classes, key=INTERPRET_ACTUAL.key)
    predicted = c2.selectbox("Predicted class", p.classes, key=INTERPRET_PREDICTED.key)
    cell = cell_items(p, actual, predicted)
    st.markdown(f"**{len(cell):,} image(s) of {md(actual)} predicted as {md(predicted)}**"
                + (f" (the {MAX_CELL_IMAGES} with the largest loss shown)" if len(cell) > MAX_CELL_IMAGES else ""))
    if len(cell):
        shown = cell.head(MAX_CELL_IMAGES)
        titles = [f"{item.rsplit('/', 1)[-1]} / {loss:.2f}" for item, loss in zip(shown["item"], shown["loss"])]
        review_gallery(review, shown["pos"].tolist(), titles, key="gallery-cell", cam=cam)

    st.subheader("Most confused")
    INTERPRET_MIN_VAL.set(min(INTERPRET_MIN_VAL.get(), max(1, len(p))))
    min_val = st.number_input("Show pairs confused at least this many times (min_val)", 1, max(1, len(p)),
                              key=INTERPRET_MIN_VAL.key, **KEEP)
    pairs = most_confused(p, int(min_val))
    if pairs:
        with technical("Most confused pairs, as a table"):
            st.dataframe([{"actual": a, "predicted": b, "images": n} for a, b, n in pairs], hide_index=True,
                         key="interpret.most_confused")
    else:
        st.caption(f"No pair of classes is confused {int(min_val)} time(s) or more.")

with class_tab:
    metrics = per_class_metrics(p)
    show_chart(class_metrics_figure(metrics), key="interpret.class_chart")
    with technical("Per-class scores, as a table"):
        st.dataframe(metrics.reset_index(), hide_index=True, key="interpret.class_table", column_config={
            name: st.column_config.NumberColumn(name, format="%.3f") for name in ("precision", "recall", "f1")})
    st.caption("Precision: of the images predicted as a class, the share that are it. Recall: of the images of a class, "
               "the share found. F1: their harmonic mean. Support: validation images of the class.")

with unsure_tab:
    INTERPRET_UNSURE_K.set(min(INTERPRET_UNSURE_K.get(), top_k_max))
    k_unsure = st.number_input("Images to show", 1, top_k_max, key=INTERPRET_UNSURE_K.key, **KEEP)
    unsure = most_unsure(p, int(k_unsure))
    st.caption("The images whose two most likely classes are closest: **prediction p / runner-up p**.")
    titles = [f"{r.predicted} {r.probability:.2f} / {r.runner_up} {r.runner_up_probability:.2f}" for r in unsure.itertuples()]
    review_gallery(review, unsure["pos"].tolist(), titles, key="gallery-unsure", cam=cam)
