"""Tests for engine/data/labels.py: label rules are pure functions of relative paths, checked exactly."""
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.data import labels
from engine.data.labels import (MAX_PATTERN_SIZE, labeller_for, MAX_REPEAT_COUNT, CSVLabeller, LabelRule, ParentLabeller, RegexLabeller,
                           apply_label_rule, compile_pattern, parse_label_rule, pattern_size)

PETS = r"^(.+)_\d+\.jpg$"


# ---------------------------------------------------------------- RegexLabeller

def test_regex_on_name_keeps_underscores_inside_the_label():
    paths = ["images/great_pyrenees_12.jpg", "images/Abyssinian_1.jpg", "american_pit_bull_terrier_190.jpg"]
    assert RegexLabeller(PETS).label_all(paths) == ["great_pyrenees", "Abyssinian", "american_pit_bull_terrier"]


def test_regex_on_name_ignores_the_folders():
    # the folder name would match ^(.+)/ on the path, but on="name" only sees the file name
    assert RegexLabeller(r"^([a-z]+)/").label_all(["train/3.png"]) == [None]
    assert RegexLabeller(r"^(\d+)\.png$").label_all(["train/3.png", "valid/7/12.png"]) == ["3", "12"]


def test_regex_on_relative_path():
    paths = ["train/3/a.png", "valid/7/b.png", "loose.png"]
    assert RegexLabeller(r"^\w+/(\d+)/", on="path").label_all(paths) == ["3", "7", None]


def test_named_group_label_is_preferred_over_group_one():
    labeller = RegexLabeller(r"^(?P<prefix>[a-z]+)_(?P<label>[a-z]+)_\d+\.png$")
    assert labeller.label_all(["img_cat_1.png", "img_dog_22.png"]) == ["cat", "dog"]


def test_no_match_and_empty_group_give_none():
    labeller = RegexLabeller(r"^([a-z]*)_\d+\.jpg$")
    assert labeller.label_all(["cat_1.jpg", "cat.jpg", "_5.jpg", "cat_1.png"]) == ["cat", None, None, None]


def test_on_must_be_name_or_path():
    with pytest.raises(ValueError):
        RegexLabeller(PETS, on="folder")


def test_invalid_pattern_is_a_user_error_without_traceback_text():
    with pytest.raises(UserError) as info:
        RegexLabeller(r"^(.+_\d+\.jpg$").label_all(["a_1.jpg"])
    message = str(info.value)
    assert message.startswith("That pattern is not a valid regular expression: missing )")
    assert "position" in message
    assert "Traceback" not in message and "regex._regex_core" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_pattern_without_group_is_a_user_error():
    with pytest.raises(UserError, match="no group"):
        RegexLabeller(r"^.+_\d+\.jpg$").label_all(["a_1.jpg"])


@pytest.mark.parametrize("pattern", ["", "   "])
def test_empty_pattern_is_a_user_error(pattern):
    with pytest.raises(UserError, match="empty"):
        RegexLabeller(pattern).label_all(["a_1.jpg"])


def test_catastrophic_backtracking_is_stopped_with_a_user_error():
    names = ["a" * 40 + "!"] * 200
    with pytest.raises(UserError, match="too long"):
        RegexLabeller(r"(a|aa)+$").label_all(names)


def test_nested_repeat_that_regex_handles_completes_within_the_budget():
    names = ["a" * 40 + "!"] * 200
    assert RegexLabeller(r"(a+)+$").label_all(names) == [None] * 200  # over the CPU-time budget it would raise


# ---------------------------------------------------------------- patterns that would explode while compiling
# (compiling runs in a child process with a memory cap in tests/engine/test_hostile.py)

@pytest.mark.parametrize("pattern, size, largest", [
    (r"^(.+)_\d+\.png$", 9, 1),
    (r"(?P<label>[a-z]+)_\d{1,4}\.jpg", 10, 4),
    (r"(\d{3})", 3, 3),
    (r"(a{1000})b{1000}", 2000, 1000),  # repeats side by side add up
    (r"((a{10}){10}){10}", 1000, 10),  # repeats inside repeats multiply
    (r"(a{2}){,5}", 10, 5),  # a repeat counts its largest number of times
    (r"(ab{3,}c)", 5, 3),  # ... or its smallest when it has no largest
    (r"([{]{3}\{2\}\p{L}{4})", 3 + 3 + 4, 4),  # braces inside a set, escaped or after \p are not counts
    (r"([a{1000}])", 7, 0),
    ("(?x)(a{10}  # ( not a group {99}\n)", 10, 10),  # a verbose-mode comment holds nothing
])
def test_pattern_size_multiplies_nested_counts(pattern, size, largest):
    assert pattern_size(pattern) == (size, largest)


def test_pattern_size_of_a_broken_pattern_is_none():
    assert pattern_size("(a{3}") is None


