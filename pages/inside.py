"""Look inside: one picture followed through a run's network, stage by stage, and what each channel responds to."""
from __future__ import annotations

import io

import streamlit as st

from engine.data.images import decode, open_image
from engine.results.inside import look_inside
from engine.train.export import preprocess
from ui.explain import explain
from ui.frame import require_app_frame
from ui.inside_view import (INSIDE_CAMERA, INSIDE_ITEM, INSIDE_SOURCE, INSIDE_UPLOAD, draw_inside,
                            review_or_problem)
from ui.run_picker import pick_model
from ui.text import md
from ui.stop import stop_page

require_app_frame("pages/inside.py")

st.title("Look inside")
explain("inside")
st.caption("Follow one picture through the network: what each stage makes of it, which feature maps light up, where "
           "the model looks, and what it decides. Click a feature map to see what its channel responds to.")
run, exported = pick_model()
review, problem = review_or_problem(run)

source = st.segmented_control("Picture", ["Validation picture", "Upload", "Camera"], key=INSIDE_SOURCE.key,
                              required=True, default="Validation picture", persist_state="session")
x, name = None, ""
if source == "Validation picture":
    if review is None:
        st.error(md(f"The validation pictures cannot be read now: {problem}"))
        stop_page()
    items, labels = review.dls.items.rel_paths, review.dls.items.labels
    positions = review.valid_pos.tolist()
    if INSIDE_ITEM.get() not in positions:
        INSIDE_ITEM.set(positions[0])
    pos = st.selectbox("Validation picture", positions, key=INSIDE_ITEM.key, format_func=lambda p: f"{items[p]} ({labels[p]})")
    x, name = review.model_input([pos]), items[pos]
elif source == "Upload":
    upload = st.file_uploader("A picture (JPEG, PNG, WebP, TIFF, BMP, GIF; any colour mode)", key=INSIDE_UPLOAD.key)
    if upload is not None:
        try:
            image, _, _ = decode(io.BytesIO(upload.getvalue()))
            x, name = preprocess([image], exported.preprocessing), upload.name
        except ValueError as e:
            st.error(md(f"“{upload.name}” is not a picture Loupe can read: it is {e}."))
else:
    shot = st.camera_input("Take a photo", key=INSIDE_CAMERA.key, resolution="480p", width=560)
    if shot is not None:
        try:
            x, name = preprocess([open_image(io.BytesIO(shot.getvalue()))], exported.preprocessing), "camera shot"
        except ValueError as e:
            st.error(md(f"The camera sent something Loupe cannot read: it is {e}. Take another photo."))
if x is None:
    st.caption({"Upload": "No picture yet.", "Camera": "No photo yet."}.get(source, ""))
    stop_page()

st.caption(md(f"{name}: {exported.preprocessing['arch']} model, pictures seen at {exported.preprocessing['size']} px"))
draw_inside(run, look_inside(exported, x), review, problem)
