"""Camera data sets: folders per set and class, shots saved whole, deleted to the trash, bad names refused."""
from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from engine.data.builtin import digit_images
from engine.data.camera import (add_class, add_shot, camera_root, class_shots, create_set, delete_shot,
                           folder_name, list_sets, shot_name)
from engine.errors import UserError
from engine.data.labels import LabelRule
from engine.data.sources import scan_folder
from engine.data.resolve import suggest_rules
from engine.spec import SplitRule
from engine.store.files import temp_path


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "loupe-home"))
    return tmp_path / "loupe-home"


def image_bytes(index: int, fmt: str = "JPEG") -> bytes:
    """A real handwritten digit, enlarged to webcam-like size, encoded as the browser would send it."""
    images, _ = digit_images()
    out = io.BytesIO()
    Image.fromarray(images[index], "L").convert("RGB").resize((64, 48)).save(out, format=fmt)
    return out.getvalue()


def test_a_new_set_has_a_folder_per_class_under_loupe_home(home):
    folder = create_set("My hands!", ["thumbs up", "Thumbs down"])
    assert folder == home / "camera" / "My-hands" == camera_root() / "My-hands"
    assert sorted(p.name for p in folder.iterdir()) == ["Thumbs-down", "thumbs-up"]
    assert list_sets() == ["My-hands"]
    assert class_shots(folder) == {"Thumbs-down": [], "thumbs-up": []}


def test_shots_are_the_bytes_received_listed_oldest_first_and_read_as_one_folder_per_class():
    folder = create_set("digits", ["zero", "one"])
    sent = {"zero": [image_bytes(0), image_bytes(10, "PNG")], "one": [image_bytes(1), image_bytes(11)]}
    saved = {c: [add_shot(folder, c, data) for data in shots] for c, shots in sent.items()}
    assert [p.suffix for p in saved["zero"]] == [".jpg", ".png"]
    assert class_shots(folder) == {"one": saved["one"], "zero": saved["zero"]}  # names start with the time
    assert {c: [p.read_bytes() for p in paths] for c, paths in class_shots(folder).items()} == sent
    scan = scan_folder(folder)
    assert sorted(p.relative_to(folder).parts[0] for p in scan.images) == ["one", "one", "zero", "zero"]
    assert suggest_rules(scan) == (LabelRule(kind="folder"), SplitRule(kind="random"))  # the Data page's guess


def test_a_class_can_be_added_later():
    folder = create_set("pets", ["cat", "dog"])
    assert add_class(folder, "bird") == folder / "bird"
    assert list(class_shots(folder)) == ["bird", "cat", "dog"]
    with pytest.raises(UserError, match="already has a class called “Cat”"):
        add_class(folder, "Cat")


def test_deleting_a_shot_moves_it_to_loupe_trash(home):
    folder = create_set("pets", ["cat", "dog"])
    keep, bad = add_shot(folder, "cat", image_bytes(0)), add_shot(folder, "cat", image_bytes(1))
    trashed = delete_shot(folder, bad)
    assert trashed.is_relative_to(home / "trash") and trashed.name == bad.name
    assert trashed.read_bytes() == image_bytes(1)
    assert class_shots(folder)["cat"] == [keep]
    with pytest.raises(UserError, match="gone already"):
        delete_shot(folder, bad)


def test_only_shots_of_the_set_can_be_deleted(tmp_path):
    folder = create_set("pets", ["cat", "dog"])
    other = create_set("other", ["a", "b"])
    elsewhere = add_shot(other, "a", image_bytes(0))
    outside = tmp_path / "mine.jpg"
    outside.write_bytes(image_bytes(0))
    link = folder / "cat" / "link.jpg"
    link.symlink_to(outside)
    for path in (elsewhere, outside, link, folder / "cat", folder / ".." / "other" / "a" / elsewhere.name):
        with pytest.raises(UserError, match="is not a shot of the data set “pets”"):
            delete_shot(folder, path)
    assert outside.is_file() and elsewhere.is_file() and link.is_symlink()


