"""The Look inside page's drawing: each stage's feature maps as a grid of buttons-under-pictures, its Grad-CAM, the
head's probabilities, and the validation pictures a clicked channel responds to."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image
from plotly.colors import sample_colorscale

from engine.data.images import to_pil
from engine.errors import UserError
from engine.results.gradcam import overlay
from engine.results.inside import HEAD, INPUT, TOP_PICTURES, ChannelIndex, Inside, StageView, channel_index
from engine.results.review import RunReview
from ui.charts_interpret import top_k_figure
from ui.charts_show import show_chart
from ui.gallery import review_gallery
from ui.run_cache import review_key, run_review
from ui.state import SessionKey
from ui.text import md

INSIDE_SOURCE = SessionKey[str]("inside.source")  # where the picture comes from: validation set, upload or camera
INSIDE_ITEM = SessionKey[int]("inside.item")  # the validation picture's dls position
INSIDE_UPLOAD = SessionKey[object]("inside.upload")
INSIDE_CAMERA = SessionKey[object]("inside.camera")
INSIDE_CHANNEL = SessionKey[tuple]("inside.channel")  # (run id, stage name, channel) of the feature map clicked

MAP_PX = 84  # a feature map's side on screen
IMAGE_PX = 168  # the input and the Grad-CAM pictures' side
MAPS_PER_ROW = 8
_LUT = np.array([[int(v) for v in c[4:-1].split(",")]
                 for c in sample_colorscale("Viridis", np.linspace(0, 1, 256).tolist())], dtype=np.uint8)  # [256, 3]


def shown(img: Image.Image, px: int) -> Image.Image:
    """A square picture at `px` on a side: enlarged with visible pixels, or shrunk smoothly."""
    return img.resize((px, px), Image.NEAREST if img.width <= px else Image.BILINEAR)


def feature_map_image(a: torch.Tensor, lo: float, hi: float) -> Image.Image:
    """A feature map [H, W] in Viridis colours, lo (dark blue) to hi (yellow), enlarged to MAP_PX."""
    v = ((a.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    return shown(Image.fromarray(_LUT[(v * 255).round().long().numpy()], "RGB"), MAP_PX)


@st.cache_resource(max_entries=4, show_spinner="Measuring every channel on the validation pictures…")
def _channel_index(run_id: int, weights_mtime: float, fingerprint: str, _review: RunReview) -> ChannelIndex:
    return channel_index(_review)


def run_channel_index(run: dict, review: RunReview) -> ChannelIndex:
    """What every channel of a run's model responds to, on the validation pictures of its review `run_review(run)`
    (measured once per model file and data)."""
    return _channel_index(*review_key(run), review)


def pick_channel(run_id: int, stage: str, channel: int) -> None:
    INSIDE_CHANNEL.set((run_id, stage, channel))


def _stage_heading(i: int, view: StageView) -> None:
    c, h, w = view.shape
    what = {INPUT: f"{c} channels of {h} × {w}", HEAD: f"{c} scores, one per class"}.get(
        view.name, f"{c} feature maps of {h} × {w}")
    st.markdown(f"**{i}. {view.name.capitalize()}** · {what}")
    st.caption(view.what)


def _map_grid(run_id: int, view: StageView, clicked: tuple | None) -> None:
    """The stage's top feature maps, each with a button that shows what its channel responds to."""
    lo, hi = float(view.maps.min()), float(view.maps.max())
    with st.container(key=f"inside-maps-{view.name.replace(' ', '-')}"):
        for start in range(0, len(view.top_channels), MAPS_PER_ROW):
            cols = st.columns(MAPS_PER_ROW)
            for col, ch, a in zip(cols, view.top_channels[start:start + MAPS_PER_ROW], view.maps[start:start + MAPS_PER_ROW]):
                col.image(feature_map_image(a, lo, hi), width=MAP_PX)
                name = ("red", "green", "blue")[ch] if view.name == INPUT else f"#{ch}"
                col.button(name, key=f"inside.map.{view.name}.{ch}", on_click=pick_channel, args=(run_id, view.name, ch),
                           type="primary" if clicked == (view.name, ch) else "secondary",
                           help=f"Mean activation {float(view.means[ch]):.3g}. Click: the validation pictures that "
                                "light this channel up most")
    st.caption(f"The {len(view.top_channels)} most active of {view.shape[0]}, most active first; one colour scale "
               f"for the stage: dark blue {lo:.2g}, yellow {hi:.2g}.")


def _responds_to(run: dict, review: RunReview | None, problem: str, view: StageView, channel: int) -> None:
    """The validation pictures that activate `channel` of the stage most."""
    label = ("red", "green", "blue")[channel] if view.name == INPUT else f"channel #{channel}"
    with st.container(key="inside-responds", border=True):
        st.markdown(f"**What {label} of {view.name} responds to:** the {TOP_PICTURES} validation pictures that "
                    "activate it most (label / mean activation)")
        if review is None:
            st.info(md(f"The validation pictures cannot be read now: {problem}"))
            return
        top = run_channel_index(run, review).top_pictures(view.name, channel)
        review_gallery(review, top["pos"].tolist(), [f"{lab} / {a:.3g}" for lab, a in zip(top["label"], top["activation"])],
                       key="gallery-inside-responds", cols=4)


def draw_inside(run: dict, inside: Inside, review: RunReview | None, problem: str = "") -> None:
    """Every stage of `inside`, top to bottom, then the head's probabilities."""
    clicked = INSIDE_CHANNEL.get()
    clicked = clicked[1:] if clicked and clicked[0] == run["id"] else None
    predicted = inside.classes[inside.predicted]
    for i, view in enumerate(inside.layers):
        with st.container(key=f"inside-stage-{i}", border=True):
            _stage_heading(i, view)
            if view.name == HEAD:
                st.markdown(f"Prediction: **{md(predicted)}** · {float(inside.probs.max()):.1%}")
                show_chart(top_k_figure(inside.top(10)), key="inside.probabilities")
                continue
            left, right = st.columns([1, 4], gap="medium")
            if view.name == INPUT:
                left.image(shown(to_pil(inside.image), IMAGE_PX), width="stretch",
                           caption="As the model sees it (shown de-normalised)")
            else:
                left.image(shown(to_pil(overlay(inside.image, view.cam)), IMAGE_PX), width="stretch",
                           caption=md(f"Grad-CAM: where this stage sees “{predicted}”"))
            with right:
                _map_grid(run["id"], view, clicked)
            if clicked and clicked[0] == view.name and clicked[1] < view.shape[0]:
                _responds_to(run, review, problem, view, clicked[1])


def review_or_problem(run: dict) -> tuple[RunReview | None, str]:
    """The run's review (its validation pictures), or None and why they cannot be read now."""
    try:
        return run_review(run), ""
    except UserError as e:
        return None, str(e)
