"""Tests for the take-away zip of engine/train/export.py: predict.py without Loupe, train.py replaying the run's spec."""
import ast
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.data.augment import AugSettings
from engine.data.builtin import BUILTINS, ensure_builtin
from engine.data.loaders import DataLoaders, PresizeCache, label_items
from engine.errors import UserError
from engine.train.export import PREDICT_TEMPLATE, cannot_repeat, export_run, export_zip, load_run, predict, train_script
from engine.data.decode_pool import presize_all
from engine.data.images import open_image
from engine.train.models import create_model
from engine.data.sources import scan_folder
from engine.spec import DataSpec, LabelRule, ModelSpec, RunSpec, TrainSpec, load_spec, save_spec
from engine.train.run import train_run

DIGITS = BUILTINS["digits-names"]
ROOT = Path(__file__).resolve().parents[2]
ALLOWED_IMPORTS = {"__future__", "argparse", "json", "sys", "pathlib", "numpy", "torch", "torchvision", "PIL"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A LOUPE_HOME of its own, so the built-in digits live where the app keeps them: <home>/builtin/digits-names."""
    path = tmp_path_factory.mktemp("loupe-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def digits_root(home) -> Path:
    return ensure_builtin("digits-names")


@pytest.fixture(scope="module")
def records(digits_root):
    """The spec of a small model trained on the built-in digits."""
    return RunSpec(data=DataSpec(source="builtin:digits-names", label=DIGITS.label_rule, split=DIGITS.split_rule,
                                 size=28, presize=32, presize_method="crop", bs=64), augment=DIGITS.aug,
                   model=ModelSpec(arch="small"), train=TrainSpec(schedule="one_cycle", epochs=1, lr=3e-3,
                                                                  keep_best=False, seed=0))


@pytest.fixture(scope="module")
def trained(digits_root, records, one_thread, quick_train):
    """create_model('small', 10) after 60 steps of Adam on batches of 16, as in test_export.py."""
    data = records.data
    items = label_items(scan_folder(digits_root), data.label, data.split)
    dls = DataLoaders(items, presize_all(items.scanned_paths, data.presize), size=data.size, bs=16,
                      aug=AugSettings.off(), seed=0)
    return quick_train(dls), dls


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, trained, records):
    model, dls = trained
    return export_run(tmp_path_factory.mktemp("runs") / "7", model, "small", dls.classes, records.data,
                      extra={"accuracy": 0.9})


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, trained) -> list[Path]:
    """Validation digits as files: plain PNGs, one wider than high (centre crop), one RGBA, one JPEG."""
    _, dls = trained
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for n, i in enumerate(dls.valid_idx[:6].tolist()):
        img = Image.open(dls.items.root / dls.items.rel_paths[i])
        if n == 3:
            img = img.resize((40, 28))
        elif n == 4:
            img = img.convert("RGBA")
        path = folder / (f"digit {n}.jpg" if n == 5 else f"digit {n}.png")
        img.save(path)
        paths.append(path)
    return paths


def _unzip(data: bytes, dest: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(dest)
    (top,) = dest.iterdir()
    return top


def _run_predict(folder: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """predict.py in isolated mode (-I: no PYTHONPATH, no user site, not even the script's folder on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-I", str(folder / "predict.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _check_same_predictions(results: list[dict], expected: list[list[tuple[str, float]]]) -> None:
    assert len(results) == len(expected)
    for result, top in zip(results, expected):
        assert len(result["top"]) == 5
        assert result["top"][0][0] == top[0][0]  # the same most likely class
        got = dict(result["top"])
        assert set(got) == {c for c, _ in top}
        assert all(abs(got[c] - p) < 1e-4 for c, p in top)


# ---------------------------------------------------------------- predict.py

def test_predict_template_imports_no_loupe():
    tree = ast.parse(PREDICT_TEMPLATE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= ALLOWED_IMPORTS


def test_the_zip_holds_the_model_the_spec_and_the_scripts(small_run, records):
    data = export_zip(small_run, spec=records, name="digits run 7")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names == [f"loupe-digits-run-7/{f}" for f in ("README.txt", "labels.json", "model.pt", "predict.py",
                                                               "preprocessing.json", "run.json", "spec.json", "train.py")]
        assert zf.read("loupe-digits-run-7/model.pt") == (small_run / "model.pt").read_bytes()
        assert zf.read("loupe-digits-run-7/predict.py").decode() == PREDICT_TEMPLATE.read_text()
        assert RunSpec.from_json(zf.read("loupe-digits-run-7/spec.json").decode()) == records
        readme = zf.read("loupe-digits-run-7/README.txt").decode()
        assert zf.read("loupe-digits-run-7/train.py").decode() == train_script(records)
    assert "python loupe-digits-run-7/predict.py image.png" in readme and "spec.json" in readme
    # no spec, no train.py; written to dest as well
    dest = small_run.parent / "bundle.zip"
    plain = export_zip(small_run, dest=dest)
    assert dest.read_bytes() == plain
    assert "loupe-7/train.py" not in zipfile.ZipFile(io.BytesIO(plain)).namelist()
    # a run folder that holds its spec.json puts it in the zip by itself
    save_spec(records, small_run / "spec.json")
    try:
        assert "loupe-7/spec.json" in zipfile.ZipFile(io.BytesIO(export_zip(small_run))).namelist()
    finally:
        (small_run / "spec.json").unlink()


def test_predict_py_runs_without_loupe_and_agrees_with_predict(small_run, digit_files, tmp_path):
    folder = _unzip(export_zip(small_run), tmp_path / "unzipped")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("not an image")
    # `engine` cannot be imported where predict.py runs
    probe = subprocess.run([sys.executable, "-I", "-c", "import importlib.util; print(importlib.util.find_spec('engine'))"],
                           cwd=elsewhere, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "None"

    args = ["--json", *map(str, digit_files[:3]), "notes.txt", "missing.png", *map(str, digit_files[3:])]
    result = _run_predict(folder, args, cwd=elsewhere)
    assert result.returncode == 1, result.stderr  # some files were not images; the others were still classified
    assert "notes.txt" in result.stderr and "missing.png" in result.stderr
    out = json.loads(result.stdout)
    assert [r["image"] for r in out] == args[1:]
    assert [("error" in r) for r in out] == [False] * 3 + [True] * 2 + [False] * 3
    good = [r for r in out if "top" in r]
    expected = predict(load_run(small_run), [open_image(p) for p in digit_files], k=5)
    _check_same_predictions(good, expected)



def _load_predict_module(folder: Path):
    """The unzipped predict.py as a module, to call its main() in this process (torch is already imported here)."""
    spec = importlib.util.spec_from_file_location("loupe_bundle_predict", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_py_prints_a_table(small_run, digit_files, tmp_path, capsys):
    folder = _unzip(export_zip(small_run), tmp_path)
    assert _load_predict_module(folder).main(["--top", "2", str(digit_files[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = predict(load_run(small_run), [open_image(digit_files[0])], k=2)[0]
    assert lines == [str(digit_files[0]), *(f"  {p:7.2%}  {c}" for c, p in expected)]


def test_predict_py_rebuilds_a_resnet(tmp_path, digit_files, trained, capsys):
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 10)  # random weights
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    config = DataSpec(source=str(tmp_path), size=64, presize=72, presize_method="squish")
    run = export_run(tmp_path / "resnet-run", model, "resnet18", trained[1].classes, config)
    folder = _unzip(export_zip(run), tmp_path / "unzipped")
    assert folder.name == "loupe-resnet-run" and not (folder / "run.json").exists()
    assert _load_predict_module(folder).main(["--json", *map(str, digit_files)]) == 0
    expected = predict(load_run(run), [open_image(p) for p in digit_files], k=5)
    _check_same_predictions(json.loads(capsys.readouterr().out), expected)


def test_predict_py_reads_an_export_from_before_the_fastai_head(small_run, trained, tmp_path):
    # no "pool" in preprocessing.json: the head pooled avg then max, and predict.py must rebuild it so
    legacy = shutil.copytree(small_run, tmp_path / "legacy")
    prep = json.loads((legacy / "preprocessing.json").read_text())
    assert prep.pop("pool") == "max_avg"
    (legacy / "preprocessing.json").write_text(json.dumps(prep))
    _, dls = trained
    x, _ = next(dls.valid())
    for run in (small_run, legacy):
        folder = _unzip(export_zip(run), tmp_path / f"unzipped-{run.name}")
        model, _, _ = _load_predict_module(folder).load_model(folder)
        expected = load_run(run).model
        with torch.no_grad():
            assert torch.equal(model(x), expected(x))
    with torch.no_grad():
        new, old = load_run(small_run).model, load_run(legacy).model
        features = old[0](x)
        pooled = torch.cat([features.mean((2, 3), keepdim=True), features.amax((2, 3), keepdim=True)], dim=1)
        assert torch.equal(old(x), old[1][1:](pooled))  # Loupe's forward before the change
        assert torch.equal(new(x), new[1][1:](pooled.roll(pooled.shape[1] // 2, dims=1)))  # max first


def test_an_incomplete_run_cannot_be_zipped(tmp_path):
    with pytest.raises(UserError, match="labels.json is missing"):
        export_zip(tmp_path)


# ---------------------------------------------------------------- train.py

def test_the_zip_replays_a_run_with_squish_presize_and_custom_augmentation(home, digits_root, tmp_path):
    """Settings the old argv-based train.py could not repeat: the unzipped train.py's spec trains the same numbers."""
    spec = RunSpec(data=DataSpec(source="builtin:digits-names", size=28, presize=40, presize_method="squish", bs=64),
                   augment=AugSettings(do_flip=False, max_rotate=25.0, max_zoom=1.3, max_lighting=0.4, min_scale=0.8),
                   model=ModelSpec(arch="small"), train=TrainSpec(schedule="one_cycle", epochs=1, lr=4e-3, seed=11))
    first = train_run(spec, PresizeCache(), None, out_dir=tmp_path / "run")
    folder = _unzip(export_zip(tmp_path / "run"), tmp_path / "unzipped")
    replayed = load_spec(folder / "spec.json")
    assert replayed.augment == spec.augment and replayed.data.presize_method == "squish"
    env = {**os.environ, "LOUPE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "engine", "train", "--spec", str(folder / "spec.json"),
                           "--out", str(tmp_path / "again"), "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert again["valid_loss"] == pytest.approx(first["valid_loss"], abs=1e-4)
    assert again["accuracy"] == first["accuracy"]


def test_the_generated_train_py_runs_the_command_line_on_its_spec(tmp_path):
    script = tmp_path / "bundle" / "train.py"
    script.parent.mkdir()
    script.write_text(train_script(RunSpec(data=DataSpec(source="/pictures/pets"))))
    # a stand-in Loupe checkout whose `python -m engine` prints the arguments it gets (training is tested above)
    checkout = tmp_path / "checkout"
    (checkout / "engine").mkdir(parents=True)
    (checkout / "engine" / "__init__.py").write_text("")
    (checkout / "engine" / "__main__.py").write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script)], cwd=checkout, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["train", "--spec", str(script.with_name("spec.json")), "--out", "model"]
    assert "not in the spec: the pictures: read from /pictures/pets" in result.stderr  # said before it trains


def test_train_py_lists_what_the_command_line_cannot_repeat():
    folder = RunSpec(data=DataSpec(source='/pics/a """ \\N b\n', label=LabelRule(kind="csv", csv_path="/pics/l.csv")),
                     model=ModelSpec(arch="resnet34"), train=TrainSpec(seed=3))
    notes = cannot_repeat(folder)
    assert notes[0].startswith('the pictures: read from /pics/a """ \\N b\n') and "the CSV file /pics/l.csv" in notes
    assert any(n.startswith("resnet34's ImageNet weights") for n in notes) and not any("seed" in n for n in notes)
    namespace = {"__file__": "train.py", "__name__": "not main"}
    exec(compile(train_script(folder), "train.py", "exec"), namespace)  # a folder's name stays data, never code
    assert namespace["CANNOT_REPEAT"] == notes
    builtin = cannot_repeat(RunSpec(train=TrainSpec(seed=1)))  # the digits are made again; the small model has no weights
    assert builtin == ["the same numbers: only on the same kind of processor (CPU or GPU model) with the same torch"]
