"""Every chart goes through show_chart, and its layout keeps plotly's toolbar off the legend and the title."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.train.lr_suggest import Suggestion
from ui.charts import class_counts_figure, size_spread_figure
from ui.charts_interpret import class_metrics_figure, confusion_figure, top_k_figure
from ui.charts_show import BUTTONS, MODEBAR_PX, PRESENT_FONT_PX, chart_config, file_name, legible
from ui.charts_train import compare_figure, experiment_figure, lr_finder_figure, training_figure

ROOT = Path(__file__).resolve().parents[2]


def test_every_plotly_chart_call_is_show_charts():
    """No page or ui module calls st.plotly_chart (or a column's) but show_chart, which adds the shared config."""
    calls = []
    for path in sorted([*ROOT.glob("pages/*.py"), *ROOT.glob("ui/*.py"), ROOT / "app.py"]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "plotly_chart":
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("ui/charts_show.py:"), calls


def _batches(n: int = 20) -> pd.DataFrame:
    it = np.arange(n)
    return pd.DataFrame({"iter": it, "smooth_loss": 2.0 - it / n, "lr": 1e-3 * np.ones(n), "mom": 0.9 * np.ones(n)})


def _epochs() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [0, 1], "last_iter": [9, 19], "valid_loss": [1.5, 1.2]})


def figures() -> dict:
    """One of each chart Loupe draws, from small scripted inputs."""
    classes = ["cat", "dog", "a very long class name"]
    metrics = pd.DataFrame({"precision": [0.5, 1.0, 0.75], "recall": [1.0, 0.5, 0.75], "f1": [0.66, 0.66, 0.75]},
                           index=classes)
    lrs = [1e-7 * 10 ** (i / 12) for i in range(60)]
    return {
        "class counts": class_counts_figure(pd.DataFrame({"train": [3, 4, 5], "valid": [1, 1, 2]}, index=classes)),
        "class counts, titled": class_counts_figure({"cat": 3, "dog": 4}, title="Images per class"),
        "sizes": size_spread_figure(pd.DataFrame({"width": [10, 20, 30], "height": [10, 25, 30]})),
        "confusion": confusion_figure(np.array([[3, 1, 0], [0, 4, 0], [1, 0, 2]]), classes),
        "per class": class_metrics_figure(metrics),
        "top k": top_k_figure([("cat", 0.7), ("dog", 0.2), ("bird", 0.1)]),
        "lr finder": lr_finder_figure(lrs, [2.0 - i / 100 for i in range(60)],
                                      {"valley": Suggestion("valley", 1e-4, 1.5, ""), "minimum": Suggestion("minimum", 1e-3, 1.4, "")}, 1e-4, 60),
        "training": training_figure(_batches(), _epochs(), 20, kept_epoch=1),
        "compare": compare_figure({"#1 small": (_batches(), _epochs()), "#2 resnet18": (_batches(), _epochs())}),
        "experiment": experiment_figure([("lr 1e-3", _batches(), _epochs()), ("lr 1e-2", _batches(), _epochs())], 20),
    }


@pytest.mark.parametrize("present", [False, True])
@pytest.mark.parametrize("name", list(figures()))
def test_the_toolbar_has_a_strip_of_its_own_and_the_legend_and_title_stay_clear_of_it(name, present):
    """The toolbar stands upright in a right margin of at least its width; legends, titles and colour bars are placed
    within the plot's width (paper x from 0 to 1), so none reaches that margin."""
    fig = legible(figures()[name], present)
    layout = fig.layout
    assert layout.modebar.orientation == "v"
    assert layout.margin.r >= MODEBAR_PX
    entries = sum(t.showlegend is not False for t in fig.data)
    if layout.showlegend or layout.showlegend is None and entries > 1:  # plotly draws a legend
        legend = layout.legend
        assert legend.orientation == "h" and legend.xref == "paper"
        assert (legend.xanchor, legend.x) in (("left", 0.0), ("right", 1.0))
        assert legend.y >= 1.0 and legend.yanchor == "bottom" or legend.y < 0 and legend.yanchor == "top"
    if layout.title.text:
        assert (layout.title.xref, layout.title.x, layout.title.xanchor) == ("paper", 0.0, "left")
    for trace in fig.data:
        if hasattr(trace, "colorbar") and trace.showscale is not False:
            assert trace.colorbar.orientation == "h" and trace.colorbar.y < 0  # under the plot, not at its right
    if present:
        assert layout.font.size == PRESENT_FONT_PX and layout.width is None  # the confusion matrix too: full width


def test_the_per_class_legend_names_its_three_scores_above_the_plot():
    """The chart whose legend the toolbar used to hide entirely."""
    fig = legible(figures()["per class"])
    assert [t.name for t in fig.data] == ["precision", "recall", "f1"]
    assert (fig.layout.legend.y, fig.layout.legend.yanchor, fig.layout.legend.x, fig.layout.legend.xanchor) == \
        (1.0, "bottom", 1.0, "right")


def test_each_chart_downloads_as_a_png_named_after_it():
    config = chart_config("interpret.class_chart")
    assert config["modeBarButtons"] == [BUTTONS] and BUTTONS[0] == "toImage"
    assert config["toImageButtonOptions"] == {"format": "png", "filename": "loupe-interpret-class_chart", "scale": 2}
    assert config["displaylogo"] is False and "displayModeBar" not in config  # the toolbar shows on every chart
    assert chart_config("interpret.confusion", zoom=False)["modeBarButtons"] == [["toImage"]]
    assert file_name("runs.watch.chart.7") == "loupe-runs-watch-chart-7"
