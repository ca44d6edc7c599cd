"""Tests for the take-away zip of engine/export.py: predict.py without Loupe, train.py through the command line."""
import ast
import dataclasses
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

from engine.augment import AugSettings
from engine.builtin import BUILTINS, ensure_builtin
from engine.cli import build, build_parser, parse_split, settings_from
from engine.data import DataConfig, DataLoaders, label_items
from engine.errors import UserError
from engine.export import (PREDICT_TEMPLATE, export_run, export_zip, load_run, predict, train_command,
                           train_command_notes, train_script)
from engine.images import open_image, presize_all
from engine.labels import LabelRule, parse_label_rule
from engine.models import create_model
from engine.sources import scan_folder
from engine.split import SplitRule
from engine.training import TrainSettings, json_safe

DIGITS = BUILTINS["digits-names"]
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
    """The run store's records (data, model, train) of a small model trained on the built-in digits."""
    config = DataConfig(root=str(digits_root), name=DIGITS.title, label=DIGITS.label_rule, split=DIGITS.split_rule,
                        size=28, presize=32, method="crop", bs=64, aug=DIGITS.aug)
    settings = TrainSettings(arch="small", method="one_cycle", epochs=1, lr=3e-3, save_best=False, seed=0)
    return config, settings


@pytest.fixture(scope="module")
def trained(digits_root, records, one_thread, quick_train):
    """create_model('small', 10) after 60 steps of Adam on batches of 16, as in test_export.py."""
    config, _ = records
    items = label_items(scan_folder(digits_root), config.label, config.split)
    dls = DataLoaders(items, presize_all(items.scanned_paths, config.presize), size=config.size, bs=16,
                      aug=AugSettings.off(), seed=0)
    return quick_train(dls), dls


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, trained, records):
    model, dls = trained
    config, _ = records
    return export_run(tmp_path_factory.mktemp("runs") / "7", model, "small", dls.classes, config,
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


def test_the_zip_holds_the_model_and_the_scripts(small_run, records, trained):
    config, settings = records
    model = {"arch": "small", "pretrained": False, "classes": trained[1].classes}
    argv = train_command(json_safe(dataclasses.asdict(config)), model, dataclasses.asdict(settings))
    data = export_zip(small_run, train_argv=argv, notes=["a note with a \\ and \"quotes\""], name="digits run 7")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names == [f"loupe-digits-run-7/{f}" for f in
                         ("README.txt", "labels.json", "model.pt", "predict.py", "preprocessing.json", "run.json", "train.py")]
        assert zf.read("loupe-digits-run-7/model.pt") == (small_run / "model.pt").read_bytes()
        assert zf.read("loupe-digits-run-7/predict.py").decode() == PREDICT_TEMPLATE.read_text()
        readme = zf.read("loupe-digits-run-7/README.txt").decode()
        script = zf.read("loupe-digits-run-7/train.py").decode()
    assert "python loupe-digits-run-7/predict.py image.png" in readme and "torchvision" in readme
    namespace: dict = {}
    exec(compile(script, "train.py", "exec"), namespace)  # not run: __name__ is not "__main__"
    assert namespace["ARGS"] == argv
    assert 'a note with a \\ and "quotes"' in namespace["__doc__"] and "Loupe checkout" in namespace["__doc__"]
    # no train.py without a command; written to dest as well
    dest = small_run.parent / "bundle.zip"
    plain = export_zip(small_run, dest=dest)
    assert dest.read_bytes() == plain
    assert "loupe-7/train.py" not in zipfile.ZipFile(io.BytesIO(plain)).namelist()


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
    config = DataConfig(root=str(tmp_path), name="digits", size=64, presize=72, method="squish")
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


# ---------------------------------------------------------------- train_command

def test_train_command_for_the_built_in_digits(records, digits_root):
    config, settings = records
    data = json_safe(dataclasses.asdict(config))
    train = dataclasses.asdict(dataclasses.replace(settings, method="fine_tune", epochs=2, patience=1, save_best=True,
                                                   seed=7))  # the app stores pretrained=True for every model
    model = {"arch": "small", "pretrained": False, "classes": [str(i) for i in range(10)]}
    argv = train_command(data, model, train)
    assert argv == [
        "train", "--data", "builtin:digits-names", "--label", r"regex:^(.+)_\d+\.png$", "--split", "random:0.2:42",
        "--arch", "small", "--no-pretrained", "--size", "28", "--presize", "32", "--bs", "64", "--no-flip",
        "--method", "fine_tune", "--epochs", "2", "--lr", "0.003", "--freeze-epochs", "1", "--patience", "1",
        "--save-best", "--seed", "7", "--out", "model",
    ]
    assert train_command_notes(data, model, train) == []
    args = build_parser().parse_args(argv)
    assert settings_from(args) == TrainSettings(**{**train, "pretrained": False})  # small: never pretrained
    _, rebuilt, _ = build(args)  # the command line's own reading of the arguments
    assert rebuilt == config


def test_train_command_notes_what_the_command_line_cannot_say(tmp_path):
    root = tmp_path / "pets"
    config = DataConfig(
        root=str(root), name="pets",
        label=LabelRule(kind="csv", csv_path=str(root / "meta" / "labels.csv"), file_col="file", label_col="breed"),
        split=SplitRule(kind="folder", train_name="train", valid_name="val"),
        size=224, presize=256, method="squish", bs=32, aug=AugSettings(max_rotate=20.0))
    train = dataclasses.asdict(TrainSettings(arch="resnet34", pretrained=True, lr=1e-3, lr_mult=10))
    model = {"arch": "resnet34", "pretrained": False, "classes": ["a", "b"]}  # the weights could not be had
    data = json_safe(dataclasses.asdict(config))
    argv = train_command(data, model, train)
    assert argv == [
        "train", "--data", str(root), "--label", "csv:meta/labels.csv:breed", "--split", "folder:train:val",
        "--arch", "resnet34", "--no-pretrained", "--size", "224", "--presize", "256", "--bs", "32",
        "--method", "fine_tune", "--epochs", "3", "--lr", "0.001", "--freeze-epochs", "1", "--patience", "0",
        "--save-best", "--out", "model",
    ]
    notes = train_command_notes(data, model, train)
    assert len(notes) == 5
    assert "“file”" in notes[0]  # the CSV's file column
    assert "from scratch" in notes[1]
    assert "max_rotate=20.0" in notes[2] and "max_rotate=10.0" in notes[2]
    assert "squish" in notes[3]
    assert "lr / 10" in notes[4]
    args = build_parser().parse_args(argv)
    assert parse_label_rule(args.label, root) == dataclasses.replace(config.label, file_col="name")
    assert parse_split(args.split, root) == config.split
    assert args.aug == "fastai" and not args.no_flip
    assert settings_from(args) == TrainSettings(**{**train, "pretrained": False, "lr_mult": 100})

    # no augmentation at all, and no flips
    off = json_safe(dataclasses.asdict(dataclasses.replace(config, aug=AugSettings.off())))
    assert train_command(off, model, train)[16:18] == ["--aug", "none"]
    no_flip = json_safe(dataclasses.asdict(dataclasses.replace(config, aug=AugSettings(do_flip=False))))
    assert train_command(no_flip, model, train)[16] == "--no-flip"
    assert not any("augmentation" in n for n in train_command_notes(no_flip, model, train))


def test_the_generated_train_py_runs_the_command_line(tmp_path, records, trained):
    config, settings = records
    model = {"arch": "small", "pretrained": False, "classes": trained[1].classes}
    argv = train_command(json_safe(dataclasses.asdict(config)), model, dataclasses.asdict(settings))
    script = tmp_path / "bundle" / "train.py"
    script.parent.mkdir()
    script.write_text(train_script(argv))
    # a stand-in Loupe checkout whose `python -m engine` prints the arguments it gets (training is tested above)
    checkout = tmp_path / "checkout"
    (checkout / "engine").mkdir(parents=True)
    (checkout / "engine" / "__init__.py").write_text("")
    (checkout / "engine" / "__main__.py").write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script)], cwd=checkout, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == argv
