"""Tests for engine/data/clean.py: the cleaner moves, renames and rewrites exactly, and undo restores every byte."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filelock import FileLock

from engine.data import clean
from engine.data.builtin import BUILTINS, ensure_builtin
from engine.data.clean import (DELETE, KEEP, LOCK_NAME, RELABEL, Change, apply_changes, history, reset_builtin,
                          trash_dir, undo_last)
from engine.data.loaders import label_items
from engine.errors import UserError
from engine.data.labels import LabelRule, apply_label_rule
from engine.data.sources import TRASH_DIR, scan_folder
from engine.data.split import SplitRule

NAMES = LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$", on="name")
FOLDER = LabelRule(kind="folder")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root but the trash, as {relative path: bytes}."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and TRASH_DIR not in p.relative_to(root).parts}


def labels_of(root: Path, rule: LabelRule) -> dict[str, str]:
    """What the data set pipeline makes of the folder now: {relative path: label}."""
    items = label_items(scan_folder(root), rule, SplitRule())
    return dict(zip(items.rel_paths, items.labels))


@pytest.fixture(scope="module")
def names_template(tmp_path_factory, write_digits) -> Path:
    return write_digits(tmp_path_factory.mktemp("names"), per_class=3)


@pytest.fixture
def names_root(tmp_path, names_template) -> Path:
    """Three real digits of each class, named like seven_7.png (a fresh copy per test)."""
    return Path(shutil.copytree(names_template, tmp_path / "names"))


@pytest.fixture
def folders_root(names_root, tmp_path) -> Path:
    """The same 30 digits in MNIST_SAMPLE's layout: train/<digit>/<i>.png (first two) and valid/<digit>/<i>.png."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = tmp_path / "folders"
    seen: dict[str, int] = {}
    for p in sorted(names_root.glob("*.png")):
        word, i = p.stem.rsplit("_", 1)
        digit = str(words.index(word))
        split = "train" if seen.get(digit, 0) < 2 else "valid"
        seen[digit] = seen.get(digit, 0) + 1
        (root / split / digit).mkdir(parents=True, exist_ok=True)
        (root / split / digit / f"{i}.png").write_bytes(p.read_bytes())
    return root


def first(root: Path, glob: str) -> str:
    return min(p.relative_to(root).as_posix() for p in root.glob(glob))


# ---------------------------------------------------------------- regex rule

def test_regex_relabel_renames_and_delete_moves_to_the_trash(names_root):
    before = tree(names_root)
    seven, three, two = first(names_root, "seven_*.png"), first(names_root, "three_*.png"), first(names_root, "two_*.png")
    number = seven.split("_")[1]
    batch = apply_changes(names_root, NAMES, [Change(seven, RELABEL, "one"), Change(three, DELETE), Change(two, KEEP)])

    assert batch.id == 1 and not batch.undone
    assert batch.summary == "Moved 1 image to the trash, relabelled 1 (seven → one)"
    after = tree(names_root)
    assert f"one_{number}" in after and seven not in after and three not in after
    assert after[f"one_{number}"] == before[seven]
    assert (trash_dir(names_root) / "1" / three).read_bytes() == before[three]
    assert set(after) == set(before) - {seven, three} | {f"one_{number}"}
    labels = labels_of(names_root, NAMES)
    assert labels[f"one_{number}"] == "one" and three not in labels and len(labels) == 29
    assert apply_label_rule(NAMES, list(after)).class_counts["one"] == 4

    undone = undo_last(names_root)
    assert undone.id == 1 and undone.undone
    assert tree(names_root) == before


def test_regex_on_path_renames_the_label_folder(folders_root):
    rule = LabelRule(kind="regex", pattern=r"^(?:train|valid)/(\w+)/", on="path")
    before = tree(folders_root)
    rel = first(folders_root, "train/7/*.png")
    apply_changes(folders_root, rule, [Change(rel, RELABEL, "x")])
    moved = rel.replace("train/7/", "train/x/")
    assert tree(folders_root)[moved] == before[rel]
    assert labels_of(folders_root, rule)[moved] == "x"
    undo_last(folders_root)
    assert tree(folders_root) == before
    assert not (folders_root / "train" / "x").exists()  # the folder the batch made is gone again