@pytest.mark.parametrize("pattern, message", [
    (r"((a{1000}){1000}){1000}(x)", "multiply out to 1,000,000,001 characters"),
    (r"(a{999}){999}", "multiply out to 998,001 characters"),
    (r"(?:(?:(?:(?:(a{10}){10}){10}){10}){10}){2}", "multiply out to 200,000 characters"),
    (r"([a-z]{1000,}){1000}", "multiply out to 1,000,000 characters"),
    (r"(a{100000000})", "repeats something 100,000,000 times"),
    (r"(a{0,20000})", "repeats something 20,000 times"),
    ("(" + "a" * 3000 + ")", "3,002 characters long"),
])
def test_patterns_too_big_to_compile_are_refused(pattern, message):
    with pytest.raises(UserError, match=message):
        compile_pattern(pattern)


def test_limits_are_the_documented_ones():
    assert (MAX_REPEAT_COUNT, MAX_PATTERN_SIZE) == (10_000, 100_000)
    compile_pattern(r"(a{10000})")
    compile_pattern(r"(a{100}){1000}")  # exactly MAX_PATTERN_SIZE


def test_deeply_nested_pattern_is_a_user_error():
    with pytest.raises(UserError, match="nests groups too deeply"):
        compile_pattern("(" * 900 + "a" + ")" * 900)


def test_without_regex_internals_a_rough_bound_still_refuses_bombs(monkeypatch):
    def gone(pattern):
        raise AttributeError("regex._regex_core changed")

    monkeypatch.setattr(labels, "_parse_tree", gone)
    # as if every count applied to the whole pattern: safe patterns pass, bombs do not
    assert pattern_size(r"(\d{3})") == (7 * 3, 3)
    compile_pattern(r"(?P<label>[a-z]+)_\d{1,4}\.jpg")
    with pytest.raises(UserError, match="multiply out"):
        compile_pattern(r"((a{1000}){1000}){1000}(x)")
    with pytest.raises(UserError, match="100,000,000 times"):
        compile_pattern(r"(a{100000000})")


# ---------------------------------------------------------------- ParentLabeller

def test_parent_labeller_is_the_folder_holding_the_file():
    paths = ["train/3/a.png", "valid/7/b.png", "cats/x.jpg", "top.png"]
    assert ParentLabeller().label_all(paths) == ["3", "7", "cats", None]


# ---------------------------------------------------------------- CSVLabeller

