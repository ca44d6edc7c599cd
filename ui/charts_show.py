"""Every chart goes on a page through `show_chart`: one place for plotly's toolbar, the legend's place and Present mode.

Plotly draws its toolbar (the modebar) over the top right corner of a chart, where Loupe's legends sat: it hid the
per-class chart's legend entirely. Here the toolbar stands upright in a strip of right margin kept free for it, and
legends and titles stay within the plot's width, so nothing can lie under it. Its camera button saves the chart as
a PNG (drawn in the browser: no network), named after the chart.
"""
from __future__ import annotations

import re

import plotly.graph_objects as go
import streamlit as st

from ui.present import presenting

MODEBAR_PX = 40  # the right margin kept free for the upright toolbar (its buttons are about 30 px wide)
BUTTONS = ["toImage", "zoom2d", "pan2d", "autoScale2d", "resetScale2d"]  # the rest (lasso, select, ±) only crowd it
PRESENT_FONT_PX = 17  # chart text while presenting (plotly's default is 12)


def legible(fig: go.Figure, present: bool = False) -> go.Figure:
    """The figure with its toolbar upright in a right margin of its own and its legend and title inside the plot's
    width (a legend plotly would put right of the plot goes above it, from the left); bigger text when presenting."""
    margin = fig.layout.margin
    fig.update_layout(modebar=dict(orientation="v"), margin=dict(r=max(margin.r or 0, MODEBAR_PX)))
    legend = fig.layout.legend
    if legend.x is None or not 0 <= legend.x <= 1:
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0))
    fig.update_layout(legend=dict(xref="paper"))
    if fig.layout.title.text:
        fig.update_layout(title=dict(xref="paper", x=0.0, xanchor="left"))
    for trace in fig.data:  # a colour bar stands right of the plot by default: lay it under the plot instead
        if hasattr(trace, "colorbar") and trace.showscale is not False:
            trace.update(colorbar=dict(orientation="h", y=-0.32, yanchor="top", thickness=12))
    if present:
        fig.update_layout(font=dict(size=PRESENT_FONT_PX), width=None)
    return fig


def file_name(key: str) -> str:
    """The PNG's file name for a chart's key: 'interpret.class_chart' → 'loupe-interpret-class_chart'."""
    return "loupe-" + re.sub(r"[^A-Za-z0-9_]+", "-", key).strip("-")


def chart_config(key: str, zoom: bool = True) -> dict:
    """Plotly's config for every chart: the toolbar's few buttons (only the PNG download on a chart that does not
    zoom), its PNG download named after the chart."""
    return {"displaylogo": False, "modeBarButtons": [BUTTONS if zoom else BUTTONS[:1]],
            "toImageButtonOptions": {"format": "png", "filename": file_name(key), "scale": 2}}


def show_chart(fig: go.Figure, key: str, **kwargs):
    """st.plotly_chart with the shared config and layout; at full width while presenting. Returns its selection."""
    present = presenting()
    if present:
        kwargs["width"] = "stretch"
    zoom = fig.layout.dragmode is not False  # the confusion matrix is clicked, not dragged
    return st.plotly_chart(legible(fig, present), key=key, config=chart_config(key, zoom), **kwargs)
