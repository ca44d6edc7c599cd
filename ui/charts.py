"""Plotly figures for the pages; pages only place them."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ui.text import plain


def class_counts_figure(counts: dict[str, int] | pd.DataFrame, title: str = "") -> go.Figure:
    """Bars of images per class; a frame with train/valid columns gives stacked bars."""
    fig = go.Figure()
    if isinstance(counts, pd.DataFrame):
        for split, colour in (("train", "#d2691e"), ("valid", "#4c78a8")):
            fig.add_bar(x=[plain(c) for c in counts.index], y=counts[split], name=split, marker_color=colour)
        fig.update_layout(barmode="stack")
    else:
        fig.add_bar(x=[plain(c) for c in counts], y=list(counts.values()), marker_color="#d2691e")
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      xaxis_title="class", yaxis_title="images", legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def size_spread_figure(sizes: pd.DataFrame) -> go.Figure:
    """Original width against height of every readable image."""
    fig = go.Figure(go.Histogram2d(x=sizes["width"], y=sizes["height"], colorscale="Oranges", nbinsx=30, nbinsy=30))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="width (px)", yaxis_title="height (px)")
    return fig
