"""A run report to share: one self-contained HTML file that opens in any browser with no network.

    html = build_report(Path("runs/7"))       # the run folder: spec.json, model.pt, labels.json, run.json
    write_report(Path("runs/7"), Path("report.html"))

It holds the data set (classes, counts, a grid of examples), the settings with human names, the curves and
the verdict, the kept epoch and its metrics, the confusion matrix, per-class precision/recall/F1, the top
losses with their pictures, the most-confused pairs, the machine and time taken, and the replay command.
Plotly's script is inlined once and every picture is a data URI, so nothing is fetched when it opens.
The per-batch curves come from the runs database (LOUPE_HOME/runs.sqlite) when it holds this run; the data
set is read as it is on disk now, and a section that cannot be made says why instead.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from PIL import Image

from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.train.export import RUN_FILE, load_run
from engine.store.home import loupe_home
from engine.data.images import fit_to_box, open_image
from engine.results.interpret import confusion_matrix, most_confused, per_class_metrics, top_losses
from engine.results.review import RunReview, review_run
from engine.store.runs import RunStore
from engine.data.resolve import data_name, prepare_source
from engine.spec import SPEC_FILE, RunSpec, load_spec, setting_name
from engine.train.device import cpu_name
from engine.train.run import format_duration
from engine.train.verdict import verdict_of_run

THUMB_PX = 112  # side of the box a picture is shrunk into (CSS shows it at most this big)
EXAMPLE_PX = 72  # likewise, in the data set's grid
EXAMPLES_TOTAL = 60  # pictures in the data set's grid, at most
EXAMPLES_PER_CLASS = 6
TOP_LOSSES = 12
CONFUSED_PAIRS = 15
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False,  # nothing leads to plotly's site
                 "toImageButtonOptions": {"format": "png", "scale": 2}}  # the camera icon saves a PNG, offline



def esc(value: object) -> str:
    """User text (class and file names, paths) as literal HTML text."""
    return html.escape(str(value), quote=True)


def chart_text(value: object) -> str:
    """User text in a Plotly label: Plotly reads tags in chart text, so they are escaped."""
    return html.escape(" ".join(str(value).split()), quote=False)


# ---------------------------------------------------------------- what a report is made of

@dataclass
class RunRecord:
    """What is known of a run from its folder and, when it holds the run, the runs database."""

    folder: Path
    spec: RunSpec
    result: dict  # run.json: status, seconds, device, kept_epoch, accuracy, … ({} if missing)
    run_id: int | None
    epochs: pd.DataFrame  # epoch, phase, train_loss, valid_loss, error_rate, accuracy, time[, last_iter]
    batches: pd.DataFrame  # iter, epoch, loss, smooth_loss, lr, mom (empty if the database lacks the run)
    row: dict = field(default_factory=dict)  # the database's row (host, started, source, status), if found


def _same_folder(a: str | None, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def read_record(folder: Path, store: RunStore | None = None, spec: RunSpec | None = None) -> RunRecord:
    """The run in `folder` (spec.json, run.json) and its curves from `store` (else LOUPE_HOME's database, if any);
    `spec` stands in for the spec.json of a run recorded before runs kept one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"There is no run folder {folder}.")
    if (folder / SPEC_FILE).is_file():
        spec = load_spec(folder / SPEC_FILE)
    elif spec is None:
        raise UserError(f"{folder} is not a run folder: it has no {SPEC_FILE}.")
    try:
        result = json.loads((folder / RUN_FILE).read_text()) if (folder / RUN_FILE).is_file() else {}
    except (ValueError, OSError):
        result = {}
    result = result if isinstance(result, dict) else {}
    run_id = result.get("run_id") if isinstance(result.get("run_id"), int) else None
    own = None
    if store is None and (loupe_home() / "runs.sqlite").is_file():  # never made just to find nothing in it
        store = own = RunStore()
    try:
        row = _find_row(store, run_id, folder) if store is not None else None
        if row is not None:
            epochs, batches = store.epochs(row["id"]), store.batches(row["id"])
        else:
            epochs = pd.DataFrame(result.get("epochs_table") or [],
                                  columns=["epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "time"])
            batches = pd.DataFrame(columns=["iter", "epoch", "loss", "smooth_loss", "lr", "mom"])
    finally:
        if own is not None:
            own.close()
    return RunRecord(folder=folder, spec=spec, result=result, run_id=row["id"] if row else run_id, epochs=epochs,
                     batches=batches, row={k: v for k, v in (row or {}).items() if k != "spec"})


def _find_row(store: RunStore, run_id: int | None, folder: Path) -> dict | None:
    """The database's row of the run whose folder this is (by run.json's id, else by folder), or None."""
    if run_id is not None:
        row = store.run(run_id)
        if row is not None and (_same_folder(row.get("folder"), folder) or _same_folder(row.get("weights_path"), folder)):
            return row
    runs = store.runs()
    for r in runs.itertuples():
        if _same_folder(r.weights_path, folder):
            return store.run(int(r.id))
    return None


# ---------------------------------------------------------------- pictures

def image_uri(img: Image.Image) -> str:
    """A small picture as a data URI: PNG or JPEG, whichever is smaller."""
    img = img.convert("RGB")
    best = ""
    for fmt, options in (("PNG", {"optimize": True}), ("JPEG", {"quality": 82})):
        buf = io.BytesIO()
        img.save(buf, fmt, **options)
        uri = f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        best = uri if not best or len(uri) < len(best) else best
    return best


def thumbnail(path: Path, box: int = THUMB_PX) -> str | None:
    """A picture file as a data URI, shrunk to fit box×box; None if it cannot be read."""
    try:
        img = open_image(path, draft=box)
    except (ValueError, OSError):
        return None
    if max(img.size) > box:
        img = fit_to_box(img, box)  # small ones stay as they are: the page enlarges them with crisp pixels
    return image_uri(img)


# ---------------------------------------------------------------- figures (pure plotly: the report draws its own)

def _layout(fig: go.Figure, height: int, **kwargs) -> go.Figure:
    # legends below the plot area, so plotly's toolbar (top right) never covers them
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), template="plotly_white",
                      legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0.0), **kwargs)
    return fig


def counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Stacked bars of training and validation pictures per class."""
    fig = go.Figure()
    for split, colour in (("train", "#d2691e"), ("valid", "#4c78a8")):
        fig.add_bar(x=[chart_text(c) for c in counts.index], y=counts[split], name=split, marker_color=colour)
    return _layout(fig, 320, barmode="stack", xaxis_title="class", yaxis_title="pictures")


def curves_figure(batches: pd.DataFrame, epochs: pd.DataFrame, kept_epoch: int | None) -> go.Figure:
    """Smoothed training loss per batch and validation loss per epoch (the kept epoch starred); below, the LR.

    Without per-batch rows, the per-epoch training and validation losses against the epoch."""
    if not len(batches):
        fig = go.Figure()
        fig.add_scatter(x=epochs["epoch"], y=epochs["train_loss"], name="train loss", mode="lines+markers",
                        line=dict(color="#d2691e"))
        fig.add_scatter(x=epochs["epoch"], y=epochs["valid_loss"], name="valid loss", mode="lines+markers",
                        line=dict(color="#4c78a8"))
        return _layout(fig, 380, xaxis_title="epoch", yaxis_title="loss")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    fig.add_scatter(x=batches["iter"], y=batches["smooth_loss"], name="train loss (smoothed)", mode="lines",
                    line=dict(color="#d2691e"), row=1, col=1)
    if len(epochs) and "last_iter" in epochs:
        fig.add_scatter(x=epochs["last_iter"], y=epochs["valid_loss"], name="valid loss", mode="lines+markers",
                        line=dict(color="#4c78a8"), marker=dict(size=8), customdata=epochs["epoch"],
                        hovertemplate="epoch %{customdata}<br>valid loss %{y:.4f}<extra></extra>", row=1, col=1)
        kept = epochs[epochs["epoch"] == kept_epoch]
        if len(kept):
            fig.add_scatter(x=kept["last_iter"], y=kept["valid_loss"], mode="markers", name=f"model from epoch {kept_epoch}",
                            marker=dict(size=16, symbol="star", color="#54a24b"), row=1, col=1)
    fig.add_scatter(x=batches["iter"], y=batches["lr"], name="learning rate", mode="lines", line=dict(color="#54a24b"),
                    row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="LR", exponentformat="e", row=2, col=1)
    fig.update_xaxes(title_text="batch", row=2, col=1)
    return _layout(fig, 520)


def confusion_figure(cm: np.ndarray, classes: list[str]) -> go.Figure:
    """Heat map of actual (rows) against predicted (columns), the count written in each cell."""
    names = [chart_text(c) for c in classes]
    n = len(classes)
    hover = [[[names[a], names[p]] for p in range(n)] for a in range(n)]
    fig = go.Figure(go.Heatmap(z=cm, x=list(range(n)), y=list(range(n)), colorscale="Blues", showscale=False,
                               text=cm.astype(int).astype(str).tolist(), texttemplate="%{text}", customdata=hover,
                               xgap=1, ygap=1, hovertemplate="actual %{customdata[0]}<br>predicted %{customdata[1]}"
                                                             "<br>%{z} picture(s)<extra></extra>"))
    ticks = dict(tickmode="array", tickvals=list(range(n)), ticktext=names, showgrid=False, zeroline=False)
    side = min(900, max(380, 150 + 48 * n))
    return _layout(fig, side, width=side + 60, xaxis=dict(title="predicted", range=[-0.5, n - 0.5], **ticks),
                   yaxis=dict(title="actual", range=[n - 0.5, -0.5], **ticks))


def class_metrics_figure(metrics: pd.DataFrame) -> go.Figure:
    """Grouped bars of precision, recall and F1 per class."""
    fig = go.Figure()
    for name, colour in (("precision", "#4c78a8"), ("recall", "#d2691e"), ("f1", "#54a24b")):
        fig.add_bar(x=[chart_text(c) for c in metrics.index], y=metrics[name], name=name, marker_color=colour)
    return _layout(fig, 340, barmode="group", yaxis=dict(range=[0, 1.05]), xaxis_title="class")


# ---------------------------------------------------------------- HTML pieces

def _table(header: list[str], rows: list[list[object]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: go.Figure, name: str) -> str:
    """A chart as a div and the script that draws it (plotly's script itself is inlined once, in the head)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}", config=PLOTLY_CONFIG)


def _tile(uri: str | None, caption: list[str], title: str = "") -> str:
    picture = (f'<img src="{uri}" alt="{esc(title)}" title="{esc(title)}">' if uri
               else '<div class="missing">cannot be read now</div>')
    text = f'<figcaption>{"<br>".join(esc(c) for c in caption)}</figcaption>' if caption else ""
    return f"<figure>{picture}{text}</figure>"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def _num(x, fmt: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _duration(seconds) -> str:
    return "–" if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) else format_duration(seconds)


def setting_rows(spec: RunSpec) -> list[tuple[str, str, str]]:
    """(human name, value as read, dotted name) of every setting; a label or split rule in one sentence."""
    out, seen = [], set()
    for name, value in spec.flat().items():
        if name == "version":
            continue
        if name.startswith(("data.label.", "data.split.")):
            name = name.rsplit(".", 1)[0]
            if name in seen:
                continue
            rule = getattr(spec.data, name.split(".")[1])
            value = rule.describe() if rule is not None else None
        seen.add(name)
        if name == "data.source" and spec.data.kind != "folder":
            value = f"{data_name(spec.data)} ({value})"
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif value is None:
            shown = "automatic"
        elif isinstance(value, list):
            shown = " to ".join(f"{v:g}" for v in value)
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        out.append((setting_name(name), shown, name))
    return out


def replay_command(folder: Path) -> str:
    """The command line that trains this run again from its spec (from a Loupe checkout)."""
    return f"python -m engine train --spec {shlex.quote(str(Path(folder).resolve() / SPEC_FILE))}"



# ---------------------------------------------------------------- the report

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{margin:0 0 4px}h2{margin-top:40px;border-bottom:2px solid #d2691e;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.verdict{padding:10px 14px;border-radius:6px;background:#eef4fb;border-left:5px solid #4c78a8}
.note{color:#666;font-size:.92em}.cards{display:flex;gap:14px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:1.6em}.card span{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}th,td{border-bottom:1px solid #e4e4e4;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:128px;text-align:center}
figure img{width:112px;height:112px;object-fit:contain;image-rendering:pixelated;background:#f0f0f0;border-radius:4px}
figcaption{font-size:.78em;color:#444;word-break:break-all}.missing{width:112px;height:112px;background:#eee;color:#999;
font-size:.8em;display:flex;align-items:center;justify-content:center}
.losses figure{width:150px}pre{background:#f4f4f4;padding:10px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
.classrow{display:flex;align-items:center;gap:12px;margin:4px 0}
.classrow h4{width:140px;flex:none;margin:0;word-break:break-all}.examples figure{width:76px}
.examples figure img{width:72px;height:72px}summary{cursor:pointer;color:#4c78a8}
"""


def build_report(folder: Path, store: RunStore | None = None, cache: PresizeCache | None = None,
                 spec: RunSpec | None = None) -> str:
    """The report of the run in `folder` as one self-contained HTML page; UserError if it is not a run folder.

    `store` is the runs database to find its curves in (default: LOUPE_HOME's), `cache` the presized pixels, `spec`
    the run's spec if its folder has no spec.json (a run recorded before runs kept one)."""
    record = read_record(folder, store, spec)
    load_run(record.folder)  # the model is needed for everything below: UserError now if the folder lacks it
    spec, result = record.spec, record.result
    name = data_name(spec.data)
    title = f"Run #{record.run_id}" if record.run_id is not None else f"Run {record.folder.name}"
    review, data_problem = None, None
    try:
        if spec.data.kind == "builtin":  # made again if it is missing; a folder or a download is never fetched
            prepare_source(spec)
        review = review_run({"id": record.run_id, "weights_path": str(record.folder), "spec": spec},
                            cache or PresizeCache(max_entries=1))
    except (UserError, OSError) as e:
        data_problem = str(e)
    sections = [_data_section(spec, review, data_problem), _settings_section(spec, result),
                _training_section(record), _kept_section(record, review)]
    if review is not None and len(review.preds):
        sections += _review_sections(review)
    sections += [_machine_section(record), _replay_section(record.folder, spec)]
    kept = result.get("kept_epoch")
    headline = (f"{esc(name)} · {esc(spec.model.arch)} · {esc(record.row.get('status') or result.get('status') or '')}"
                + (f" · accuracy {_pct(result.get('accuracy'))} (model from epoch {kept})" if kept is not None else ""))
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Loupe · {esc(title)} · {esc(name)}</title><style>{CSS}</style>"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body><main>"
        f"<h1>Loupe run report · {esc(title)}</h1><p class=\"sub\">{headline}</p>"
        + "\n".join(sections)
        + f"<p class=\"note\">Made by Loupe on {made}. This file is self-contained: it needs no network; the charts "
          "zoom (drag), pan and show values on hover, and the camera icon above each saves it as a PNG.</p>"
          "</main></body></html>\n")


def write_report(folder: Path, out: Path, store: RunStore | None = None, cache: PresizeCache | None = None) -> Path:
    """Write the report of the run in `folder` to the file `out`; returns `out`."""
    text = build_report(folder, store, cache)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"The report cannot be written to {out} ({e.strerror or e}).") from e
    return out


def report_or_message(folder: Path, store: RunStore | None = None, cache: PresizeCache | None = None,
                      spec: RunSpec | None = None) -> bytes:
    """The report as UTF-8 bytes, or (if it cannot be made) a small HTML page saying why: for a download button."""
    try:
        return build_report(folder, store, cache, spec).encode("utf-8")
    except UserError as e:
        return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Loupe report</title></head><body>"
                f"<p>The report could not be made: {esc(e)}</p></body></html>").encode("utf-8")


def _data_section(spec: RunSpec, review: RunReview | None, problem: str | None) -> str:
    parts = [f"<h2>The data set</h2><p><b>{esc(data_name(spec.data))}</b> · {esc(spec.data.source)}</p>"]
    if review is None:
        parts.append(f"<p class=\"note\">The data cannot be read now, so its pictures, the confusion matrix and the "
                     f"top losses are left out: {esc(problem)}</p>")
        return "".join(parts)
    items = review.dls.items
    counts = items.counts()
    parts.append(f"<p>{len(counts)} classes · {int(counts['train'].sum()):,} training and "
                 f"{int(counts['valid'].sum()):,} validation pictures (as the folder is now).</p>")
    parts.append(_figure(counts_figure(counts), "counts"))
    parts.append(_table(["class", "train", "valid", "total"],
                        [[c, int(r.train), int(r.valid), int(r.total)] for c, r in counts.iterrows()], {1, 2, 3}))
    per_class = max(1, min(EXAMPLES_PER_CLASS, EXAMPLES_TOTAL // max(1, len(counts))))
    shown = items.classes[:EXAMPLES_TOTAL]
    first: dict[str, list[str]] = {c: [] for c in shown}
    for rel, label in zip(items.rel_paths, items.labels):
        if label in first and len(first[label]) < per_class:
            first[label].append(rel)
    parts.append("<h3>Examples</h3>")
    for c in shown:
        tiles = "".join(_tile(thumbnail(items.root / rel, EXAMPLE_PX), [], rel) for rel in first[c])
        parts.append(f"<div class=\"classrow\"><h4>{esc(c)}</h4><div class=\"grid examples\">{tiles}</div></div>")
    if len(items.classes) > len(shown):
        parts.append(f"<p class=\"note\">… and {len(items.classes) - len(shown)} more classes.</p>")
    return "".join(parts)


def _settings_section(spec: RunSpec, result: dict) -> str:
    rows = [[human, value, dotted] for human, value, dotted in setting_rows(spec)]
    if spec.model.pretrained and result.get("pretrained") is False:  # asked for, but none could be had
        rows = [[h, "yes, but none could be had: trained from scratch" if d == "model.pretrained" else v, d]
                for h, v, d in rows]
    return "<h2>Settings</h2>" + _table(["setting", "value", "name in spec.json"], rows)


def _training_section(record: RunRecord) -> str:
    epochs, batches = record.epochs, record.batches
    kept = record.result.get("kept_epoch", record.row.get("kept_epoch"))
    parts = ["<h2>Training</h2>"]
    if len(batches):
        parts.append(f"<p class=\"verdict\">{esc(verdict_of_run(batches, epochs).text)}</p>")
    else:
        parts.append("<p class=\"note\">No verdict: the per-batch losses of this run are not in this computer's runs "
                     "database, so the curves below are per epoch only.</p>")
    if len(epochs):
        parts.append(_figure(curves_figure(batches, epochs, kept), "curves"))
        rows = [[int(r.epoch), r.phase or "", _num(r.train_loss, ".6f"), _num(r.valid_loss, ".6f"),
                 _num(r.error_rate, ".6f"), _num(r.accuracy, ".6f"), _duration(r.time)]
                for r in epochs.itertuples()]
        parts.append(_table(["epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "time"], rows,
                            {2, 3, 4, 5}))
    else:
        parts.append("<p class=\"note\">No epoch finished.</p>")
    return "".join(parts)


def _kept_section(record: RunRecord, review: RunReview | None) -> str:
    r = record.result
    kept = r.get("kept_epoch")
    if kept is None:
        return "<h2>The kept model</h2><p>No model was kept (the run ended before its first epoch).</p>"
    why = "lowest validation loss" if record.spec.train.keep_best else "the last epoch"
    cards = "".join(f"<div class=\"card\"><b>{v}</b><span>{esc(k)}</span></div>" for k, v in (
        ("accuracy", _pct(r.get("accuracy"))), ("error rate", _pct(r.get("error_rate"))),
        ("validation loss", _num(r.get("valid_loss"))), ("epochs trained", r.get("epochs", len(record.epochs)))))
    text = f"<h2>The kept model</h2><p>Model from epoch {int(kept)} ({why}).</p><div class=\"cards\">{cards}</div>"
    if review is not None and len(review.preds):
        text += (f"<p class=\"note\">The sections below score it on the validation pictures as they are on disk now "
                 f"({len(review.preds):,} pictures, accuracy {_pct(review.preds.accuracy)}).</p>")
    return text


def _review_sections(review: RunReview) -> list[str]:
    p = review.preds
    classes = p.classes
    cm = confusion_matrix(p)
    out = ["<h2>Confusion matrix</h2><p class=\"note\">Rows: the actual class; columns: the predicted one. The "
           "diagonal is what the model gets right.</p>" + _figure(confusion_figure(cm, classes), "confusion")]
    metrics = per_class_metrics(p)
    rows = [[c, f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", int(m.support)] for c, m in metrics.iterrows()]
    out.append("<h2>Precision, recall and F1 per class</h2>" + _figure(class_metrics_figure(metrics), "per-class")
               + _table(["class", "precision", "recall", "F1", "validation pictures"], rows, {1, 2, 3, 4}))
    top = top_losses(p, TOP_LOSSES)
    root = review.dls.items.root
    tiles = "".join(_tile(thumbnail(root / t.item), [f"{t.predicted} / {t.actual}",
                                                      f"loss {t.loss:.2f} · p {t.probability:.2f}", Path(t.item).name],
                          t.item) for t in top.itertuples())
    out.append("<h2>Top losses</h2><p class=\"note\">The validation pictures the model was most wrong (or least sure) "
               "about: predicted / actual, the loss, and the probability of the prediction.</p>"
               f"<div class=\"grid losses\">{tiles}</div>")
    pairs = most_confused(p)[:CONFUSED_PAIRS]
    out.append("<h2>Most confused</h2>" + (_table(["actual", "predicted as", "pictures"], [list(t) for t in pairs], {2})
                                            if pairs else "<p>No validation picture was confused.</p>"))
    return out


def _machine_section(record: RunRecord) -> str:
    r, row, spec = record.result, record.row, record.spec
    host = row.get("host")
    started = row.get("started")
    rows = [["date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) if started else "–"],
            ["machine", host or "not recorded"],
            ["device", r.get("device") or spec.device.device], ["number precision", r.get("precision") or "–"],
            ["CPU threads", spec.device.threads or "all"]]
    if host and host == socket.gethostname():
        rows.append(["processor", cpu_name()])
    if r.get("world_size", 1) > 1:
        rows.append(["processes (torchrun)", r["world_size"]])
    rows += [["time taken", _duration(r.get("seconds", row.get("seconds")))],
             ["estimated beforehand", _duration(r.get("estimated_s")) if r.get("estimated_s") else "–"],
             ["training speed", f"{r['images_per_s']:,.0f} pictures/s" if r.get("images_per_s") else "–"],
             ["started from", row.get("source") or "–"], ["seed", spec.train.seed]]
    return "<h2>Machine and time</h2>" + _table(["what", "value"], rows)


def _replay_section(folder: Path, spec: RunSpec) -> str:
    kept = (Path(folder) / SPEC_FILE).is_file()
    command = replay_command(folder) if kept else f"python -m engine train --spec {SPEC_FILE}"
    return ("<h2>Replay this run</h2><p>From a Loupe checkout, this trains the same run again from its settings "
            "(the same numbers on the same kind of computer; the data folder must be where it was):</p>"
            f"<pre><code>{esc(command)}</code></pre>"
            f"<details{'' if kept else ' open'}><summary>{SPEC_FILE}: the run's complete settings (save them as "
            f"{SPEC_FILE} to replay the run on another computer)</summary><pre><code>{esc(spec.to_json())}</code></pre>"
            "</details>")