def test_regex_rename_takes_a_free_name_the_pattern_still_reads(names_root):
    rule = LabelRule(kind="regex", pattern=r"^(.+)_\d+(?:-\d+)?\.png$", on="name")
    seven = first(names_root, "seven_*.png")
    number = seven.split("_")[1]
    (names_root / f"one_{number}").write_bytes(b"in the way")
    before = tree(names_root)
    apply_changes(names_root, rule, [Change(seven, RELABEL, "one")])
    stem = number.removesuffix(".png")
    assert tree(names_root)[f"one_{stem}-1.png"] == before[seven]
    assert tree(names_root)[f"one_{number}"] == b"in the way"
    undo_last(names_root)
    assert tree(names_root) == before


def test_regex_rename_refused_when_no_free_name_matches(names_root):
    seven = first(names_root, "seven_*.png")
    (names_root / f"one_{seven.split('_')[1]}").write_bytes(b"in the way")
    before = tree(names_root)
    with pytest.raises(UserError, match="already exists"):
        apply_changes(names_root, NAMES, [Change(seven, RELABEL, "one")])
    assert tree(names_root) == before and not trash_dir(names_root).exists()


# ---------------------------------------------------------------- folder rule

def test_folder_relabel_moves_to_the_sibling_folder_and_delete_to_the_trash(folders_root):
    before = tree(folders_root)
    seven = first(folders_root, "train/7/*.png")
    name = seven.rsplit("/", 1)[1]
    gone = first(folders_root, "valid/3/*.png")
    new_class = first(folders_root, "valid/5/*.png")
    batch = apply_changes(folders_root, FOLDER, [Change(seven, RELABEL, "1"), Change(gone, DELETE),
                                                 Change(new_class, RELABEL, "five")])

    after = tree(folders_root)
    assert after[f"train/1/{name}"] == before[seven]
    assert after[f"valid/five/{new_class.rsplit('/', 1)[1]}"] == before[new_class]
    assert (trash_dir(folders_root) / "1" / gone).read_bytes() == before[gone]
    assert len(after) == len(before) - 1
    assert batch.summary == "Moved 1 image to the trash, relabelled 2 (7 → 1, 5 → five)"
    assert {"op": "mkdir", "dir": "valid/five"} in batch.steps
    labels = labels_of(folders_root, FOLDER)
    assert labels[f"train/1/{name}"] == "1" and gone not in labels
    assert labels[f"valid/five/{new_class.rsplit('/', 1)[1]}"] == "five"

    undo_last(folders_root)
    assert tree(folders_root) == before
    assert not (folders_root / "valid" / "five").exists()


def test_folder_relabel_adds_a_suffix_when_the_name_is_taken(folders_root):
    seven = first(folders_root, "train/7/*.png")
    name = seven.rsplit("/", 1)[1]
    for taken in (name, name.replace(".png", "-1.png")):
        (folders_root / "train" / "1" / taken).write_bytes(b"taken")
    before = tree(folders_root)
    batch = apply_changes(folders_root, FOLDER, [Change(seven, RELABEL, "1")])
    assert batch.steps == [{"op": "move", "src": seven, "dst": f"train/1/{name.replace('.png', '-2.png')}"}]
    assert tree(folders_root)[f"train/1/{name.replace('.png', '-2.png')}"] == before[seven]
    undo_last(folders_root)
    assert tree(folders_root) == before


# ---------------------------------------------------------------- csv rule

def write_names_csv(root: Path) -> LabelRule:
    names = sorted(p.name for p in root.glob("*.png"))
    lines = ["name,label,note"] + [f"{n},{n.split('_')[0]},\"a, b\"" for n in names]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return LabelRule(kind="csv", csv_path=str(root / "labels.csv"), file_col="name", label_col="label")