@pytest.mark.parametrize("name, message", [
    ("", "Give the data set a name"),
    ("   ", "Give the data set a name"),
    ("..", "cannot be a data set name"),
    ("/", "cannot be a data set name"),
    ("***", "cannot be a data set name"),
    ("con", "Windows keeps it"),
])
def test_unusable_set_names_are_refused(name, message):
    with pytest.raises(UserError, match=message):
        create_set(name, ["a", "b"])
    assert list_sets() == []


def test_names_become_plain_folder_names():
    assert folder_name("../../etc", "class") == "etc"  # never a path: the separators go
    assert folder_name("chat noir été", "class") == "chat-noir-été"
    assert folder_name("a" * 100, "class") == "a" * 64
    assert folder_name("[x](http://e.com)", "class") == "x-http-e.com"


@pytest.mark.parametrize("classes, message", [
    (["cat"], "at least two classes"),
    (["cat", ""], "Give the class a name"),
    (["cat", ".."], "cannot be a class name"),
    (["Cat", "cat "], "“Cat” and “cat ” would be the same class"),
    (["cat", "dog", "cat/"], "would be the same class"),
    (["cat", "valid"], "reads a folder called “valid” as the training or validation part"),
])
def test_bad_class_lists_are_refused(classes, message):
    with pytest.raises(UserError, match=message):
        create_set("pets", classes)
    assert list_sets() == []


def test_a_set_name_is_used_once():
    create_set("Pets", ["cat", "dog"])
    for name in ("Pets", "pets", "pets!"):
        with pytest.raises(UserError, match="already a camera data set called"):
            create_set(name, ["a", "b"])
    assert list_sets() == ["Pets"]


def test_only_readable_jpeg_or_png_is_saved():
    folder = create_set("pets", ["cat", "dog"])
    with pytest.raises(UserError, match="not a usable picture"):
        add_shot(folder, "cat", b"not a picture")
    with pytest.raises(UserError, match="a GIF picture"):
        add_shot(folder, "cat", image_bytes(0, "GIF"))
    with pytest.raises(UserError, match="no class called “bird”"):
        add_shot(folder, "bird", image_bytes(0))
    assert class_shots(folder) == {"cat": [], "dog": []}
    assert [p.name for p in (folder / "cat").iterdir()] == []  # no temporary file left behind


def test_a_shot_being_written_is_invisible():
    folder = create_set("pets", ["cat", "dog"])
    shot = add_shot(folder, "dog", image_bytes(1))
    temp_path(folder / "cat" / shot_name(".png")).write_bytes(image_bytes(0)[:50])  # as write_bytes names it
    assert class_shots(folder) == {"cat": [], "dog": [shot]}
    assert scan_folder(folder).images == [shot]


def test_names_taken_at_the_same_instant_differ():
    names = {shot_name(".jpg", now=1_790_000_000.25) for _ in range(2000)}
    assert len(names) == 2000
    assert all(n.endswith(".jpg") and "-250000-" in n for n in names)


def test_two_windows_saving_shots_at_once_keep_every_shot():
    folder = create_set("pets", ["cat", "dog"])
    sent = [[image_bytes(w * 20 + i) for i in range(20)] for w in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def window(shots: list[bytes]) -> None:
        try:
            start.wait()
            for data in shots:
                add_shot(folder, "cat", data)
        except BaseException as e:  # reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=window, args=(shots,)) for shots in sent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = sorted(p.read_bytes() for p in class_shots(folder)["cat"])
    assert saved == sorted(sent[0] + sent[1])
    assert sorted(p.name for p in (folder / "cat").iterdir()) == sorted(p.name for p in class_shots(folder)["cat"])


def test_two_windows_creating_one_set_at_once_make_it_once():
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def window(classes: list[str]) -> None:
        start.wait()
        try:
            create_set("pets", classes)
            outcomes.append("made")
        except UserError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=window, args=(classes,)) for classes in (["cat", "dog"], ["cow", "pig"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["There is already a camera data set called “pets”. Choose another name, or pick it "
                                "from the list.", "made"]
    assert list_sets() == ["pets"] and len(class_shots(camera_root() / "pets")) == 2
