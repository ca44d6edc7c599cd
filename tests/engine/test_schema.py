"""The schema knows itself: every setting has a human name and a help text, the command line's flags and their help
are made from them (with the real default), and the schema imports nothing that scans, downloads or reads LOUPE_HOME."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from engine import spec as schema
from engine.cli import FLAG_FIELDS, LR_FIND_FLAGS, build_parser, flag_of
from engine.spec import (AugSettings, DataSpec, LabelRule, LRFindSpec, RunSpec, SplitRule, default_text, legacy_spec,
                         schema_field, setting_help, setting_name, settings)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_CLASSES = [c for c in vars(schema).values() if dataclasses.is_dataclass(c) and c.__module__ == "engine.spec"]


@pytest.mark.parametrize("cls", SCHEMA_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_human_name_and_a_help_text(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("name") or not f.metadata.get("help")]
    assert missing == []


def test_the_schema_covers_the_whole_spec():
    assert {RunSpec, DataSpec, LabelRule, SplitRule, AugSettings, LRFindSpec} <= set(SCHEMA_CLASSES)


def test_settings_have_distinct_human_names():
    names = [setting_name(n) for n in settings()]
    assert len(names) == len(set(names))
    assert setting_name("data.size") == "Image size (px)" and setting_name("augment.max_rotate").startswith("Augmentation")
    assert schema.SETTING_NAMES["train.lr"] == "Learning rate" and setting_name("no.such") == "Such"


def test_a_help_text_ends_with_the_default_it_means():
    assert setting_help("data.bs").endswith("(default: 64)")
    assert setting_help("train.wd").endswith("(default: 0.01)")
    assert setting_help("train.patience").endswith("(default: 0, off)")
    assert setting_help("data.size").endswith(f"(default: {schema.BUILTIN_SIZE} for the built-in digits, else "
                                              f"{schema.DEFAULT_SIZE})")
    assert setting_help("train.lr").endswith(f"(default: fine_tune {schema.DEFAULT_LR['fine_tune']:g}, one_cycle "
                                             f"{schema.DEFAULT_LR['one_cycle']:g})")


def _actions(command: str) -> dict[str, object]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {option: action for action in sub._actions for option in action.option_strings}


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize("command", ["train", "spec", "experiment", "health", "label-issues", "lr-find"])
def test_every_setting_has_a_flag_whose_help_shows_the_fields_real_default(command):
    actions = _actions(command)
    fields = {**FLAG_FIELDS, **(LR_FIND_FLAGS if command == "lr-find" else {})}
    for dest, name in fields.items():
        root = LRFindSpec if name in LR_FIND_FLAGS.values() and "." not in name else RunSpec
        f = schema_field(name, root)
        action = actions[flag_of(name)]
        assert action.dest == dest
        if isinstance(f.default, bool):  # --X / --no-X: the one that is the default says so
            on, off = action, actions[f"--no-{flag_of(name)[2:]}"]
            assert (on if f.default else off).help.endswith("(default)"), name
            continue
        assert action.help.replace("%%", "%").endswith(f"(default: {default_text(f)})"), name
        if f.default is not None and f.default is not dataclasses.MISSING:
            assert f"(default: {_shown(f.default)}" in action.help, name
        if f.metadata["choices"]:
            assert tuple(action.choices) == f.metadata["choices"], name


def test_the_lr_finders_flags_default_to_its_spec():
    args = build_parser().parse_args(["lr-find"])
    assert (args.start_lr, args.end_lr, args.num_it) == (LRFindSpec().start_lr, LRFindSpec().end_lr, LRFindSpec().num_it)


def test_every_setting_but_the_augmentation_has_a_flag():
    assert set(FLAG_FIELDS.values()) == set(settings()) - {"augment", "version"}


def test_the_schema_imports_no_other_engine_package():
    tree = ast.parse((ROOT / "engine" / "spec.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("engine")} == {"engine.errors"}
    loaded = subprocess.run([sys.executable, "-c", "import sys, engine.spec; "
                             "print(sorted(m for m in sys.modules if m.startswith('engine.')))"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['engine.errors', 'engine.spec']"
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, engine.spec; print(sorted(sys.modules))"],
                                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("'")


def test_the_schemas_lists_match_what_the_engine_builds():
    from engine.data.builtin import BUILTINS
    from engine.data.labels import labeller_for
    from engine.train.models import ARCHS

    assert schema.ARCHS == tuple(ARCHS) and schema.BUILTIN_KEYS == tuple(BUILTINS)
    for kind in schema.LABEL_KINDS:
        labeller_for(LabelRule(kind=kind, csv_path=__file__))  # every kind the schema allows has a labeller


def test_a_run_recorded_before_specs_takes_the_spec_defaults_for_what_it_did_not_record():
    spec = legacy_spec({"root": "/x/builtin/digits-names"}, {}, {})
    assert spec == RunSpec(data=DataSpec(label=LabelRule(), split=SplitRule()), augment=AugSettings())


def test_the_readmes_spec_example_shows_every_field_as_the_command_line_prints_it(monkeypatch, tmp_path):
    import json

    from engine.cli import cmd_spec

    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```json", readme.index("Every field, as `python -m engine spec --epochs 5` prints it")) + 7
    example = json.loads(readme[start:readme.index("```", start)])
    assert example == cmd_spec(build_parser().parse_args(["spec", "--epochs", "5"]))
    every = RunSpec(data=DataSpec(label=LabelRule(), split=SplitRule()), augment=AugSettings())
    assert set(RunSpec.from_dict(example).flat()) == set(every.flat())
