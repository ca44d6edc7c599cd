"""Predict & export: a run's top-5 classes for your own images, and its model to take away (zip or ONNX)."""
from __future__ import annotations

import io

import streamlit as st

from engine.errors import UserError
from engine.train.export import predict
from engine.data.images import decode, fit_to_box, open_image
from ui.charts_interpret import top_k_figure
from ui.charts_show import show_chart
from ui.export_buttons import export_buttons
from ui.explain import explain
from ui.frame import require_app_frame
from ui.run_picker import pick_model
from ui.text import md
from ui.run_cache import run_review
from ui.state import PREDICT_CAMERA, PREDICT_SOURCE, PREDICT_UPLOAD, PREDICT_VALID_ITEMS
from ui.stop import stop_page

require_app_frame("pages/predict.py")

MAX_SHOWN = 24  # predictions drawn at once

st.title("Predict & export")
explain("predict")
st.caption("Try the model on pictures it has never seen, then take it away.")
run, exported = pick_model()
st.caption(f"{len(exported.classes)} classes · {exported.preprocessing['arch']} · "
           f"images presized to {exported.preprocessing['presize']} px, seen at {exported.preprocessing['size']} px")

source = st.segmented_control("Images", ["Upload", "Camera", "Validation images"], key=PREDICT_SOURCE.key, required=True,
                              default="Upload", persist_state="session")
named_images, problems = [], []
if source == "Upload":
    uploads = st.file_uploader("Drop images here (JPEG, PNG, WebP, TIFF, BMP, GIF; any colour mode)",
                               accept_multiple_files=True, key=PREDICT_UPLOAD.key)
    for f in uploads or []:
        try:
            image, _, _ = decode(io.BytesIO(f.getvalue()))
        except ValueError as e:
            problems.append(f"“{f.name}” is not an image Loupe can read: it is {e}. Nothing was predicted for it.")
            continue
        named_images.append((f.name, image))
elif source == "Camera":
    shot = st.camera_input("Take a photo: the model's guesses appear at once", key=PREDICT_CAMERA.key,
                           resolution="480p", width=560)  # a fixed resolution: the camera starts once, not twice
    if shot is not None:
        try:
            named_images.append(("camera shot", open_image(io.BytesIO(shot.getvalue()))))
        except ValueError as e:
            problems.append(f"The camera sent something Loupe cannot read: it is {e}. Take another photo.")
else:
    try:
        review = run_review(run)
    except UserError as e:
        st.error(md(e))
        stop_page()
    picked = st.multiselect("Validation images", review.preds.items, key=PREDICT_VALID_ITEMS.key, max_selections=MAX_SHOWN,
                            placeholder="Type part of a file name…")
    for rel in picked:
        try:
            named_images.append((rel, open_image(review.dls.items.root / rel)))
        except ValueError as e:
            problems.append(f"{rel} cannot be read any more: it is {e}.")

for message in problems:
    st.error(md(message))
if named_images:
    results = predict(exported, [im for _, im in named_images])
    for i, ((name, image), top) in enumerate(list(zip(named_images, results))[:MAX_SHOWN]):
        with st.container(key=f"prediction-{i}", border=True):
            c1, c2 = st.columns([1, 3], vertical_alignment="center")
            c1.image(fit_to_box(image, 160), caption=md(name))  # any aspect ratio, 1×1 to 20000×100
            c2.markdown(f"**{md(top[0][0])}** · {top[0][1]:.1%}")
            with c2:
                show_chart(top_k_figure(top), key=f"predict.chart.{i}")
    if len(named_images) > MAX_SHOWN:
        st.caption(f"The first {MAX_SHOWN} of {len(named_images)} images are shown.")
elif not problems:
    st.caption({"Upload": "No images yet.", "Camera": "No photo yet."}.get(
        source, "Pick a few validation images to see what the model says."))

st.divider()
st.subheader("Export")
export_buttons(run, exported)
