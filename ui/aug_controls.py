"""Sliders for each augmentation, bound to the draft spec's `augment` (fastai's aug_transforms to start with)."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from engine.data.augment import AugSettings
from ui.draft import bind, update_draft, view_spec


def _reset() -> None:
    update_draft({"augment": None})  # back to automatic: fastai's defaults (no flips for the built-in digits)


def _off() -> None:
    update_draft({"augment": AugSettings.off()})


def aug_controls() -> None:
    """Draw the augmentation controls; each change goes to the draft spec."""
    a, b = st.columns(2)
    a.button("Reset to fastai's defaults", on_click=_reset, key="aug.reset_button",
             help="fastai's aug_transforms (the built-in digits are never flipped: a mirrored digit is another shape).")
    b.button("Turn all off", on_click=_off, key="aug.off_button")
    c1, c2, c3 = st.columns(3)
    c1.checkbox("Flip left/right", help="Mirror half of the images. Turn it off for digits and text, where a mirror "
                "image means something else.", **bind("augment.do_flip"))
    c1.checkbox("Also flip/turn vertically", help="For images with no 'up', such as satellite or microscope images.",
                **bind("augment.flip_vert"))
    c1.slider("Max rotation (°)", 0.0, 45.0, step=1.0, **bind("augment.max_rotate"))
    c2.slider("Zoom range", 0.5, 2.0, step=0.05, help="1 = no zoom; above 1 zooms in.", **_zoom_binding())
    c2.slider("Max warp", 0.0, 0.5, step=0.05, help="Perspective tilt.", **bind("augment.max_warp"))
    c2.slider("Min crop area (min_scale)", 0.1, 1.0, step=0.05,
              help="Below 1, each image is a random crop of at least this share of its area.", **bind("augment.min_scale"))
    c3.slider("Max lighting change", 0.0, 0.9, step=0.05, help="Brightness and contrast changes.",
              **bind("augment.max_lighting"))
    c3.slider("Chance of geometric changes", 0.0, 1.0, step=0.05, **bind("augment.p_affine"))
    c3.slider("Chance of lighting changes", 0.0, 1.0, step=0.05, **bind("augment.p_lighting"))


def _zoom_binding() -> dict:
    """The zoom range slider sets two settings, min_zoom and max_zoom."""
    return bind("augment", lambda aug: (aug.min_zoom, aug.max_zoom),
                lambda zoom: replace(view_spec().augment, min_zoom=float(zoom[0]), max_zoom=float(zoom[1])))
