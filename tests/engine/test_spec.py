"""The run spec: defaults, JSON in and out (versioned, strict), overrides, filling in what depends on the source."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from engine.data.augment import AugSettings
from engine.data.builtin import BUILTINS
from engine.cli import build_parser, spec_from_args
from engine.errors import UserError
from engine.data.labels import LabelRule
from engine.data.sources import scan_folder
from engine.data.resolve import resolve, suggest_rules
from engine.spec import NAME_PATTERN, SPEC_VERSION, DataSpec, ModelSpec, RunSpec, TrainSpec, default_presize, get, legacy_spec, load_spec, override, save_spec, total_epochs, validate, with_seed
from engine.data.split import SplitRule


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))


def test_the_defaults_are_what_a_fastai_user_expects():
    spec = RunSpec()
    assert spec.data.source == "builtin:digits-names" and spec.data.bs == 64 and spec.data.presize_method == "crop"
    assert (spec.model.arch, spec.model.pretrained) == ("small", True)
    t = spec.train
    assert (t.schedule, t.epochs, t.freeze_epochs, t.lr_mult, t.wd, t.patience, t.keep_best, t.seed) == \
        ("fine_tune", 3, 1, 100.0, 0.01, 0, True, None)
    assert t.lr is None and spec.augment is None and spec.version == SPEC_VERSION
    assert total_epochs(spec) == 4 and total_epochs(override(spec, {"train.schedule": "one_cycle"})) == 3


def test_the_command_line_with_no_flags_makes_the_default_spec():
    """App and CLI share their defaults: the CLI's flags only override the spec."""
    args = build_parser().parse_args(["train"])
    assert spec_from_args(args) == RunSpec()


def test_json_round_trip_is_exact_and_json_safe():
    spec = RunSpec(data=DataSpec(source="/data/pets", label=LabelRule(kind="folder"), split=SplitRule(valid_pct=0.3),
                                 size=128, presize=200, presize_method="squish", bs=16),
                   augment=AugSettings(max_rotate=20.0, do_flip=False), model=ModelSpec(arch="resnet34"),
                   train=TrainSpec(schedule="one_cycle", lr=1e-3, lr_slice=(1e-6, 1e-4), seed=5))
    text = json.dumps(spec.to_dict())
    assert RunSpec.from_dict(json.loads(text)) == spec
    assert RunSpec.from_json(spec.to_json()) == spec
    assert spec.flat()["train.lr_slice"] == [1e-6, 1e-4] and spec.flat()["augment.max_rotate"] == 20.0


def test_missing_settings_take_their_defaults():
    assert RunSpec.from_dict({}) == RunSpec()
    assert RunSpec.from_dict({"train": {"epochs": 7}}).train == TrainSpec(epochs=7)
    assert RunSpec.from_dict({"train": {"lr": 1}}).train.lr == 1.0  # a whole number is a number


@pytest.mark.parametrize("d, message", [
    ({"trian": {}}, "Unknown setting “trian”"),
    ({"train": {"epoch": 3}}, "Unknown setting “train.epoch”"),
    ({"data": {"label": {"pattrn": "x"}}}, "Unknown setting “data.label.pattrn”"),
    ({"train": {"epochs": "3"}}, "“train.epochs” must be a whole number"),
    ({"train": {"epochs": True}}, "“train.epochs” must be a whole number"),
    ({"train": {"keep_best": 1}}, "“train.keep_best” must be true or false"),
    ({"train": {"lr_slice": [1e-6]}}, "“train.lr_slice” must be a pair of numbers"),
    ({"data": 3}, "“data” must be a {…} of settings"),
    ({"version": SPEC_VERSION + 1}, "written by a newer Loupe"),
    ([], "must be a JSON object"),
])
def test_a_bad_spec_is_refused_with_a_clear_message(d, message):
    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        RunSpec.from_dict(d)


def test_files(tmp_path):
    spec = with_seed(RunSpec())
    save_spec(spec, tmp_path / "run" / "spec.json")
    assert load_spec(tmp_path / "run") == load_spec(tmp_path / "run" / "spec.json") == spec
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json: The spec is not valid JSON"):
        load_spec(tmp_path / "bad.json")
    with pytest.raises(UserError, match="There is no spec file"):
        load_spec(tmp_path / "nowhere.json")


def test_override_by_dotted_names():
    spec = override(RunSpec(), {"train.epochs": 5, "augment": AugSettings.off(), "data.label": LabelRule(kind="folder")})
    assert spec.train.epochs == 5 and spec.augment == AugSettings.off() and spec.data.label == LabelRule(kind="folder")
    assert get(spec, "data.label.kind") == "folder"
    with pytest.raises(UserError, match="Unknown setting “train.epoc”"):
        override(spec, {"train.epoc": 1})


def test_a_new_source_puts_what_depends_on_it_back_to_automatic():
    spec = resolve(RunSpec())
    moved = override(spec, {"data.source": "/data/pets", "data.bs": 32})
    assert moved.data.label is moved.data.split is moved.data.size is moved.data.presize is moved.augment is None
    assert moved.train.lr is None  # a learning rate found for one data set does not carry to another
    assert moved.data.bs == 32 and moved.train == replace(spec.train, lr=None)
    kept = override(spec, {"data.source": "/data/pets", "data.size": 64})
    assert kept.data.size == 64


