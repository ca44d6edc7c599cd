"""Interpret: where a trained model is wrong. Top losses, confusion matrix, per-class scores, most unsure, Grad-CAM."""
from __future__ import annotations

import streamlit as st

from engine.interpret import confusion_matrix, items_in_cell, most_confused, most_unsure, per_class_metrics, top_losses
from ui.charts_interpret import class_metrics_figure, confusion_figure
from ui.frame import require_app_frame
from ui.gallery import review_gallery
from ui.run_picker import pick_review

require_app_frame("pages/interpret.py")

KEEP = dict(persist_state="session")
MAX_CELL_IMAGES = 50

st.title("Interpret")
st.caption("Where is the model wrong, and how sure was it? Everything here is computed on the validation images.")
run, review = pick_review()
p = review.preds
wrong = int((p.preds != p.targets).sum())
st.caption(f"{len(p):,} validation images · {wrong:,} wrong · accuracy {p.accuracy:.1%} "
           "(the data as it is on disk now, so cleaning shows up here at once)")
cam = st.toggle("Grad-CAM: colour where the model looked", key="interpret.gradcam", **KEEP,
                help="Red marks the regions that pushed the model most towards its prediction "
                     "(gradients of that class on the last convolutional block).")


def positions(indices) -> list[int]:
    """dls positions of prediction indices (for the image galleries)."""
    return review.valid_pos[list(indices)].tolist()


top_tab, confusion_tab, class_tab, unsure_tab = st.tabs(["Top losses", "Confusion matrix", "Per class", "Most unsure"])

with top_tab:
    top_k_max = min(100, len(p))
    st.session_state["interpret.k"] = min(st.session_state.get("interpret.k", 9), top_k_max)  # a smaller run
    k = st.number_input("Images to show (k)", 1, top_k_max, key="interpret.k", **KEEP)
    table = top_losses(p, int(k))
    st.caption("Each image is titled **prediction / actual / loss / probability** of the prediction, as fastai's plot_top_losses.")
    titles = [f"{r.predicted}/{r.actual} / {r.loss:.2f} / {r.probability:.2f}" for r in table.itertuples()]
    review_gallery(review, positions(table["index"]), titles, key="gallery-top_losses", cam=cam)
    with st.expander("As a table"):
        st.dataframe(table.drop(columns="index"), hide_index=True)

with confusion_tab:
    normalise = st.toggle("Normalise each row (share of the actual class)", key="interpret.normalise", **KEEP)
    cm = confusion_matrix(p)
    event = st.plotly_chart(confusion_figure(cm, p.classes, normalise), key="interpret.confusion", width="content",
                            on_select="rerun", selection_mode="points", config={"displayModeBar": False})
    points = event.selection.points if event and event.selection else []
    if points:
        clicked = (str(points[0]["y"]), str(points[0]["x"]))
        if clicked != st.session_state.get("interpret.clicked"):  # a new click picks the cell below
            st.session_state["interpret.clicked"] = clicked
            st.session_state["interpret.actual"], st.session_state["interpret.predicted"] = clicked
    st.caption("Click a cell to see its images, or choose it here:")
    c1, c2 = st.columns(2)
    if st.session_state.get("interpret.actual") not in p.classes:  # first visit, or another run's classes
        st.session_state["interpret.actual"] = p.classes[0]
    if st.session_state.get("interpret.predicted") not in p.classes:
        st.session_state["interpret.predicted"] = p.classes[min(1, len(p.classes) - 1)]
    actual = c1.selectbox("Actual class", p.classes, key="interpret.actual")
    predicted = c2.selectbox("Predicted class", p.classes, key="interpret.predicted")
    cell = items_in_cell(p, actual, predicted)
    st.markdown(f"**{len(cell):,} image(s) of {actual} predicted as {predicted}**"
                + (f" (the {MAX_CELL_IMAGES} with the largest loss shown)" if len(cell) > MAX_CELL_IMAGES else ""))
    if cell:
        cell = sorted(cell, key=lambda i: -p.losses[i].item())[:MAX_CELL_IMAGES]
        titles = [f"{p.items[i].rsplit('/', 1)[-1]} / {p.losses[i].item():.2f}" for i in cell]
        review_gallery(review, positions(cell), titles, key="gallery-cell", cam=cam)

    st.subheader("Most confused")
    st.session_state["interpret.min_val"] = min(st.session_state.get("interpret.min_val", 1), max(1, len(p)))
    min_val = st.number_input("Show pairs confused at least this many times (min_val)", 1, max(1, len(p)),
                              key="interpret.min_val", **KEEP)
    pairs = most_confused(p, int(min_val))
    if pairs:
        st.dataframe([{"actual": a, "predicted": b, "images": n} for a, b, n in pairs], hide_index=True,
                     key="interpret.most_confused")
    else:
        st.caption(f"No pair of classes is confused {int(min_val)} time(s) or more.")

with class_tab:
    metrics = per_class_metrics(p)
    st.plotly_chart(class_metrics_figure(metrics), key="interpret.class_chart")
    st.dataframe(metrics.reset_index(), hide_index=True, key="interpret.class_table", column_config={
        name: st.column_config.NumberColumn(name, format="%.3f") for name in ("precision", "recall", "f1")})
    st.caption("Precision: of the images predicted as a class, the share that are it. Recall: of the images of a class, "
               "the share found. F1: their harmonic mean. Support: validation images of the class.")

with unsure_tab:
    st.session_state["interpret.unsure_k"] = min(st.session_state.get("interpret.unsure_k", 9), top_k_max)
    k_unsure = st.number_input("Images to show", 1, top_k_max, key="interpret.unsure_k", **KEEP)
    unsure = most_unsure(p, int(k_unsure))
    st.caption("The images whose two most likely classes are closest: **prediction p / runner-up p**.")
    titles = [f"{r.predicted} {r.probability:.2f} / {r.runner_up} {r.runner_up_probability:.2f}" for r in unsure.itertuples()]
    review_gallery(review, positions(unsure["index"]), titles, key="gallery-unsure", cam=cam)
