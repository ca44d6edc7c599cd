"""Plotly figures of the Interpret and Predict pages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def confusion_figure(cm: np.ndarray, classes: list[str], normalise: bool = False) -> go.Figure:
    """Heat map of actual (rows) against predicted (columns), with counts or row shares written in each cell.

    An invisible marker sits on every cell so that a click selects it (heat maps have no selectable points).
    """
    cm = np.asarray(cm)
    totals = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0) if normalise else cm
    text = [[f"{v:.2f}" if normalise else str(int(v)) for v in row] for row in shown]
    n = len(classes)
    fig = go.Figure(go.Heatmap(z=shown, x=classes, y=classes, colorscale="Blues", text=text, texttemplate="%{text}",
                               hovertemplate="actual %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
                               showscale=False, xgap=1, ygap=1))
    xs = [c for _ in classes for c in classes]
    ys = [r for r in classes for _ in classes]
    counts = [int(v) for row in cm for v in row]
    fig.add_scatter(x=xs, y=ys, mode="markers", marker=dict(size=max(12, 360 // max(n, 1)), opacity=0, symbol="square"),
                    customdata=counts, hovertemplate="actual %{y}<br>predicted %{x}<br>%{customdata} image(s)<extra></extra>",
                    showlegend=False, name="cells")
    side = min(720, 120 + 42 * n)
    fig.update_layout(height=side, width=side + 40, margin=dict(l=10, r=10, t=10, b=10), dragmode=False,
                      xaxis=dict(title="predicted", side="bottom", type="category"),
                      yaxis=dict(title="actual", autorange="reversed", type="category"), clickmode="event+select")
    return fig


def class_metrics_figure(metrics: pd.DataFrame) -> go.Figure:
    """Grouped bars of precision, recall and F1 per class."""
    fig = go.Figure()
    for name, colour in (("precision", "#4c78a8"), ("recall", "#d2691e"), ("f1", "#54a24b")):
        fig.add_bar(x=metrics.index.astype(str), y=metrics[name], name=name, marker_color=colour)
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=10, b=10), yaxis=dict(range=[0, 1.05]),
                      xaxis_title="class", legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def top_k_figure(top: list[tuple[str, float]]) -> go.Figure:
    """Horizontal bars of the most likely classes, the most likely on top."""
    names = [c for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color="#d2691e",
                           text=[f"{p:.1%}" for p in probs], textposition="auto"))
    fig.update_layout(height=60 + 34 * len(top), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"), yaxis=dict(type="category"))
    return fig
