"""The folder levels of a nested collection and the label-rule guess, on small real image trees."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from PIL import Image

from engine.cli import main
from engine.data.label_levels import depth_rule, folder_levels, guess_level, guess_rule, label_options, top_is_facet
from engine.data.labels import LabelRule, apply_label_rule
from engine.data.sources import scan_folder
from engine.data.resolve import suggest_rules
from engine.spec import NAME_PATTERN

MODES = ("RGBA", "P", "LA", "RGB")


def make_tree(root: Path, rels: list[str]) -> Path:
    """Small real PNGs (RGBA, palette, grey with alpha, RGB) at the given relative paths."""
    for i, rel in enumerate(rels):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(MODES[i % len(MODES)], (6 + i % 5, 6)).save(path)
    return root


def rels_of(root: Path) -> list[str]:
    scan = scan_folder(root)
    return [p.relative_to(scan.root).as_posix() for p in scan.images]


# clip art: 2 of 10 pictures directly in the category folders, the rest in category/subcategory folders
CLIPART = ([f"animals/a{i}.png" for i in range(2)] + [f"animals/birds/b{i}.png" for i in range(4)]
           + [f"animals/cats/c{i}.png" for i in range(4)]
           + [f"food/f{i}.png" for i in range(2)] + [f"food/fruit/r{i}.png" for i in range(5)]
           + [f"food/drinks/d{i}.png" for i in range(3)]
           + [f"transport/t{i}.png" for i in range(2)] + [f"transport/cars/k{i}.png" for i in range(8)])
# Tango: <size>/<category>/<name>, the same icon names at each size; one size lacks a category
TANGO = [f"{size}/{cat}/{name}.png" for size in ("16x16", "22x22", "32x32") for cat in ("actions", "apps", "places")
         for name in ("go-home", "edit-copy", "folder") if not (size == "22x22" and cat == "places")]


def by_title(options):
    return {o.title: o for o in options}


def test_a_mixed_depth_collection_is_read_by_its_top_level_folders(tmp_path):
    rels = rels_of(make_tree(tmp_path / "clipart", CLIPART))
    levels = by_title(folder_levels(rels))
    top, grand, parent = levels["Top-level folder"], levels["Grandparent folder"], levels["Parent folder"]
    assert top.class_counts == {"animals": 10, "food": 10, "transport": 10} and top.admissible
    assert parent.nested == ("animals", "animals/birds") and not parent.admissible  # 'birds' inside 'animals'
    assert parent.n_classes == 8  # animals, birds, cats, food, fruit, drinks, transport, cars: levels mixed
    assert grand.admissible and grand.n_labelled == 24  # the 6 pictures in the category folders get no label
    chosen, why = guess_level(folder_levels(rels), rels)
    assert chosen.rule == LabelRule(kind="top-folder")
    assert "3 classes" in why and "'animals/birds' lies inside 'animals'" in why
    assert suggest_rules(scan_folder(tmp_path / "clipart"))[0] == LabelRule(kind="top-folder")


def test_each_level_labels_every_file_as_its_rule_does(tmp_path):
    rels = rels_of(make_tree(tmp_path / "clipart", CLIPART + ["loose.png", "wrapper/x/y/z/deep.png"]))
    for option in folder_levels(rels):
        assert option.labels == apply_label_rule(option.rule, rels).labels, option.title


def test_examples_are_spread_over_a_class_and_counted_largest_first(tmp_path):
    rels = rels_of(make_tree(tmp_path / "clipart", CLIPART))
    top = folder_levels(rels, n_examples=3)[0]
    assert top.examples["animals"] == ["animals/a0.png", "animals/birds/b2.png", "animals/cats/c3.png"]  # files 0, 4, 9 of 10
    assert list(folder_levels(rels)[-1].class_counts)[:2] == ["cars", "fruit"]  # 8, then 5 (ties by name)
    assert all(ex == [] for ex in folder_levels(rels, n_examples=0)[0].examples.values())


def test_a_tango_like_tree_is_read_by_the_parent_folder(tmp_path):
    rels = rels_of(make_tree(tmp_path / "tango", TANGO))
    assert top_is_facet(rels)
    levels = by_title(folder_levels(rels))
    assert levels["Top-level folder"].admissible  # sizes would make 3 classes: allowed, but not the guess
    assert levels["Parent folder"].class_counts == {"actions": 9, "apps": 9, "places": 6}
    chosen, why = guess_level(folder_levels(rels), rels)
    assert chosen.rule == LabelRule(kind="folder")
    assert "16x16, 22x22, 32x32" in why and "Other levels also give classes" in why
    assert suggest_rules(scan_folder(tmp_path / "tango"))[0] == LabelRule(kind="folder")


def test_the_same_subfolders_under_word_named_folders_are_still_categories(tmp_path):
    """Only digit-named top folders (sizes, years) are taken for copies of one set; words are categories."""
    rels = [f"{top}/{sub}/{i}.png" for top in ("animals", "plants", "rocks") for sub in ("a", "b") for i in range(2)]
    rels = rels_of(make_tree(tmp_path / "corpus", rels))
    assert not top_is_facet(rels)
    assert guess_level(folder_levels(rels), rels)[0].rule == LabelRule(kind="top-folder")
    years = rels_of(make_tree(tmp_path / "years", [f"{y}/{c}/{i}.png" for y in ("2019", "2020") for c in ("cats", "dogs")
                                                    for i in range(2)]))
    assert guess_level(folder_levels(years), years)[0].rule == LabelRule(kind="folder")
    split = rels_of(make_tree(tmp_path / "split", [f"{s}/{c}/{i}.png" for s in ("train", "valid") for c in ("cats", "dogs")
                                                    for i in range(2)]))
    assert top_is_facet(split)  # the chooser's guess agrees with suggest_rules' split by folder
    assert guess_level(folder_levels(split), split)[0].rule == LabelRule(kind="folder")


def test_flat_class_folders_are_the_parent_folder(tmp_path):
    rels = rels_of(make_tree(tmp_path / "flat", [f"{c}/{i}.png" for c in ("cats", "dogs") for i in range(3)]))
    chosen, why = guess_level(folder_levels(rels), rels)
    assert chosen.rule == LabelRule(kind="folder") and "No other folder level gives other classes" in why


def test_one_wrapping_folder_is_looked_under(tmp_path):
    rels = (["photos/cats/c0.png", "photos/cats/indoor/c1.png", "photos/cats/indoor/c2.png",
             "photos/dogs/d0.png", "photos/dogs/park/d1.png", "photos/dogs/park/d2.png"])
    rels = rels_of(make_tree(tmp_path / "wrapped", rels))
    levels = folder_levels(rels)
    assert [o.title for o in levels] == ["Top-level folder", "Folder 2 levels down", "Grandparent folder",
                                         "Parent folder"]
    assert levels[0].n_classes == 1 and levels[2].nested and levels[3].nested
    chosen, _ = guess_level(levels, rels)
    assert chosen.rule == depth_rule(1) == LabelRule(kind="regex", pattern="^[^/]+/([^/]+)/", on="path")
    assert chosen.labels == apply_label_rule(chosen.rule, rels).labels == ["cats"] * 3 + ["dogs"] * 3


def test_no_level_fits_gives_no_guess(tmp_path):
    rels = rels_of(make_tree(tmp_path / "loose", ["a.png", "b.png", "only/c.png"]))
    chosen, why = guess_level(folder_levels(rels), rels)
    assert chosen is None and "No folder level" in why
    assert guess_rule(rels) == LabelRule(kind="folder")
    nested = ["a.png", "only/b.png", "only/inner/c.png"]  # one top folder, and the parent's classes nest
    assert guess_level(folder_levels(nested), nested)[0] is None
    assert guess_rule(nested) == LabelRule(kind="top-folder")
    assert suggest_rules(scan_folder(tmp_path / "loose"))[0] == LabelRule(kind="folder")  # the old fallback


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlinked_copies_and_broken_links_do_not_change_the_guess(tmp_path):
    root = make_tree(tmp_path / "clipart", CLIPART)
    (root / "food" / "fruit" / "copy.png").symlink_to(root / "animals" / "cats" / "c0.png")  # a symlinked copy
    (root / "transport" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    (root / "animals" / "pets").symlink_to(root / "animals" / "cats", target_is_directory=True)  # a folder alias
    scan = scan_folder(root)
    assert scan.broken_links == ["transport/gone.png"]
    rels = [p.relative_to(scan.root).as_posix() for p in scan.images]
    assert "food/fruit/copy.png" in rels  # labelled by where the link lies
    top = folder_levels(rels)[0]
    assert top.class_counts["food"] == 11
    assert suggest_rules(scan)[0] == LabelRule(kind="top-folder")


def test_the_guess_never_gives_classes_inside_classes(tmp_path):
    """Random trees of mixed depth: whatever the guess, no class folder lies inside another."""
    rng = random.Random(7)
    for trial in range(30):
        rels = []
        for i in range(rng.randint(3, 40)):
            depth = rng.randint(0, 3)
            folders = [rng.choice("abcd") + rng.choice("xy") for _ in range(depth)]
            rels.append("/".join(folders + [f"f{i}.png"]))
        levels = folder_levels(rels)
        chosen, _ = guess_level(levels, rels)
        if chosen is not None:
            assert chosen.nested is None and chosen.n_classes >= 2, (trial, rels)
        rule = guess_rule(rels)  # what suggest_rules proposes, fallback included
        assert next(o for o in levels if o.rule == rule).nested is None, (trial, rels)


def test_sizes_with_pictures_directly_in_them_fall_back_on_the_sizes(tmp_path):
    """<size>/<category>/ with a few pictures in the size folders: the parent nests, so the sizes are the only level."""
    rels = rels_of(make_tree(tmp_path / "tango", TANGO + ["16x16/loose.png", "32x32/loose.png"]))
    assert top_is_facet(rels)
    levels = by_title(folder_levels(rels))
    assert levels["Parent folder"].nested == ("16x16", "16x16/actions")
    chosen, why = guess_level(folder_levels(rels), rels)
    assert chosen.rule == LabelRule(kind="top-folder") and "named like sizes" not in why
    assert guess_rule(rels) == LabelRule(kind="top-folder")


def test_regex_rules_are_offered_beside_the_levels(tmp_path):
    rels = ["cats/tabby_1.png", "cats/tabby_2.png", "dogs/beagle_1.png", "dogs/notes.png"]
    options = label_options(rels, [LabelRule(kind="regex", pattern=NAME_PATTERN, on="name"),
                                   LabelRule(kind="regex", pattern="(", on="name"),  # broken: left out
                                   LabelRule(kind="regex", pattern="^(zzz)", on="name"),  # labels nothing: left out
                                   LabelRule(kind="folder")])  # already a level
    assert [o.title for o in options] == ["Top-level folder", "Grandparent folder", "Parent folder",
                                          "Regex on the file name"]
    name = options[-1]
    assert name.class_counts == {"tabby": 2, "beagle": 1} and not name.is_folder
    assert guess_level(options, rels)[0].rule == LabelRule(kind="folder")  # regex rules are offered, never guessed here


def test_spec_prints_the_guessed_rule_for_a_nested_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    make_tree(tmp_path / "clipart", CLIPART)
    assert main(["spec", "--data", str(tmp_path / "clipart")]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["label"]["kind"] == "top-folder"
    make_tree(tmp_path / "tango", TANGO)
    assert main(["spec", "--data", str(tmp_path / "tango")]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["label"]["kind"] == "folder"
