"""The model choice shared by the LR finder and Train pages (both bound to the draft's model settings)."""
from __future__ import annotations

import streamlit as st

from engine.spec import setting_name
from engine.train.models import ARCHS, WeightsStatus, has_pretrained_weights, weights_file, weights_status
from ui.draft import bind, draft


def model_choice() -> tuple[str, bool]:
    """Architecture and whether the run will start from ImageNet weights (False when they cannot be had here, whatever
    the toggle says: the run then trains from scratch), with a plain note on what will happen."""
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    arch = c1.selectbox(setting_name("model.arch"), list(ARCHS), format_func=lambda a: f"{a} — {ARCHS[a]}", **bind("model.arch"))
    has_weights = has_pretrained_weights(arch)
    if has_weights:
        c2.toggle(setting_name("model.pretrained"), help="Pretrained models learn much faster.",
                  **bind("model.pretrained"))
    else:  # shown off, as it is for this model; the draft keeps the setting for a model that has weights
        c2.toggle(setting_name("model.pretrained"), value=False, disabled=True, key="model.pretrained.small",
                  help="The small model has no pretrained weights: it always trains from scratch.")
    pretrained = draft().model.pretrained
    if not has_weights:
        st.caption("The small model always trains from scratch, every layer.")
        return arch, False
    if not pretrained:
        st.caption("From scratch: every layer trains from random weights (nothing is frozen). Expect lower accuracy "
                   "than with ImageNet weights on small data sets, and more epochs to get there.")
        return arch, pretrained
    status = weights_availability(arch, weights_file(arch).exists())
    if status.state == "local":
        st.caption(f"The {arch} ImageNet weights are on this computer: training starts from a network that already "
                   "learned to see, so a few epochs are enough.")
    elif status.state == "downloadable":
        size = f" ({status.size / 1e6:,.0f} MB)" if status.size else ""
        st.caption(f"The {arch} ImageNet weights{size} will be downloaded when the run starts, once.")
    else:
        st.warning(f"The {arch} ImageNet weights cannot be had here: {status.reason}. This run will train {arch} "
                   "from scratch — every layer from random weights — so expect much lower accuracy on small data "
                   "sets and many more epochs than with pretrained weights.")
        return arch, False
    return arch, pretrained


@st.cache_data(ttl=60, show_spinner=False)
def weights_availability(arch: str, on_disk: bool) -> WeightsStatus:
    """Asked of the server at most once a minute per model (and again as soon as the file appears)."""
    return weights_status(arch)