def test_resolve_a_built_in():
    spec = resolve(RunSpec())
    b = BUILTINS["digits-names"]
    assert spec.data.label == b.label_rule and spec.data.split == b.split_rule and spec.augment == b.aug
    assert spec.augment.do_flip is False  # a mirrored digit is another shape
    assert (spec.data.size, spec.data.presize) == (28, 58) and spec.train.lr == 2e-3
    assert resolve(override(RunSpec(), {"train.schedule": "one_cycle"})).train.lr == 1e-3
    assert resolve(override(RunSpec(), {"data.size": 64})).data.presize == 131
    assert resolve(override(RunSpec(), {"data.size": 64, "data.presize": 64})).data.presize == 64
    assert spec.train.seed is None and resolve(spec) == spec


def test_resolve_a_folder_guesses_its_rules(tmp_path):
    pets = _touch_images(tmp_path / "pets", ["great_pyrenees_1.png", "Abyssinian_12.png"])
    spec = resolve(override(RunSpec(), {"data.source": str(pets)}))
    assert spec.data.label == LabelRule(kind="regex", pattern=NAME_PATTERN, on="name")
    assert spec.data.split == SplitRule(kind="random") and spec.augment == AugSettings()
    assert (spec.data.size, spec.data.presize) == (224, 460)  # fastai's Resize(460) for 224 px


def test_default_presize_follows_fastai():
    assert default_presize(224) == 460 and default_presize(28) == 58 and default_presize(16) == 33


def test_a_seed_is_drawn_once_and_kept():
    spec = with_seed(RunSpec())
    assert isinstance(spec.train.seed, int) and with_seed(spec) == spec
    assert with_seed(override(RunSpec(), {"train.seed": 4})).train.seed == 4


@pytest.mark.parametrize("changes, message", [
    ({"train.lr_slice": (1e-6, 1e-4)}, "goes with the one_cycle schedule"),
    ({"train.schedule": "one_cycle", "train.lr_slice": (1e-3, 1e-4)}, "from a low rate to a higher one"),
    ({"data.size": 64, "data.presize": 32}, "must be at least the size"),
    ({"data.presize_method": "stretch"}, "presize_method must be one of crop, squish"),
    ({"model.arch": "vgg"}, "Unknown model"),
    ({"train.schedule": "sgdr"}, "train.schedule must be one of"),
    ({"train.lr": 0.0}, "must be above 0"),
    ({"data.bs": 0}, "data.bs must be a positive number"),
    ({"data.source": "builtin:nope"}, "Unknown built-in data set"),
    ({"device.device": "tpu"}, "device.device must be one of"),
])
def test_validate(changes, message):
    with pytest.raises(UserError, match=message):
        validate(override(RunSpec(), changes))


def test_a_run_recorded_before_specs_is_read_as_one():
    spec = legacy_spec(
        {"root": "/home/me/.cache/loupe/builtin/digits-names", "name": "Digits", "size": 28, "presize": 32,
         "method": "squish", "bs": 16, "label": {"kind": "regex", "pattern": "^(.+)_x", "on": "name"},
         "split": {"kind": "random", "valid_pct": 0.3}, "aug": {"do_flip": False, "max_rotate": 5.0}},
        {"arch": "small", "pretrained": False},
        {"arch": "small", "method": "one_cycle", "epochs": 2, "lr": 0.003, "save_best": False, "seed": 1, "lr_mult": 100})
    assert spec.data == DataSpec(source="builtin:digits-names", label=LabelRule(pattern="^(.+)_x"),
                                 split=SplitRule(valid_pct=0.3), size=28, presize=32, presize_method="squish", bs=16)
    assert spec.augment == AugSettings(do_flip=False, max_rotate=5.0)
    assert spec.train == TrainSpec(schedule="one_cycle", epochs=2, lr=0.003, keep_best=False, seed=1)
    folder = legacy_spec({"root": "/data/pets"}, {}, {})
    assert folder.data.source == "/data/pets" and folder.train == replace(TrainSpec(), keep_best=True)


def _touch_images(root: Path, rels: list[str]) -> Path:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(root / rel)
    return root


def test_suggest_rules_from_layout(tmp_path):
    mnist = _touch_images(tmp_path / "mnist", ["train/3/a.png", "train/7/b.png", "val/3/c.png", "val/7/d.png"])
    label, split = suggest_rules(scan_folder(mnist))
    assert label == LabelRule(kind="folder")
    assert (split.kind, split.train_name, split.valid_name) == ("folder", "train", "val")

    pets = _touch_images(tmp_path / "pets", ["images/great_pyrenees_1.png", "images/Abyssinian_12.png"])
    label, split = suggest_rules(scan_folder(pets))
    assert (label.kind, label.pattern, label.on, split.kind) == ("regex", NAME_PATTERN, "name", "random")

    classes = _touch_images(tmp_path / "classes", ["cats/x.png", "dogs/y.png"])
    label, split = suggest_rules(scan_folder(classes))
    assert (label.kind, split.kind) == ("folder", "random")


def test_a_nested_corpus_is_guessed_by_its_top_level_folders(tmp_path):
    """category/subcategory/file: the top-level categories, not one class per subcategory."""
    rels = [f"{top}/{sub}/{i}.png" for top in ("animals", "plants", "rocks") for sub in ("a", "b", "c") for i in range(3)]
    label, split = suggest_rules(scan_folder(_touch_images(tmp_path / "corpus", rels)))
    assert label == LabelRule(kind="top-folder") and split.kind == "random"
