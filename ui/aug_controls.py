"""Sliders for each augmentation, starting at fastai's aug_transforms defaults."""
from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from engine.augment import AugSettings

def _widget_values(aug: AugSettings) -> dict[str, object]:
    """Session-state values of the widgets for these settings (zoom is one range slider)."""
    values = {f"aug.{k}": v for k, v in asdict(aug).items() if k not in ("min_zoom", "max_zoom")}
    values["aug.zoom_range"] = (aug.min_zoom, aug.max_zoom)
    return values


def set_aug_widgets(aug: AugSettings) -> None:
    """Move the sliders to these settings (call before they are drawn)."""
    st.session_state.update(_widget_values(aug))


def _reset() -> None:
    set_aug_widgets(AugSettings())


def _off() -> None:
    st.session_state.update(_widget_values(AugSettings.off()))


def aug_controls() -> AugSettings:
    """Draw the augmentation controls and return the settings they describe."""
    for key, value in _widget_values(AugSettings()).items():
        st.session_state.setdefault(key, value)
    keep = dict(persist_state="session")
    a, b = st.columns(2)
    a.button("Reset to fastai's defaults", on_click=_reset, key="aug.reset_button")
    b.button("Turn all off", on_click=_off, key="aug.off_button")
    c1, c2, c3 = st.columns(3)
    do_flip = c1.checkbox("Flip left/right", key="aug.do_flip", help="Mirror half of the images. Turn it off for digits and text, where a mirror image means something else.", **keep)
    flip_vert = c1.checkbox("Also flip/turn vertically", key="aug.flip_vert",
                            help="For images with no 'up', such as satellite or microscope images.", **keep)
    max_rotate = c1.slider("Max rotation (°)", 0.0, 45.0, key="aug.max_rotate", step=1.0, **keep)
    min_zoom, max_zoom = c2.slider("Zoom range", 0.5, 2.0, step=0.05, key="aug.zoom_range",
                                   help="1 = no zoom; above 1 zooms in.", **keep)
    max_warp = c2.slider("Max warp", 0.0, 0.5, key="aug.max_warp", step=0.05, help="Perspective tilt.", **keep)
    min_scale = c2.slider("Min crop area (min_scale)", 0.1, 1.0, key="aug.min_scale", step=0.05,
                          help="Below 1, each image is a random crop of at least this share of its area.", **keep)
    max_lighting = c3.slider("Max lighting change", 0.0, 0.9, key="aug.max_lighting", step=0.05,
                             help="Brightness and contrast changes.", **keep)
    p_affine = c3.slider("Chance of geometric changes", 0.0, 1.0, key="aug.p_affine", step=0.05, **keep)
    p_lighting = c3.slider("Chance of lighting changes", 0.0, 1.0, key="aug.p_lighting", step=0.05, **keep)
    return AugSettings(do_flip=do_flip, flip_vert=flip_vert, max_rotate=max_rotate, min_zoom=min_zoom, max_zoom=max_zoom,
                       max_lighting=max_lighting, max_warp=max_warp, p_affine=p_affine, p_lighting=p_lighting,
                       min_scale=min_scale)
