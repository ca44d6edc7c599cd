"""How learning works, after the fastai book's chapter 4: a picture is numbers, the simplest baseline, gradient descent
by hand on the chapter's toy problem."""
from __future__ import annotations

import streamlit as st
import torch

from engine.data.resolve import data_name
from engine.errors import UserError
from engine.results.learning import picture_numbers, speed_data
from ui.charts_learning import loss_history_figure, pixel_grid_figure, speed_figure
from ui.charts_show import show_chart
from ui.explain import explain
from ui.frame import require_app_frame
from ui.gallery import image_grid
from ui.learning_view import (GRID_SIZES, LEARN_CLASS, LEARN_GRID, LEARN_INDEX, LEARN_LR, LEARNING_RATES,
                              averages_grid, data_baseline, descent_buttons, learning_data, phase_lines,
                              trained_accuracy, verdict)
from ui.text import md
from ui.stop import stop_page

require_app_frame("pages/learning.py")

MAX_AVERAGES = 60  # class averages drawn

st.title("How learning works")
st.caption("Three ideas from chapter 4 of the fastai book, live: what a picture is to a computer, the simplest "
           "classifier there is, and how a model learns, one step at a time.")

# ---- a picture is numbers
st.header("1 · A picture is numbers", divider="orange")
explain("learning_numbers")
try:
    spec, items, images, why_not_draft = learning_data()
except (UserError, OSError) as e:
    st.error(md(e))
    stop_page()
if why_not_draft:
    st.caption(f"The built-in digits are shown: {md(why_not_draft)}")
st.caption(f"Pictures of **{md(data_name(spec.data))}**, as Loupe holds them ({images.size} × {images.size} px).")
if LEARN_CLASS.get() not in items.classes:
    LEARN_CLASS.set(items.classes[0])
c1, c2, c3 = st.columns([2, 1, 2])
label = c1.selectbox("Class", items.classes, key=LEARN_CLASS.key)
ok = images.ok[items.image_index]
rows = [i for i, (lab, good) in enumerate(zip(items.labels, ok)) if lab == label and good]
if not rows:
    st.info(f"No picture labelled {md(label)} can be read.")
    stop_page()
LEARN_INDEX.set(min(max(1, LEARN_INDEX.get()), len(rows)))
index = c2.number_input(f"Picture (of {len(rows):,})", 1, len(rows), key=LEARN_INDEX.key)
LEARN_GRID.setdefault(LEARN_GRID.default)
size = c3.select_slider("Grid of numbers", GRID_SIZES, key=LEARN_GRID.key, format_func=lambda n: f"{n} × {n}",
                        help="The picture is shrunk to this many pixels a side: each cell is the average brightness "
                             "of the pixels it covers.")
item = rows[int(index) - 1]
pixels = torch.as_tensor(images.pixels[int(items.image_index[item])])
picture, numbers = st.columns([1, 3], gap="large")
with picture:
    image_grid(pixels[None].float() / 255, [items.rel_paths[item]], cols=1, key="gallery-learning-picture")
    st.caption(f"Shrunk to {size} × {size}, this picture is the {size * size:,} numbers beside it.")
grid = picture_numbers(pixels, int(size))
with numbers:
    show_chart(pixel_grid_figure(grid), key="learning.pixels", width="content")

# ---- the simplest baseline
st.header("2 · The simplest baseline", divider="orange")
explain("learning_baseline")
try:
    result = data_baseline(spec, items, images)
except UserError as e:
    st.error(md(e))
    stop_page()
st.caption(f"The average of each class's training pictures, shrunk to {result.size} × {result.size}. Each of the "
           f"{result.n_valid:,} validation pictures is given the class of the average it is closest to: by the mean "
           "absolute difference of their pixels (L1), or by the root-mean-square difference (L2). Accuracy on the "
           "validation pictures:")
shown = min(len(result.classes), MAX_AVERAGES)
averages_grid(result.averages[:shown], [f"{c} ({n:,})" for c, n in zip(result.classes, result.n_train)],
              key="learning-averages")
if shown < len(result.classes):
    st.caption(f"The first {shown} of {len(result.classes)} classes are shown.")
with st.container(key="learning-baseline"):
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Closest average · L1", f"{result.accuracy_l1:.1%}",
              help="Closest by the mean absolute difference, mean(|picture − average|): the book's first measure.")
    m2.metric("Closest average · L2", f"{result.accuracy_l2:.1%}",
              help="Closest by the root-mean-square difference, sqrt(mean((picture − average)²)): big differences "
                   "count more.")
    m3.metric("Always the largest class", f"{result.majority:.1%}", help="What guessing without looking scores.")
    trained = trained_accuracy(spec)
    if trained:
        m4.metric(f"Trained model (run #{trained[0]})", f"{trained[1]:.1%}",
                  delta=f"{(trained[1] - max(result.accuracy_l1, result.accuracy_l2)) * 100:+.1f} points",
                  help="Accuracy of the newest finished run on these pictures, labels and validation split.")
    else:
        m4.metric("Trained model", "—", help="No finished run on these pictures, labels and split yet.")
if result.missing:
    st.warning(f"{len(result.missing)} class(es) have no readable training picture, so no average: their validation "
               f"pictures always count as wrong ({md(', '.join(result.missing[:10]))}).")
if not trained:
    st.caption("Train a model on this data set (the Train page) to set its accuracy beside these.")

# ---- gradient descent by hand
st.header("3 · Gradient descent by hand", divider="orange")
explain("learning_descent")
st.caption("The book's toy: a roller coaster's speed measured each second for 20 seconds (with noise). Find a, b, c so "
           "that the curve a·t² + b·t + c runs through the points. Initialise always starts from the same random "
           "guess, so learning rates compare fairly.")
data = speed_data()
LEARN_LR.setdefault(LEARN_LR.default)
st.select_slider("Learning rate", LEARNING_RATES, key=LEARN_LR.key, format_func=lambda lr: f"{lr:.1e}",
                 help="How far each step moves the parameters, as a share of the gradient. The book uses 1e-05.")
state = descent_buttons(data)
chart, history = st.columns(2)
with chart:
    show_chart(speed_figure(data, state), key="learning.toy")
if state is not None and state.losses:
    with history:
        show_chart(loss_history_figure(state.losses), key="learning.loss_history")
else:
    history.caption("The loss of each step appears here.")
if state is None:
    st.info("Click **Initialise** to pick random parameters, or **Run 10 steps**.")
else:
    with st.container(key="learning-phases", border=True):
        for line in phase_lines(state, data):
            st.markdown(line)
    said = verdict(state)
    if said:
        getattr(st, said[0])(said[1])