def test_csv_relabel_rewrites_only_its_row_and_delete_leaves_the_csv(names_root):
    rule = write_names_csv(names_root)
    before = tree(names_root)
    seven, three = first(names_root, "seven_*.png"), first(names_root, "three_*.png")
    batch = apply_changes(names_root, rule, [Change(seven, RELABEL, "one"), Change(three, DELETE)])

    after = tree(names_root)
    assert after[seven] == before[seven] and three not in after
    old_lines, new_lines = before["labels.csv"].splitlines(), after["labels.csv"].splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert changed == [(f'{seven},seven,"a, b"'.encode(), f'{seven},one,"a, b"'.encode())]
    assert len(new_lines) == len(old_lines)
    csv_step = batch.steps[0]
    assert csv_step["op"] == "csv" and csv_step["rows"] == 1
    assert (names_root / csv_step["backup"]).read_bytes() == before["labels.csv"]
    labels = labels_of(names_root, rule)
    assert labels[seven] == "one" and three not in labels

    undo_last(names_root)
    assert tree(names_root) == before


def test_csv_with_paths_bom_and_crlf_keeps_every_other_byte(folders_root):
    rels = sorted(p.relative_to(folders_root).as_posix() for p in folders_root.rglob("*.png"))
    lines = ["name,label,is_valid"] + [f"./{r},{r.split('/')[1]},{r.startswith('valid')}" for r in rels]
    (folders_root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # no final newline
    rule = LabelRule(kind="csv", csv_path=str(folders_root / "labels.csv"), file_col="name", label_col="label")
    before = tree(folders_root)
    seven = first(folders_root, "train/7/*.png")
    apply_changes(folders_root, rule, [Change(seven, RELABEL, "1")])

    expected = before["labels.csv"].replace(f"./{seven},7,".encode(), f"./{seven},1,".encode())
    assert tree(folders_root)["labels.csv"] == expected != before["labels.csv"]
    assert labels_of(folders_root, rule)[seven] == "1"
    assert tree(folders_root)[seven] == before[seven]  # the image itself stays where it is
    undo_last(folders_root)
    assert tree(folders_root) == before


def test_csv_undo_refused_after_the_csv_was_edited(names_root):
    rule = write_names_csv(names_root)
    apply_changes(names_root, rule, [Change(first(names_root, "seven_*.png"), RELABEL, "one")])
    csv_file = names_root / "labels.csv"
    csv_file.write_bytes(csv_file.read_bytes() + b"extra.png,one,\n")
    edited = tree(names_root)
    with pytest.raises(UserError, match="edited after this change"):
        undo_last(names_root)
    assert tree(names_root) == edited and not history(names_root)[0].undone


# ---------------------------------------------------------------- invalid input changes nothing

@pytest.mark.parametrize("make_change, message", [
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, ""), "empty"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, "   "), "empty"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, None), "empty"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, "a/b"), "slash"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, "a\\b"), "slash"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, ".hidden"), "starts with '.'"),
    (lambda r: Change(first(r, "seven_*.png"), RELABEL, "seven"), "already labelled 'seven'"),
    (lambda r: Change("../outside.png", DELETE), "outside the data set"),
    (lambda r: Change("sub/../../outside.png", DELETE), "outside the data set"),
    (lambda r: Change(str(r / first(r, "seven_*.png")), DELETE), "absolute path"),
    (lambda r: Change("nine_99999.png", DELETE), "no longer in the data set"),
    (lambda r: Change(f"{TRASH_DIR}/log.jsonl", DELETE), "hidden"),
    (lambda r: Change("escape.png", DELETE), "outside the data set"),
    (lambda r: Change("", DELETE), "names no file"),
])
def test_invalid_change_changes_nothing(names_root, tmp_path, make_change, message):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not yours")
    (names_root / "escape.png").symlink_to(outside)
    before = tree(names_root)
    valid = Change(first(names_root, "two_*.png"), DELETE)  # a good change in the same batch is not done either
    with pytest.raises(UserError, match=message):
        apply_changes(names_root, NAMES, [valid, make_change(names_root)])
    assert tree(names_root) == before and outside.read_bytes() == b"not yours"
    assert not trash_dir(names_root).exists()