def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_labeller_with_bare_names(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", "fname,breed\ncat_1.jpg,cat\n dog_2.jpg , dog \nodd.jpg,\n")
    labels = CSVLabeller(str(csv), "fname", "breed").label_all(
        ["images/cat_1.jpg", "dog_2.jpg", "odd.jpg", "missing.jpg"])
    assert labels == ["cat", "dog", None, None]


def test_csv_labeller_with_relative_paths(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", "name,label\ntrain/3/a.png,three\n./valid/7/a.png,seven\nvalid\\1\\c.png,one\n")
    labels = CSVLabeller(str(csv), "name", "label").label_all(
        ["train/3/a.png", "valid/7/a.png", "valid/1/c.png", "a.png", "train/9/a.png"])
    # with paths in the CSV, a bare name or another folder's file of the same name does not match
    assert labels == ["three", "seven", "one", None, None]


def test_csv_blank_labels_are_none(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", "name,label\na.png,\nb.png,   \nc.png,NA\n")
    assert CSVLabeller(str(csv), "name", "label").label_all(["a.png", "b.png", "c.png"]) == [None, None, "NA"]


def test_csv_duplicate_rows_first_row_wins_with_a_warning(tmp_path):
    csv = write_csv(tmp_path / "labels.csv",
                    "name,label\na.png,cat\nb.png,dog\n./a.png,dog\nc.png,\nc.png,cow\nb.png,dog\nd.png,emu\n")
    labeller = CSVLabeller(str(csv), "name", "label")
    labels, warnings = labeller.label_all_with_warnings(["a.png", "b.png", "c.png", "d.png"])
    assert labels == ["cat", "dog", "cow", "emu"]  # a blank label is no row for c.png
    assert warnings == ["labels.csv has more than one row for 2 files: 'a.png' (rows 2, 4: cat, dog); "
                        "'b.png' (rows 3, 7: dog, dog). Loupe uses the first row for each."]
    report = apply_label_rule(LabelRule(kind="csv", csv_path=str(csv)), ["a.png", "b.png"])
    assert report.labels == ["cat", "dog"] and report.warnings == warnings


def test_csv_duplicate_warning_names_three_files_and_counts_the_rest(tmp_path):
    rows = "".join(f"{n}.png,x\n{n}.png,y\n" for n in "abcde")
    csv = write_csv(tmp_path / "labels.csv", "name,label\n" + rows)
    (warning,) = CSVLabeller(str(csv), "name", "label").label_all_with_warnings([])[1]
    assert warning.startswith("labels.csv has more than one row for 5 files: 'a.png' (rows 2, 3: x, y); ")
    assert warning.endswith("'c.png' (rows 6, 7: x, y) and 2 more. Loupe uses the first row for each.")


def test_no_warnings_without_duplicates(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", "name,label\na.png,cat\n")
    assert apply_label_rule(LabelRule(kind="csv", csv_path=str(csv)), ["a.png"]).warnings == []
    assert apply_label_rule(LabelRule(kind="folder"), ["x/a.png"]).warnings == []


def test_csv_missing_column_lists_available_columns(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", "file,breed,is_valid\na.png,cat,0\n")
    with pytest.raises(UserError) as info:
        CSVLabeller(str(csv), "file", "label").label_all(["a.png"])
    assert str(info.value) == "labels.csv has no column 'label'. Its columns are: file, breed, is_valid."


def test_csv_missing_file_is_a_user_error(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(UserError, match="does not exist") as info:
        CSVLabeller(str(missing), "name", "label").label_all(["a.png"])
    assert str(missing) in str(info.value)


# ---------------------------------------------------------------- parse_label_rule

def test_parse_regex_rules():
    assert parse_label_rule(r"regex:^(.+)_\d+\.jpg$") == LabelRule(kind="regex", pattern=r"^(.+)_\d+\.jpg$", on="name")
    assert parse_label_rule(r"path-regex:^(\w+)/") == LabelRule(kind="regex", pattern=r"^(\w+)/", on="path")
    # a pattern may itself contain colons
    assert parse_label_rule("regex:^(a:b)$").pattern == "^(a:b)$"


def test_parse_folder_rule():
    assert parse_label_rule("folder") == LabelRule(kind="folder")
    assert isinstance(labeller_for(parse_label_rule("folder")), ParentLabeller)


def test_parse_csv_rule_relative_to_root(tmp_path):
    rule = parse_label_rule("csv:labels.csv:breed", root=tmp_path)
    assert rule == LabelRule(kind="csv", csv_path=str(tmp_path / "labels.csv"), file_col="name", label_col="breed")
    absolute = tmp_path / "elsewhere" / "l.csv"
    assert parse_label_rule(f"csv:{absolute}:label", root=tmp_path / "x").csv_path == str(absolute)
    assert parse_label_rule("csv:labels.csv:label").csv_path == "labels.csv"


def test_parsed_csv_rule_labels_files(tmp_path):
    write_csv(tmp_path / "labels.csv", "name,breed\na.png,cat\nb.png,dog\n")
    report = apply_label_rule(parse_label_rule("csv:labels.csv:breed", root=tmp_path), ["a.png", "sub/b.png", "c.png"])
    assert report.labels == ["cat", "dog", None]


@pytest.mark.parametrize("text", ["", "regex", "folders", "csv:labels.csv", "csv::label", "csv:labels.csv:", "glob:*.png"])
def test_bad_rule_is_a_user_error(text):
    with pytest.raises(UserError):
        parse_label_rule(text)


def test_unknown_kind_in_label_rule_is_a_user_error():
    with pytest.raises(UserError, match="Unknown label rule 'magic'"):
        labeller_for(LabelRule(kind="magic"))


# ---------------------------------------------------------------- apply_label_rule

def test_apply_label_rule_counts():
    paths = ([f"cat_{i}.jpg" for i in range(3)] + [f"dog_{i}.jpg" for i in range(5)]
             + ["ant_0.jpg", "bee_0.jpg"] + [f"junk{i}.txt" for i in range(7)])
    report = apply_label_rule(LabelRule(kind="regex", pattern=PETS), paths)
    assert report.n_matched == 10
    assert report.n_unmatched == 7
    assert report.unmatched_examples == [f"junk{i}.txt" for i in range(5)]
    assert list(report.class_counts.items()) == [("dog", 5), ("cat", 3), ("ant", 1), ("bee", 1)]
    assert report.classes == ["ant", "bee", "cat", "dog"]
    assert report.labels[:3] == ["cat"] * 3 and report.labels[-1] is None


def test_apply_label_rule_example_count_is_adjustable():
    report = apply_label_rule(LabelRule(kind="folder"), ["a.png", "b.png", "c.png", "x/d.png"], n_examples=2)
    assert (report.n_matched, report.n_unmatched, report.unmatched_examples) == (1, 3, ["a.png", "b.png"])
    assert report.class_counts == {"x": 1}


def test_grandparent_and_top_folder_presets():
    from engine.data.labels import LabelRule, apply_label_rule, parse_label_rule

    paths = ["animals/cats/indoor/a.jpg", "animals/dogs/park/b.jpg", "plants/trees/c.jpg", "x.jpg"]
    assert apply_label_rule(LabelRule(kind="grandparent"), paths).labels == ["cats", "dogs", "plants", None]
    assert apply_label_rule(LabelRule(kind="top-folder"), paths).labels == ["animals", "animals", "plants", None]
    assert parse_label_rule("grandparent") == LabelRule(kind="grandparent")
    assert parse_label_rule("top-folder") == LabelRule(kind="top-folder")
    assert parse_label_rule("parent") == LabelRule(kind="folder")
    assert LabelRule(kind="top-folder").describe() == "top-level folder under the data folder"
