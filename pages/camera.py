"""Camera: make a data set with the webcam, as in Teachable Machine — name the classes, take shots of each, train —
and watch a trained model predict the webcam's stream live (ui.live_view)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import streamlit as st
from PIL import Image

from engine.data.camera import add_class, add_shot, camera_root, class_shots, create_set, delete_shot, list_sets
from engine.errors import UserError
from engine.data.images import fit_to_box, open_image
from ui.explain import explain
from ui.frame import require_app_frame
from ui.live_view import CAMERA_VIEW, VIEWS, live_view
from ui.text import md
from ui.draft import update_draft
from ui.state import (CAMERA_ADD_CLASS, CAMERA_CLASS, CAMERA_MESSAGE, CAMERA_NEW_CLASSES, CAMERA_NEW_NAME, CAMERA_SET,
                      CAMERA_SHOTS_TAKEN, SessionKey, camera_shot)
from ui.stop import stop_page

require_app_frame("pages/camera.py")

THUMB_PX = 112
PER_ROW = 8
MAX_THUMBS = 48  # per class, the newest


@st.cache_data(max_entries=1024, show_spinner=False)
def thumbnail(path: str, mtime_ns: int) -> Image.Image:
    """A shot, small (cached by path and modification time)."""
    return fit_to_box(open_image(path), THUMB_PX)


def attempt(action: Callable[..., object], *args, success: str = "") -> None:
    """Run a callback's action; its error (or `success`, with the result) is shown by the page's next run."""
    try:
        result = action(*args)
    except UserError as e:
        CAMERA_MESSAGE.set(("error", str(e)))
        return
    if success:
        CAMERA_MESSAGE.set(("success", success.format(result)))


def create() -> None:
    """Make the data set the user named, and show it."""
    classes = [line for line in CAMERA_NEW_CLASSES.get().splitlines() if line.strip()]
    try:
        folder = create_set(CAMERA_NEW_NAME.get(), classes)
    except UserError as e:
        CAMERA_MESSAGE.set(("error", str(e)))
        return
    CAMERA_SET.set(folder.name)
    CAMERA_NEW_NAME.set("")
    CAMERA_NEW_CLASSES.set("")
    CAMERA_MESSAGE.set(("success", f"Made “{folder.name}” in {folder}. Choose a class, then take shots."))


def save_shot(set_dir: Path, class_name: str, widget: SessionKey, n: int) -> None:
    """Save the photo the camera widget just took into the chosen class."""
    if n != CAMERA_SHOTS_TAKEN.get():
        # an earlier shot's camera, which the browser sends again until it has removed it: saved already
        return
    photo = widget.get()
    if not hasattr(photo, "getvalue"):  # the photo was cleared (or its upload is gone)
        return
    attempt(add_shot, set_dir, class_name, photo.getvalue())
    CAMERA_SHOTS_TAKEN.set(CAMERA_SHOTS_TAKEN.get() + 1)  # the next run draws a new camera, ready for the next shot


def use(set_dir: Path) -> None:
    """Make the set this window's data source."""
    update_draft({"data.source": str(set_dir)})  # label and split rules back to automatic: the Data page guesses them


st.title("Camera")
explain("camera")
st.caption("Make a data set with your webcam: name two or more classes, take shots of each, then train on them. "
           "The shots are ordinary image files, one folder per class, so every other page works on them.")
if CAMERA_MESSAGE.is_set():
    kind, text = CAMERA_MESSAGE.pop()
    (st.error if kind == "error" else st.success)(md(text))

CAMERA_VIEW.setdefault("shots")
if st.segmented_control("View", list(VIEWS), format_func=VIEWS.get, key=CAMERA_VIEW.key, required=True,
                        label_visibility="collapsed") == "live":
    live_view()
    stop_page()

sets = list_sets()
with st.expander("New data set", expanded=not sets, icon=":material/add_a_photo:"):
    st.text_input("Data set name", key=CAMERA_NEW_NAME.key, placeholder="hands")
    st.text_area("Classes, one per line (two or more)", key=CAMERA_NEW_CLASSES.key, placeholder="thumbs up\nthumbs down")
    st.button("Create", key="camera.create", type="primary", on_click=create)
if not sets:
    st.info("No camera data sets yet: name one and its classes above.")
    stop_page()

if CAMERA_SET.get() not in sets:
    CAMERA_SET.set(sets[-1])
c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
set_name = c1.selectbox("Camera data set", sets, key=CAMERA_SET.key, help=f"Kept in {md(camera_root())}")
set_dir = camera_root() / set_name
try:
    shots = class_shots(set_dir)
except UserError as e:
    st.error(md(e))
    stop_page()
ready = [name for name, files in shots.items() if files]
if c2.button("Use this data set", key="camera.use", type="primary", icon=":material/photo_library:",
             disabled=len(ready) < 2, on_click=use, args=(set_dir,),
             help="Opens it on the Data page" if len(ready) >= 2 else "Take shots of at least two classes first"):
    st.switch_page("pages/data.py")

# ---- shooting
if CAMERA_CLASS.get() not in shots:
    CAMERA_CLASS.set(next(iter(shots), None))
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
chosen = c1.segmented_control("Shots go into", list(shots), format_func=md, key=CAMERA_CLASS.key, required=True)
with c2.popover("Add a class", icon=":material/add:"):
    st.text_input("Class name", key=CAMERA_ADD_CLASS.key)
    st.button("Add", key="camera.add_class_button",
              on_click=lambda: attempt(add_class, set_dir, CAMERA_ADD_CLASS.get(), success="Added the class “{0.name}”."))
if chosen is None:
    st.info("This data set has no classes: add one.")
    stop_page()
shot_number = CAMERA_SHOTS_TAKEN.get()
widget = camera_shot(shot_number)
# a fixed resolution: without one the browser restarts the camera a second after it appears (to fit the
# widget's width), and a shot taken during that restart is lost
st.camera_input(f"Take a shot of “{md(chosen)}”: it is saved at once, and the camera is ready for the next one",
                key=widget.key, on_change=save_shot, args=(set_dir, chosen, widget, shot_number), resolution="480p", width=560)

# ---- the shots, per class
for i, (name, files) in enumerate(shots.items()):
    with st.container(key=f"camera-class-{i}", border=True):
        st.markdown(f"**{md(name)}** · {len(files)} shot{'s' if len(files) != 1 else ''}")
        shown = files[-MAX_THUMBS:]
        if len(files) > len(shown):
            st.caption(f"The newest {len(shown)} are shown.")
        for start in range(0, len(shown), PER_ROW):
            for col, path in zip(st.columns(PER_ROW), shown[start:start + PER_ROW]):
                try:
                    col.image(thumbnail(str(path), path.stat().st_mtime_ns), width=THUMB_PX)
                except (ValueError, OSError) as e:
                    col.caption(f"{md(path.name)} cannot be shown: {md(e)}")
                col.button("", key=f"camera.delete.{name}/{path.name}", icon=":material/delete:",
                           help="Move this shot to Loupe's trash", on_click=attempt, args=(delete_shot, set_dir, path),
                           kwargs={"success": "Moved the shot to Loupe's trash: {0}"})
