"""The run report (engine/results/report.py and `python -m engine report`): one self-contained HTML file, on a real tiny run."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil

import pytest
from PIL import Image
from plotly.offline import get_plotlyjs

from engine.data.augment import AugSettings
from engine.cli import main
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.results.interpret import most_confused, per_class_metrics, top_losses
from engine.data.labels import LabelRule
from engine.results.report import build_report, replay_command, setting_rows
from engine.results.review import review_run
from engine.store.runs import RunStore
from engine.spec import SETTING_NAMES, DataSpec, RunSpec, load_spec, override
from engine.data.split import SplitRule
from engine.train.run import train_run
from engine.train.verdict import verdict_of_run

HOSTILE = '<img src=x onerror=alert(1)>&"q"'  # a class name (and file names) a browser would run if not escaped
SECTIONS = ("The data set", "Settings", "Training", "The kept model", "Confusion matrix",
            "Precision, recall and F1 per class", "Top losses", "Most confused", "Machine and time", "Replay this run")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("report-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def run(home, tmp_path_factory, write_digits, one_thread):
    """One epoch of the small model on 200 real digits, the ones renamed to a hostile class; recorded in the
    runs database of this module's LOUPE_HOME. Returns (run folder, train_run's result)."""
    data = write_digits(tmp_path_factory.mktemp("report-digits"), count=200)
    for path in sorted(data.glob("one_*.png")):
        path.rename(data / path.name.replace("one_", HOSTILE + "_", 1))
    spec = override(RunSpec(), {"data.source": str(data), "data.label": LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$"),
                                "data.size": 28, "data.presize": 32, "data.bs": 32, "model.arch": "small",
                                "model.pretrained": False, "train.schedule": "one_cycle", "train.epochs": 1,
                                "train.lr": 5e-3, "train.seed": 0, "device.threads": 1})
    store = RunStore()
    try:
        result = train_run(spec, PresizeCache(max_entries=1), store, source="cli", out_dir=home / "run")
    finally:
        store.close()
    assert result["status"] == "done" and result["out"] == str(home / "run")
    return home / "run", result


@pytest.fixture(scope="module")
def page(run) -> str:
    return build_report(run[0])


def test_every_setting_has_a_human_name():
    full = RunSpec(data=DataSpec(label=LabelRule(), split=SplitRule()), augment=AugSettings())
    names = (set(RunSpec().flat()) | set(full.flat())) - {"version"}
    rules = {n.rsplit(".", 1)[0] for n in names if n.startswith(("data.label.", "data.split."))}
    wanted = {n for n in names if not n.startswith(("data.label.", "data.split."))} | rules
    assert wanted <= set(SETTING_NAMES)
    rows = setting_rows(override(RunSpec(), {"train.lr": 2e-3, "train.keep_best": False}))
    assert ("Learning rate", "0.002", "train.lr") in rows
    assert ("Keep the epoch with the lowest validation loss", "no", "train.keep_best") in rows
    assert ("Augmentation", "automatic", "augment") in rows  # left automatic, said so
    rows = setting_rows(full)
    assert ("Augmentation: flip left-right", "yes", "augment.do_flip") in rows
    assert ("Label rule", LabelRule().describe(), "data.label") in rows


def test_the_report_has_every_section_with_the_runs_own_numbers(run, page):
    folder, result = run
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == list(SECTIONS)
    store = RunStore()
    try:
        batches, epochs = store.batches(result["run_id"]), store.epochs(result["run_id"])
        row = store.run(result["run_id"])
    finally:
        store.close()
    assert f'<p class="verdict">{html.escape(verdict_of_run(batches, epochs).text)}</p>' in page
    assert f"Model from epoch {result['kept_epoch']} (lowest validation loss)" in page
    assert f"<b>{result['accuracy']:.1%}</b><span>accuracy</span>" in page
    assert html.escape(replay_command(folder)) in page
    assert f"python -m engine train --spec {folder.resolve() / 'spec.json'}" in page
    assert f"<pre><code>{html.escape(load_spec(folder).to_json())}</code></pre>" in page  # to replay it elsewhere
    assert "<td>Learning rate</td><td>0.005</td><td>train.lr</td>" in page
    assert f"<td>machine</td><td>{html.escape(row['host'])}</td>" in page
    for chart in ("counts", "curves", "confusion", "per-class"):
        assert f'id="chart-{chart}"' in page and f'"chart-{chart}"' in page.split(f'id="chart-{chart}"', 1)[1]

    # the tables agree with the interpretation of the same model on the same validation pictures
    review = review_run({"id": result["run_id"], "weights_path": str(folder), "spec": load_spec(folder)}, PresizeCache())
    metrics = per_class_metrics(review.preds)
    for name, m in metrics.iterrows():
        assert (f"<tr><td>{html.escape(name)}</td><td class=num>{m.precision:.3f}</td><td class=num>{m.recall:.3f}"
                f"</td><td class=num>{m.f1:.3f}</td><td class=num>{int(m.support)}</td></tr>") in page
    shown = re.findall(r'<figure><img src="data:image/[a-z]+;base64,[^"]+" alt="([^"]*)"', page.split("<h2>Top losses")[1])
    assert shown == [html.escape(item) for item in top_losses(review.preds, 12)["item"]]
    pairs = page.split("<h2>Most confused</h2>")[1].split("</table>")[0]
    for actual, predicted, count in most_confused(review.preds)[:15]:
        assert f"<tr><td>{html.escape(actual)}</td><td>{html.escape(predicted)}</td><td class=num>{count}</td></tr>" in pairs


def test_user_text_is_escaped_and_nothing_is_fetched(page):
    assert HOSTILE not in page and "<img src=x" not in page
    assert f"<h4>{html.escape(HOSTILE)}</h4>" in page  # the class's row of examples
    assert page.count(get_plotlyjs()) == 1  # plotly's script, inlined once
    ours = page.replace(get_plotlyjs(), "")  # plotly's own script names map servers it never calls here
    tags = re.findall(r"<(?:img|script|link|iframe|source|video|audio|object|embed)\b[^>]*>", ours)
    assert tags and all(re.fullmatch(r'<img src="data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+"[^>]*>', t)
                        or re.fullmatch(r'<script( type="text/javascript")?>', t) for t in tags), [t[:80] for t in tags]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", ours)
    assert "@import" not in ours and "url(" not in ours


def test_pictures_are_small_real_images(page):
    uris = re.findall(r'src="data:image/(png|jpeg);base64,([^"]+)"', page)
    assert len(uris) >= 10 + 12  # examples of each class, then the top losses
    for fmt, data in uris:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format.lower() == fmt and max(img.size) <= 112


def test_a_digits_report_is_a_few_megabytes(page):
    size = len(page.encode("utf-8"))
    assert size - len(get_plotlyjs()) < 1_000_000  # all but plotly's script (about 4.8 MB in plotly 6-7)
    assert size < 6_000_000


def test_a_run_whose_data_is_gone_still_gets_a_report_that_says_so(run, tmp_path):
    folder = tmp_path / "moved"
    shutil.copytree(run[0], folder)
    spec = json.loads((folder / "spec.json").read_text())
    spec["data"]["source"] = str(tmp_path / "no-such-folder")
    (folder / "spec.json").write_text(json.dumps(spec))
    page = build_report(folder)
    assert "The data cannot be read now" in page and "no-such-folder" in page
    assert "<h2>Confusion matrix</h2>" not in page and "<h2>Top losses</h2>" not in page
    # not the database's run (its folder is elsewhere): the curves per epoch from run.json, and no verdict
    assert "No verdict" in page and 'id="chart-curves"' in page
    assert "<h2>Replay this run</h2>" in page


def test_a_run_from_before_spec_json_gets_its_spec_from_the_runs_database(run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(run[0], folder)
    spec = load_spec(folder / "spec.json")
    (folder / "spec.json").unlink()
    with pytest.raises(UserError, match="no spec.json"):
        build_report(folder)
    page = build_report(folder, spec=spec)  # what the Runs page has: the database's spec of the run
    assert "<h2>Top losses</h2>" in page
    assert "<pre><code>python -m engine train --spec spec.json</code></pre>" in page
    assert f"<pre><code>{html.escape(spec.to_json())}</code></pre>" in page


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="no spec.json"):
        build_report(tmp_path)
    with pytest.raises(UserError, match="There is no run folder"):
        build_report(tmp_path / "nowhere")


def test_the_command_line_writes_the_report(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "share" / "report.html"
    assert main(["report", str(folder), "--out", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written == {"out": str(out), "bytes": out.stat().st_size}
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<h2>Top losses</h2>" in text
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "error: There is no run folder" in capsys.readouterr().err
