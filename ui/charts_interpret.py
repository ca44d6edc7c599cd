"""Plotly figures of the Interpret and Predict pages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.text import plain


def confusion_figure(cm: np.ndarray, classes: list[str], normalise: bool = False) -> go.Figure:
    """Heat map of actual (rows) against predicted (columns), with counts or row shares written in each cell.

    An invisible marker sits on every cell so that a click selects it (heat maps have no selectable points).
    """
    cm = np.asarray(cm)
    totals = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0) if normalise else cm
    text = [[f"{v:.2f}" if normalise else str(int(v)) for v in row] for row in shown]
    n = len(classes)
    names = [plain(c) for c in classes]
    cells = [[(names[a], names[p]) for p in range(n)] for a in range(n)]
    # cells sit at whole-number positions (column = predicted, row = actual), named by tick labels: a click
    # gives back the cell's indices, whatever the class names look like
    fig = go.Figure(go.Heatmap(z=shown, x=list(range(n)), y=list(range(n)), colorscale="Blues", text=text,
                               texttemplate="%{text}", customdata=cells, showscale=False, xgap=1, ygap=1,
                               hovertemplate="actual %{customdata[0]}<br>predicted %{customdata[1]}<br>%{text}"
                                             "<extra></extra>"))
    xs = [p for _ in range(n) for p in range(n)]
    ys = [a for a in range(n) for _ in range(n)]
    hover = [[names[a], names[p], int(cm[a, p])] for a in range(n) for p in range(n)]
    fig.add_scatter(x=xs, y=ys, mode="markers", marker=dict(size=max(12, 360 // max(n, 1)), opacity=0, symbol="square"),
                    customdata=hover, showlegend=False, name="cells",
                    hovertemplate="actual %{customdata[0]}<br>predicted %{customdata[1]}<br>%{customdata[2]} image(s)"
                                  "<extra></extra>")
    side = min(900, max(360, 140 + 56 * n))
    ticks = dict(tickmode="array", tickvals=list(range(n)), ticktext=names, showgrid=False, zeroline=False)
    fig.update_layout(height=side, width=side + 60, margin=dict(l=10, r=10, t=10, b=10), dragmode=False,
                      xaxis=dict(title="predicted", side="bottom", range=[-0.5, n - 0.5], **ticks),
                      yaxis=dict(title="actual", range=[n - 0.5, -0.5], **ticks), clickmode="event+select")
    return fig


def clicked_cell(point: dict, classes: list[str]) -> tuple[str, str] | None:
    """(actual, predicted) of a clicked confusion-matrix cell, from the click's row and column."""
    try:
        actual, predicted = int(round(float(point["y"]))), int(round(float(point["x"])))
    except (KeyError, TypeError, ValueError):
        return None
    if 0 <= actual < len(classes) and 0 <= predicted < len(classes):
        return classes[actual], classes[predicted]
    return None


def class_metrics_figure(metrics: pd.DataFrame) -> go.Figure:
    """Grouped bars of precision, recall and F1 per class."""
    fig = go.Figure()
    for name, colour in (("precision", "#4c78a8"), ("recall", "#d2691e"), ("f1", "#54a24b")):
        fig.add_bar(x=[plain(c) for c in metrics.index], y=metrics[name], name=name, marker_color=colour)
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=10, b=10), yaxis=dict(range=[0, 1.05]),
                      xaxis_title="class", legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def top_k_figure(top: list[tuple[str, float]]) -> go.Figure:
    """Horizontal bars of the most likely classes, the most likely on top."""
    names = [plain(c) for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color="#d2691e",
                           text=[f"{p:.1%}" for p in probs], textposition="auto"))
    fig.update_layout(height=60 + 34 * len(top), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"), yaxis=dict(type="category"))
    return fig
