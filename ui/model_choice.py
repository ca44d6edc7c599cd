"""The model choice shared by the LR finder and Train pages (both bound to the draft's model settings)."""
from __future__ import annotations

import streamlit as st

from engine.models import ARCHS, weights_file
from ui.state import bind, draft


def model_choice() -> tuple[str, bool]:
    """Architecture and whether to start from ImageNet weights, with a plain note on what will happen."""
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    arch = c1.selectbox("Model", list(ARCHS), format_func=lambda a: f"{a} — {ARCHS[a]}", **bind("model.arch"))
    has_weights = arch != "small"
    c2.toggle("Start from ImageNet weights", disabled=not has_weights,
              help="Pretrained models learn much faster. The small model has no pretrained weights.",
              **bind("model.pretrained"))
    pretrained = draft().model.pretrained
    if not has_weights:
        st.caption("The small model always trains from scratch, every layer.")
        return arch, False
    if pretrained and not weights_file(arch).exists():
        st.caption(f"The {arch} ImageNet weights are not on this computer yet: they will be downloaded when the run "
                   "starts. Offline, Loupe says so and trains from scratch instead (every layer, nothing frozen).")
    elif not pretrained:
        st.caption("From scratch: every layer trains from random weights (nothing is frozen).")
    return arch, pretrained
