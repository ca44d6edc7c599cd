"""Plotly figures for the LR finder, live training curves, run comparison and experiments."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.train.lr_suggest import Suggestion
from ui.text import plain

COLOURS = ["#d2691e", "#4c78a8", "#54a24b", "#e45756", "#b279a2", "#9d755d", "#72b7b2", "#eeca3b"]


def plotted_points(losses: list[float | None], num_it: int) -> int:
    """How many points fastai's plot_lr_find shows: all but the last 5 of a record run to num_it (a record that
    stopped at a NaN counts as one that ran on to num_it with NaNs, as fastai's does), never a NaN."""
    finite = [x is not None and math.isfinite(x) for x in losses]
    if losses and not finite[-1]:  # stopped at the first NaN or inf
        return max(1, min(finite.index(False), num_it - 5))
    return max(1, len(losses) - 5)


def lr_finder_figure(lrs: list[float], losses: list[float], suggestions: dict[str, Suggestion],
                     chosen: float | None = None, num_it: int | None = None) -> go.Figure:
    """Smoothed loss against learning rate on a log axis (fastai's plot: the last 5 points dropped), suggestions marked."""
    keep = plotted_points(losses, num_it or len(losses)) if suggestions or num_it else len(lrs)
    fig = go.Figure(go.Scatter(x=lrs[:keep], y=losses[:keep], mode="lines+markers", name="loss",
                               marker=dict(size=6, color="#d2691e"), line=dict(color="#d2691e"),
                               hovertemplate="LR %{x:.2e}<br>loss %{y:.3f}<extra>click to choose</extra>"))
    symbols = {"valley": "circle", "minimum": "diamond", "steep": "triangle-down", "slide": "square"}
    for i, (name, s) in enumerate(suggestions.items()):
        x = s.lr * 10 if name == "minimum" else s.lr  # the minimum is marked where the loss is lowest
        label = f"{name}: {s.lr:.1e}" + (f" (a tenth of the {x:.1e} marked)" if name == "minimum" else "")
        fig.add_scatter(x=[x], y=[s.loss], mode="markers", name=label,
                        marker=dict(size=14, symbol=symbols.get(name, "circle"), color=COLOURS[(i + 1) % len(COLOURS)],
                                    line=dict(width=1, color="white")),
                        hovertemplate=f"{name}<br>LR {s.lr:.2e}<extra></extra>")
    if chosen:
        fig.add_vline(x=chosen, line_dash="dash", line_color="#555", annotation_text=f"chosen {chosen:.1e}")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select",
                      xaxis=dict(type="log", title="learning rate (log scale)", dtick=1, tickformat=".0e"),
                      yaxis_title="loss (smoothed)",  # ticks read 1e-04, not 100µ; the legend sits below the plot
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0))
    return fig


def training_figure(batches: pd.DataFrame, epochs: pd.DataFrame, n_batches: int | None = None,
                    kept_epoch: int | None = None) -> go.Figure:
    """Smoothed training loss per batch and validation loss per epoch; below, the LR and momentum."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06,
                        specs=[[{}], [{"secondary_y": True}]])
    fig.add_scatter(x=batches["iter"], y=batches["smooth_loss"], name="train loss (smoothed)", mode="lines",
                    line=dict(color="#d2691e"), row=1, col=1)
    if len(epochs):
        fig.add_scatter(x=epochs["last_iter"], y=epochs["valid_loss"], name="valid loss", mode="lines+markers",
                        line=dict(color="#4c78a8"), marker=dict(size=8), row=1, col=1, customdata=epochs["epoch"],
                        hovertemplate="epoch %{customdata}: valid loss %{y:.4f}<extra></extra>")  # the table's numbers
        for x in epochs["last_iter"]:
            fig.add_vline(x=x + 0.5, line_width=1, line_dash="dot", line_color="#bbb")
        if kept_epoch is not None and kept_epoch in set(epochs["epoch"]):
            kept = epochs[epochs["epoch"] == kept_epoch].iloc[0]
            fig.add_scatter(x=[kept["last_iter"]], y=[kept["valid_loss"]], mode="markers",
                            name=f"model from epoch {kept_epoch}", marker=dict(size=16, symbol="star", color="#54a24b"),
                            row=1, col=1)
    fig.add_scatter(x=batches["iter"], y=batches["lr"], name="learning rate", mode="lines", line=dict(color="#54a24b"),
                    row=2, col=1)
    fig.add_scatter(x=batches["iter"], y=batches["mom"], name="momentum", mode="lines",
                    line=dict(color="#b279a2", dash="dot"), row=2, col=1, secondary_y=True)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="LR", row=2, col=1, exponentformat="e")
    fig.update_yaxes(title_text="mom", row=2, col=1, secondary_y=True)
    fig.update_xaxes(title_text="batch", row=2, col=1, range=[0, n_batches] if n_batches else None)
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def compare_figure(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> go.Figure:
    """Several runs' smoothed training loss (solid) and validation loss (dots) against batches."""
    fig = go.Figure()
    for i, (name, (batches, epochs)) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        fig.add_scatter(x=batches["iter"], y=batches["smooth_loss"], mode="lines", name=f"{name} train",
                        line=dict(color=colour))
        if len(epochs):
            fig.add_scatter(x=epochs["last_iter"], y=epochs["valid_loss"], mode="lines+markers", name=f"{name} valid",
                            line=dict(color=colour, dash="dot"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="batch", yaxis_title="loss",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def experiment_figure(curves: list[tuple[str, pd.DataFrame, pd.DataFrame]], n_batches: int | None = None) -> go.Figure:
    """An experiment's runs overlaid, one colour per value: the smoothed training loss (solid; the legend names the
    value) and the validation loss per epoch (dotted, in the same legend entry). A run whose loss explodes leaves the
    top of the chart rather than flattening the others."""
    fig = go.Figure()
    starts, highest = [], 0.0
    for i, (label, batches, epochs) in enumerate(curves):
        colour, name = COLOURS[i % len(COLOURS)], plain(label)
        fig.add_scatter(x=batches["iter"], y=batches["smooth_loss"], mode="lines", name=name, legendgroup=f"run{i}",
                        line=dict(color=colour, width=2.5),
                        hovertemplate=f"{name}<br>batch %{{x}}<br>train loss %{{y:.3f}}<extra></extra>")
        if len(epochs):
            fig.add_scatter(x=epochs["last_iter"], y=epochs["valid_loss"], mode="lines+markers", name=f"{name} (valid)",
                            legendgroup=f"run{i}", showlegend=False, line=dict(color=colour, dash="dot"),
                            marker=dict(size=8), hovertemplate=f"{name}<br>batch %{{x}}<br>valid loss %{{y:.3f}}"
                                                               "<extra></extra>")
        finite = [y for y in [*batches["smooth_loss"], *epochs["valid_loss"]] if y is not None and math.isfinite(y)]
        if len(batches) and finite:
            first = batches["smooth_loss"].iloc[0]
            if first is not None and math.isfinite(first):
                starts.append(first)
            highest = max(highest, *finite)
    top = 1.3 * max(starts) if starts else None
    fig.update_layout(height=440, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="batch",
                      yaxis_title="loss (solid: training, smoothed · dotted: validation)",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    if top is not None and highest > top:
        fig.update_yaxes(range=[0, top])
    if n_batches:
        fig.update_xaxes(range=[0, n_batches])
    return fig