def test_regex_rename_that_would_not_match_is_refused(names_root):
    strict = LabelRule(kind="regex", pattern=r"^([a-z]+)_\d+\.png$", on="name")
    before = tree(names_root)
    with pytest.raises(UserError, match="would not give the label 'Seven'"):
        apply_changes(names_root, strict, [Change(first(names_root, "three_*.png"), RELABEL, "one"),
                                           Change(first(names_root, "seven_*.png"), RELABEL, "Seven")])
    assert tree(names_root) == before and not trash_dir(names_root).exists()


def test_csv_relabel_of_a_file_without_a_row_is_refused(names_root):
    rule = write_names_csv(names_root)
    lonely = names_root / "lonely_1.png"
    lonely.write_bytes((names_root / first(names_root, "seven_*.png")).read_bytes())
    before = tree(names_root)
    with pytest.raises(UserError, match="No row of labels.csv names 'lonely_1.png'"):
        apply_changes(names_root, rule, [Change("lonely_1.png", RELABEL, "one")])
    assert tree(names_root) == before and not trash_dir(names_root).exists()


def test_folder_relabel_of_a_file_outside_class_folders_is_refused(folders_root):
    (folders_root / "loose.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not inside a class folder"):
        apply_changes(folders_root, FOLDER, [Change("loose.png", RELABEL, "1")])


def test_all_keep_does_nothing(names_root):
    assert apply_changes(names_root, NAMES, [Change(first(names_root, "two_*.png"), KEEP)]) is None
    assert apply_changes(names_root, NAMES, []) is None
    assert not trash_dir(names_root).exists() and undo_last(names_root) is None and history(names_root) == []


# ---------------------------------------------------------------- the undo log

def test_two_batches_two_undos_and_the_log(names_root):
    original = tree(names_root)
    a, b = first(names_root, "seven_*.png"), first(names_root, "eight_*.png")
    first_batch = apply_changes(names_root, NAMES, [Change(a, DELETE)])
    middle = tree(names_root)
    second_batch = apply_changes(names_root, NAMES, [Change(b, RELABEL, "zero")])
    assert (first_batch.id, second_batch.id) == (1, 2)
    assert [(h.id, h.undone) for h in history(names_root)] == [(2, False), (1, False)]

    assert undo_last(names_root).id == 2
    assert tree(names_root) == middle
    assert [(h.id, h.undone) for h in history(names_root)] == [(2, True), (1, False)]
    assert undo_last(names_root).id == 1
    assert tree(names_root) == original
    assert [(h.id, h.undone) for h in history(names_root)] == [(2, True), (1, True)]
    assert undo_last(names_root) is None

    events = [json.loads(line) for line in (trash_dir(names_root) / "log.jsonl").read_text().splitlines()]
    assert [(e["event"], e["id"]) for e in events] == [("apply", 1), ("apply", 2), ("undo", 2), ("undo", 1)]
    assert apply_changes(names_root, NAMES, [Change(a, DELETE)]).id == 3  # ids keep increasing


def test_undo_refused_when_the_original_place_is_taken(names_root):
    seven = first(names_root, "seven_*.png")
    apply_changes(names_root, NAMES, [Change(seven, DELETE)])
    (names_root / seven).write_bytes(b"a new file")
    before = tree(names_root)
    with pytest.raises(UserError, match="a file is now at"):
        undo_last(names_root)
    assert tree(names_root) == before and (trash_dir(names_root) / "1" / seven).is_file()
    assert not history(names_root)[0].undone


def test_undo_refused_when_the_trashed_file_is_gone(names_root):
    seven = first(names_root, "seven_*.png")
    apply_changes(names_root, NAMES, [Change(seven, DELETE)])
    os.remove(trash_dir(names_root) / "1" / seven)
    with pytest.raises(UserError, match="no longer there"):
        undo_last(names_root)


# ---------------------------------------------------------------- several cleaners at once
# (two real processes racing: tests/engine/test_hostile.py)

