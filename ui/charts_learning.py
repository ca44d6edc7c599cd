"""Plotly figures of the How learning works page: a picture's numbers, the toy's points and curve, the loss by step."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from engine.results.learning import Descent, SpeedData, quadratic

LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0)  # never under the toolbar


def pixel_grid_figure(grid: np.ndarray) -> go.Figure:
    """A picture's brightness values, each written in its cell and the cell shaded by it (0 black, 255 white)."""
    n = grid.shape[0]
    cell = max(12, min(40, 560 // n))  # 28 × 28 cells fit beside the picture on a laptop's screen
    fig = go.Figure(go.Heatmap(z=grid, colorscale="Greys", reversescale=True, zmin=0, zmax=255, showscale=False,
                               texttemplate="%{z}" if n <= 32 else None, textfont=dict(size=max(7, cell // 3)),
                               xgap=1, ygap=1, hovertemplate="row %{y}, column %{x}: %{z}<extra></extra>"))
    fig.update_layout(width=cell * n + 40, height=cell * n + 40, margin=dict(l=30, r=10, t=30, b=10), dragmode=False,
                      xaxis=dict(side="top", showgrid=False, zeroline=False, range=[-0.5, n - 0.5]),
                      yaxis=dict(showgrid=False, zeroline=False, range=[n - 0.5, -0.5]))
    return fig


def speed_figure(data: SpeedData, state: Descent | None) -> go.Figure:
    """The measured speeds, the curve the parameters draw and, once predicted, the predicted speeds."""
    fig = go.Figure(go.Scatter(x=data.time, y=data.speed, mode="markers", name="measured speed",
                               marker=dict(size=9, color="#4c78a8"),
                               hovertemplate="t = %{x} s<br>speed %{y:.2f}<extra></extra>"))
    low, high = float(data.speed.min()), float(data.speed.max())
    pad = 0.35 * (high - low)
    if state is not None and all(math.isfinite(p) for p in state.params):
        t = np.linspace(float(data.time[0]), float(data.time[-1]), 200)
        with np.errstate(over="ignore", invalid="ignore"):
            a, b, c = state.params
            curve = quadratic(t, state.params)
        fig.add_scatter(x=t, y=curve, mode="lines", line=dict(color="#d2691e", width=3),
                        name=f"a·t² + b·t + c  (a={a:.3g}, b={b:.3g}, c={c:.3g})", hoverinfo="skip")
        seen = np.isfinite(curve) & (curve >= low - pad) & (curve <= high + pad)
        if not seen.any():  # the whole curve has left the chart: say where it went
            finite = curve[np.isfinite(curve)]
            where = f"from {finite.min():.3g} to {finite.max():.3g}" if finite.size else "beyond any number"
            fig.add_annotation(text=f"The curve is off the chart: its speeds run {where}", showarrow=False,
                               xref="paper", yref="paper", x=0.5, y=0.98, font=dict(color="#d2691e"))
        if state.preds is not None and state.done in ("predict", "loss", "gradient"):
            fig.add_scatter(x=data.time, y=state.preds, mode="markers", name="predicted speed",
                            marker=dict(size=9, symbol="x", color="#e45756"),
                            hovertemplate="t = %{x} s<br>predicted %{y:.2f}<extra></extra>")
    # the axis stays on the points: a curve that shoots off is seen leaving the chart, the points stay readable
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), legend=LEGEND_BELOW,
                      xaxis_title="time (s)", yaxis=dict(title="speed", range=[low - pad, high + pad]))
    return fig


def loss_history_figure(losses: tuple[float, ...] | list[float]) -> go.Figure:
    """The loss at each step, on a log scale (a diverging run climbs by powers of ten)."""
    shown = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v) and v > 0]
    fig = go.Figure(go.Scatter(x=[s for s, _ in shown], y=[v for _, v in shown], mode="lines+markers", name="loss (MSE)",
                               line=dict(color="#d2691e"), marker=dict(size=7),
                               hovertemplate="step %{x}<br>loss %{y:,.1f}<extra></extra>"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), showlegend=False,
                      xaxis=dict(title="step", rangemode="tozero", dtick=1 if len(shown) <= 20 else None),
                      yaxis=dict(title="loss (mean squared error, log scale)", type="log",
                                 dtick=decades_per_tick([v for _, v in shown]), exponentformat="power"))
    return fig


def decades_per_tick(values: list[float], most_ticks: int = 8) -> int:
    """A log axis's tick step in powers of ten: one label per power while that makes at most `most_ticks`, so a
    loss that explodes over 35 powers of ten is labelled every 5th, not in a pile."""
    if not values:
        return 1
    span = math.log10(max(values)) - math.log10(min(values))
    return max(1, math.ceil(span / most_ticks))
