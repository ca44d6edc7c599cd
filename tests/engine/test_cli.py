"""`python -m engine`: arguments, the epoch table, the JSON line, specs and replays, the runs list, export, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.data.builtin import DIGIT_WORDS
from engine.cli import main, parse_split
from engine.errors import UserError
from engine.train.export import load_run, predict
from engine.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory, write_digits):
    return write_digits(tmp_path_factory.mktemp("cli-digits"), count=300)


def test_train_prints_the_epoch_table_and_json_and_exports(digits_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", "--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$",
         "--arch", "small", "--no-pretrained", "--size", "28", "--presize", "32", "--bs", "32", "--epochs", "2",
         "--schedule", "one_cycle", "--lr", "5e-3", "--no-flip", "--seed", "0", "--out", str(out), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]
    assert [line.split()[0] for line in lines[1:3]] == ["0", "1"]
    result = json.loads(lines[-1])
    assert {"accuracy", "valid_loss", "epochs", "seconds", "images_per_s"} <= set(result)
    assert result["epochs"] == 2 and result["pretrained"] is False and result["images_per_s"] > 0
    assert result["accuracy"] == pytest.approx(float(lines[2].split()[4]), abs=1e-6)
    assert result["accuracy"] > 0.5  # 2 epochs on 240 real digits: far above chance (0.1)
    valid_losses = [float(line.split()[2]) for line in lines[1:3]]
    assert result["kept_epoch"] == valid_losses.index(min(valid_losses))  # keep-best: whichever epoch this CPU made best
    assert result["seed"] == 0 and result["out"] == str(out)
    assert result["estimated_s"] > 0 and "Estimated time: about" in proc.stderr  # shown before the run
    spec = load_spec(out / "spec.json")
    assert (spec.train.schedule, spec.train.lr, spec.train.seed, spec.data.size, spec.data.presize) == \
        ("one_cycle", 5e-3, 0, 28, 32)
    assert spec.augment.do_flip is False and spec.data.source == str(digits_dir.resolve())
    exported = load_run(out)
    assert exported.classes == sorted(set(DIGIT_WORDS))
    assert exported.preprocessing["size"] == 28
    seven = next(digits_dir.glob("seven_*.png"))
    top = predict(exported, [Image.open(seven)], k=3)[0]
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_lr_find_json(digits_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    code = main(["lr-find", "--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--bs", "16",
                 "--size", "28", "--num-it", "40", "--seed", "0", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"valley", "minimum", "steep"} <= set(result["suggestions"])
    assert len(result["lrs"]) == len(result["losses"]) <= 40
    assert result["lrs"][0] == pytest.approx(1e-7)


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "builtin:nope"], "Unknown built-in data set"),
    (["train", "--data", "/no/such/folder"], "does not exist"),
    (["train", "--data", "DIGITS", "--label", "regex:^(.+"], "not a valid regular expression"),
    (["train", "--data", "DIGITS", "--label", "colour:red"], "Unknown label rule"),
    (["train", "--data", "DIGITS", "--label", "regex:((a{1000}){1000}){1000}(x)"], "pattern"),
    (["train", "--data", "DIGITS", "--split", "random:lots"], "Could not read the split"),
    (["train", "--data", "DIGITS", "--size", "0"], "data.size must be a positive number"),
    (["train", "--data", "DIGITS", "--lr-slice", "1e-3"], "Could not read the learning-rate slice"),
    (["train", "--data", "DIGITS", "--lr-slice", "1e-3:1e-2"], "add --schedule one_cycle"),
    (["train", "--data", "DIGITS", "--schedule", "one_cycle", "--lr-slice", "1e-2:1e-3"], "from a low rate"),
    (["train", "--spec", "NOWHERE"], "There is no spec file"),
])
def test_bad_arguments_give_a_message_and_exit_code_2(argv, message, digits_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    argv = [str(digits_dir) if a == "DIGITS" else str(tmp_path / "nowhere.json") if a == "NOWHERE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--arch", "vgg"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


def test_parse_split(tmp_path):
    assert parse_split("random", tmp_path).valid_pct == 0.2
    rule = parse_split("stratified:0.3:7", tmp_path)
    assert (rule.kind, rule.valid_pct, rule.seed, rule.stratify) == ("random", 0.3, 7, True)
    rule = parse_split("folder:training:testing", tmp_path)
    assert (rule.kind, rule.train_name, rule.valid_name) == ("folder", "training", "testing")
    rule = parse_split("csv:labels.csv:is_valid", tmp_path)
    assert (rule.kind, rule.csv_path, rule.valid_col) == ("csv", str(tmp_path / "labels.csv"), "is_valid")
    with pytest.raises(UserError):
        parse_split("sideways", tmp_path)


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory, digits_dir):
    """A small model trained one epoch by the CLI and exported."""
    out = tmp_path_factory.mktemp("cli-run") / "run"
    code = main(["train", "--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--arch", "small",
                 "--no-pretrained", "--size", "28", "--presize", "32", "--bs", "32", "--epochs", "1",
                 "--schedule", "one_cycle", "--seed", "0", "--out", str(out)])
    assert code == 0
    return out


def test_predict_prints_the_top_classes_and_reports_bad_files(exported_dir, digits_dir, tmp_path, capsys):
    capsys.readouterr()
    images = sorted(digits_dir.glob("*.png"))[:3]
    junk = tmp_path / "notes.png"
    junk.write_text("not a picture")
    code = main(["predict", "--model", str(exported_dir), *map(str, images), str(junk), "--top", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 1  # one file could not be read
    rows = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["image"] for r in rows] == [*map(str, images), str(junk)]
    expected = predict(load_run(exported_dir), [Image.open(p) for p in images], k=3)
    for row, top in zip(rows, expected):
        assert [c for c, _ in row["top"]] == [c for c, _ in top]
        assert [p for _, p in row["top"]] == pytest.approx([p for _, p in top], abs=1e-5)
    assert "error" in rows[-1] and "notes.png is not an image" in captured.err
    assert main(["predict", "--model", str(tmp_path / "nowhere"), str(images[0])]) == 2


def test_export_writes_a_zip_and_onnx(exported_dir, tmp_path, capsys):
    import zipfile

    import onnx

    code = main(["export", "--model", str(exported_dir), "--zip", str(tmp_path / "m.zip"),
                 "--onnx", str(tmp_path / "m.onnx"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "zip": str(tmp_path / "m.zip"), "onnx": str(tmp_path / "m.onnx")}
    names = {n.split("/", 1)[1] for n in zipfile.ZipFile(tmp_path / "m.zip").namelist()}
    assert {"model.pt", "labels.json", "preprocessing.json", "predict.py", "spec.json", "train.py"} <= names
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    assert main(["export", "--model", str(exported_dir)]) == 2


# ---------------------------------------------------------------- specs, replays and the runs list

def _train_json(argv: list[str], home: Path) -> dict:
    env = {**os.environ, "LOUPE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "engine", "train", *argv, "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_replayed_from_its_spec_gives_the_same_numbers(digits_dir, tmp_path):
    """No seed given: the run draws one and records it, so `train --spec <run>/spec.json` repeats it exactly."""
    home = tmp_path / "home"
    first = _train_json(["--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--size", "28",
                         "--presize", "36", "--presize-method", "squish", "--bs", "32", "--epochs", "2",
                         "--schedule", "one_cycle", "--lr", "4e-3"], home)
    spec = load_spec(Path(first["out"]) / "spec.json")
    assert spec.train.seed == first["seed"] is not None and spec.device.threads >= 1
    assert spec.data.presize_method == "squish"
    again = _train_json(["--spec", first["out"]], home)  # a run folder, or its spec.json
    assert again["valid_loss"] == pytest.approx(first["valid_loss"], abs=1e-4)
    assert again["accuracy"] == first["accuracy"] and again["kept_epoch"] == first["kept_epoch"]
    assert again["seed"] == first["seed"] and again["run_id"] == first["run_id"] + 1


def test_cli_runs_are_in_the_runs_database(digits_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    assert main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip()) == []
    assert main(["train", "--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--size", "28",
                 "--bs", "32", "--epochs", "1", "--schedule", "one_cycle", "--seed", "3", "--patience", "1"]) == 0
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip())
    assert {"id", "time", "source", "data", "arch", "status", "accuracy", "kept_epoch"} <= set(row)
    assert (row["source"], row["status"], row["arch"], row["kept_epoch"], row["schedule"]) == \
        ("cli", "done", "small", 0, "one_cycle")
    assert row["folder"] == str(tmp_path / "runs" / str(row["id"]))  # no --out: LOUPE_HOME/runs/<id>
    assert (Path(row["folder"]) / "spec.json").is_file() and (Path(row["folder"]) / "model.pt").is_file()
    assert main(["runs"]) == 0
    assert "model from epoch 0" in capsys.readouterr().out


def test_spec_prints_the_spec_that_flags_make(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    assert main(["spec", "--epochs", "5", "--schedule", "one_cycle", "--lr-slice", "1e-6:1e-4"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["version"] == 1 and spec["data"]["source"] == "builtin:digits-names"
    assert spec["data"]["size"] == 28 and spec["data"]["presize"] == 58  # 28 × 460/224, fastai's ratio
    assert spec["train"]["epochs"] == 5 and spec["train"]["lr"] == 1e-3 and spec["train"]["lr_slice"] == [1e-6, 1e-4]
    assert spec["train"]["seed"] is None and spec["augment"]["do_flip"] is False
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    assert main(["spec", "--spec", str(path), "--epochs", "2", "--no-keep-best"]) == 0  # flags override a spec
    again = json.loads(capsys.readouterr().out)
    assert again["train"]["epochs"] == 2 and again["train"]["keep_best"] is False
    assert again["train"]["lr_slice"] == [1e-6, 1e-4]


def test_a_spec_with_an_unknown_setting_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"train": {"epoch": 3}}))
    assert main(["train", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Unknown setting “train.epoch”" in err and "epochs" in err and "Traceback" not in err


def test_train_json_reports_the_runs_own_decoding(digits_dir, tmp_path, monkeypatch):
    """On a fresh LOUPE_HOME the first run decodes (the estimate before it counts as its preparation); the second
    finds every image in the disk cache."""
    home = tmp_path / "fresh-home"
    argv = ["--data", str(digits_dir), "--label", r"regex:^(.+)_\d+\.png$", "--size", "28", "--presize", "30",
            "--bs", "32", "--epochs", "1", "--schedule", "one_cycle", "--seed", "1"]
    first = _train_json(argv, home)
    assert first["cache"] == "miss" and first["decode_s"] > 0
    second = _train_json(argv, home)
    assert second["cache"] == "hit" and second["decode_s"] == 0.0
    monkeypatch.setenv("LOUPE_HOME", str(home))
    from engine.store.runs import RunStore
    assert RunStore().runs()["images"].tolist() == ["240 / 60"] * 2  # the Runs page: what each run trained on
