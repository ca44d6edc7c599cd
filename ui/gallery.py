"""Image grids: fastai's show_batch as Streamlit columns of captioned images."""
from __future__ import annotations

import streamlit as st
import torch
from PIL import Image

from engine.data.images import to_pil
from ui.present import grid_cols, grid_px
from ui.text import md

DISPLAY_PX = 160  # shown this wide; small images are enlarged by the browser with crisp pixels (assets/loupe.css)


def display_image(x: torch.Tensor) -> Image.Image:
    """A [3,H,W] tensor in [0, 1] as a PIL image, at its own size (the browser scales it)."""
    return to_pil(x)


def image_grid(images: torch.Tensor, titles: list[str], cols: int, key: str) -> None:
    """Images in rows of `cols` columns (fewer while presenting), each titled, inside a container tests can find by
    `key`."""
    cols, px = grid_cols(cols), grid_px(DISPLAY_PX)
    with st.container(key=key):
        for start in range(0, len(titles), cols):
            row = st.columns(cols, width=cols * (px + 24))
            for col, x, title in zip(row, images[start:start + cols], titles[start:start + cols]):
                col.image(display_image(x), caption=md(title), width=px)  # captions read Markdown


def review_gallery(review, pos, titles: list[str], key: str, cols: int = 5, cam: bool = False,
                   targets=None) -> None:
    """Items of a run review (at dls positions `pos`) as the model sees them, optionally with a Grad-CAM overlay."""
    images = review.images(pos)
    if cam and len(images):
        from engine.results.gradcam import overlay

        maps = review.grad_cam(pos, None if targets is None else torch.as_tensor(targets, dtype=torch.long))
        images = torch.stack([overlay(img, m) for img, m in zip(images, maps)])
    image_grid(images, titles, cols, key)