@pytest.mark.parametrize("hard_links", [True, False])
def test_a_move_never_replaces_a_file(names_root, monkeypatch, hard_links):
    if not hard_links:  # a file system without them (FAT, some network shares)
        def no_link(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(clean.os, "link", no_link)
    a, b = first(names_root, "seven_*.png"), first(names_root, "three_*.png")
    before = tree(names_root)
    with pytest.raises(FileExistsError):
        clean._move(names_root, a, b)
    assert tree(names_root) == before
    clean._move(names_root, a, "sub/moved.png")
    assert tree(names_root)["sub/moved.png"] == before[a] and a not in tree(names_root)


def test_a_batch_waits_for_the_lock_of_another_cleaner(names_root, monkeypatch):
    monkeypatch.setattr(clean, "LOCK_TIMEOUT_S", 0)  # give up at once instead of waiting
    seven = first(names_root, "seven_*.png")
    apply_changes(names_root, NAMES, [Change(seven, DELETE)])
    before = tree(names_root)
    with FileLock(trash_dir(names_root) / LOCK_NAME):  # as another process applying a batch holds it
        with pytest.raises(UserError, match="Another Loupe window or command is changing this data set"):
            apply_changes(names_root, NAMES, [Change(first(names_root, "two_*.png"), DELETE)])
        with pytest.raises(UserError, match="Another Loupe window"):
            undo_last(names_root)
    assert tree(names_root) == before and len(history(names_root)) == 1
    assert undo_last(names_root).id == 1 and seven in tree(names_root)


def test_a_failed_step_puts_back_what_was_done(names_root, monkeypatch):
    a, b = first(names_root, "seven_*.png"), first(names_root, "three_*.png")
    before = tree(names_root)
    moves = []
    real_move = clean._move

    def move_once(root, src, dst):  # the second move fails, as on a full disk
        moves.append(src)
        if len(moves) == 2:
            raise OSError(28, "No space left on device")
        real_move(root, src, dst)

    monkeypatch.setattr(clean, "_move", move_once)
    with pytest.raises(UserError, match=r"No space left on device\); everything was put back as it was"):
        apply_changes(names_root, NAMES, [Change(a, DELETE), Change(b, DELETE)])
    assert tree(names_root) == before and history(names_root) == []


# ---------------------------------------------------------------- built-ins

def test_reset_builtin_keeps_the_old_folder_in_the_trash(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    builtin_root = tmp_path / "builtin"
    root = ensure_builtin("digits-names", root=builtin_root)
    gone = first(root, "seven_*.png")
    apply_changes(root, BUILTINS["digits-names"].label_rule, [Change(gone, DELETE)])
    assert len(list(root.glob("*.png"))) == 1796

    again = reset_builtin("digits-names", root=builtin_root)
    assert again == root and len(list(again.glob("*.png"))) == 1797
    assert not trash_dir(again).exists()
    (holder,) = (tmp_path / "home" / "trash").iterdir()  # a folder of its own, so two resets never clash
    assert holder.name.startswith("digits-names-")
    (old,) = holder.iterdir()
    assert old.name == "digits-names"
    assert len(list(old.glob("*.png"))) == 1796 and (old / TRASH_DIR / "1" / gone).is_file()
    assert np.array_equal(np.asarray(Image.open(again / gone)), np.asarray(Image.open(old / TRASH_DIR / "1" / gone)))


def test_relabel_with_grandparent_and_top_folder_rules(tmp_path):
    from engine.data.clean import RELABEL, Change, apply_changes, undo_last
    from engine.data.labels import LabelRule

    root = tmp_path / "corpus"
    for rel in ("animals/cats/indoor/a.png", "animals/dogs/park/b.png", "plants/trees/c.png", "rocks/d.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    apply_changes(root, LabelRule(kind="grandparent"), [Change("animals/cats/indoor/a.png", RELABEL, "dogs")])
    assert (root / "animals/dogs/indoor/a.png").read_bytes() == b"animals/cats/indoor/a.png"
    apply_changes(root, LabelRule(kind="top-folder"), [Change("plants/trees/c.png", RELABEL, "rocks")])
    assert (root / "rocks/trees/c.png").read_bytes() == b"plants/trees/c.png"
    undo_last(root)
    undo_last(root)
    assert (root / "animals/cats/indoor/a.png").is_file() and (root / "plants/trees/c.png").is_file()


# ---------------------------------------------------------------- links inside the data set

@pytest.fixture
def linked_root(folders_root) -> Path:
    """The digits in class folders, with links to one of them as Tango has them: one in another class folder
    (relative), one beside it, and a link to that link."""
    target = first(folders_root, "train/3/*.png")
    os.symlink(f"../3/{Path(target).name}", folders_root / "train/8/copy-of-three.png")
    os.symlink(Path(target).name, folders_root / "train/3/alias.png")
    os.symlink("alias.png", folders_root / "train/3/alias-of-alias.png")
    return folders_root


def links(root: Path) -> dict[str, str]:
    """Every link under root but the trash, as {relative path: its target}."""
    return {p.relative_to(root).as_posix(): os.readlink(p) for p in sorted(root.rglob("*"))
            if p.is_symlink() and TRASH_DIR not in p.relative_to(root).parts}


def dangling(root: Path) -> list[str]:
    return [rel for rel in links(root) if not (root / rel).exists()]


def test_links_to_finds_direct_and_chained_links(linked_root):
    target = first(linked_root, "train/3/[0-9]*.png")
    assert clean.links_to(linked_root, [target]) == {
        target: ["train/3/alias-of-alias.png", "train/3/alias.png", "train/8/copy-of-three.png"]}
    assert clean.links_to(linked_root, ["train/3/alias.png"]) == {"train/3/alias.png": ["train/3/alias-of-alias.png"]}
    assert clean.links_to(linked_root, [first(linked_root, "train/4/*.png")]) == {}


def test_deleting_a_linked_file_moves_its_links_along_and_undo_brings_them_back(linked_root):
    before, before_links = tree(linked_root), links(linked_root)
    target = first(linked_root, "train/3/[0-9]*.png")
    batch = apply_changes(linked_root, FOLDER, [Change(target, DELETE)])

    assert batch.summary == "Moved 1 image (and 3 links to it) to the trash"
    assert dangling(linked_root) == []  # no link leads nowhere
    gone = {target, "train/3/alias.png", "train/3/alias-of-alias.png", "train/8/copy-of-three.png"}
    assert set(before) - set(tree(linked_root)) == gone
    assert {os.path.relpath(os.path.join(linked_root, s["dst"]), trash_dir(linked_root) / str(batch.id))
            for s in batch.steps if s["op"] == "move"} == gone  # in the trash, at their own paths
    assert labels_of(linked_root, FOLDER)  # the data set still reads

    undo_last(linked_root)
    assert tree(linked_root) == before and links(linked_root) == before_links
    assert dangling(linked_root) == []


def test_deleting_only_a_link_leaves_the_file_and_other_links(linked_root):
    before_links = links(linked_root)
    apply_changes(linked_root, FOLDER, [Change("train/8/copy-of-three.png", DELETE)])
    assert links(linked_root) == {k: v for k, v in before_links.items() if k != "train/8/copy-of-three.png"}
    assert dangling(linked_root) == []


def test_relabelling_a_linked_file_by_moving_it_is_refused_and_says_why(linked_root):
    before, before_links = tree(linked_root), links(linked_root)
    target = first(linked_root, "train/3/[0-9]*.png")
    with pytest.raises(UserError, match=r"3 other file\(s\) in the data set are links to it .*'train/3/alias.png'"):
        apply_changes(linked_root, FOLDER, [Change(target, RELABEL, "5")])
    assert tree(linked_root) == before and links(linked_root) == before_links
    assert not trash_dir(linked_root).exists()  # refused before anything was written


def test_relabelling_a_relative_link_that_would_break_is_refused(linked_root):
    before_links = links(linked_root)
    with pytest.raises(UserError, match="would lead nowhere"):  # 'alias.png' -> a name beside it, not in train/5
        apply_changes(linked_root, FOLDER, [Change("train/3/alias-of-alias.png", RELABEL, "5")])
    # a link whose target still resolves from the new folder moves as it is
    apply_changes(linked_root, FOLDER, [Change("train/8/copy-of-three.png", RELABEL, "5")])
    assert links(linked_root)["train/5/copy-of-three.png"] == before_links["train/8/copy-of-three.png"]
    assert dangling(linked_root) == []
