"""Data sets made with the webcam: LOUPE_HOME/camera/<set>/<class>/<shot>.jpg, a folder per class, read like any folder."""
from __future__ import annotations

import io
import os
import re
import secrets
import time
import unicodedata
from pathlib import Path

from PIL import Image

from engine.errors import UserError
from engine.store.files import write_bytes
from engine.store.home import home_subdir
from engine.data.images import decode
from engine.data.sources import IMAGE_EXTENSIONS, move_to_loupe_trash
from engine.data.label_levels import VALID_FOLDER_NAMES

SHOT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png"}  # shots are kept in the format the browser sent
MAX_NAME_CHARS = 64
SPLIT_NAMES = frozenset({"train", *VALID_FOLDER_NAMES})  # folder names the Data page reads as a split, not a class
WINDOWS_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                           *(f"LPT{i}" for i in range(1, 10))})


def camera_root() -> Path:
    """The folder holding every camera data set (created if missing)."""
    return home_subdir("camera")


def folder_name(text: str, what: str) -> str:
    """A name the user typed as a plain folder name ('thumbs up' -> 'thumbs-up'); UserError if nothing usable is left."""
    if not text.strip():
        raise UserError(f"Give the {what} a name.")
    name = unicodedata.normalize("NFC", text)
    name = re.sub(r"[^\w.-]+", "-", name).strip("-._")[:MAX_NAME_CHARS].strip("-._")
    if not name:
        raise UserError(f"“{text}” cannot be a {what} name: use letters or digits.")
    if name.split(".")[0].upper() in WINDOWS_NAMES:
        raise UserError(f"“{text}” cannot be a {what} name: Windows keeps it for a device. Choose another name.")
    return name


def _class_name(text: str) -> str:
    name = folder_name(text, "class")
    if name.casefold() in SPLIT_NAMES:
        raise UserError(f"“{text}” cannot be a class name: Loupe reads a folder called “{name}” as the training or "
                        "validation part of a data set. Choose another name.")
    return name


def _entries(folder: Path) -> list[Path]:
    """The visible entries of a folder, sorted by name (hidden ones are Loupe's or the system's)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def list_sets(root: Path | None = None) -> list[str]:
    """The names of the camera data sets, sorted."""
    return [p.name for p in _entries(root or camera_root()) if p.is_dir() and not p.is_symlink()]


def create_set(name: str, classes: list[str], root: Path | None = None) -> Path:
    """A new, empty camera data set with a folder per class; returns its folder."""
    root = root or camera_root()
    set_name = folder_name(name, "data set")
    class_names = [_class_name(c) for c in classes]
    if len(class_names) < 2:
        raise UserError("A data set needs at least two classes: the model learns to tell them apart.")
    seen: dict[str, str] = {}
    for text, class_name in zip(classes, class_names):
        if class_name.casefold() in seen:
            raise UserError(f"“{seen[class_name.casefold()]}” and “{text}” would be the same class "
                            f"(“{class_name}”). Give each class its own name.")
        seen[class_name.casefold()] = text
    if set_name.casefold() in {s.casefold() for s in list_sets(root)}:
        raise _set_exists(set_name)
    folder = root / set_name
    try:
        folder.mkdir()  # atomic: of two windows creating one name at once, one gets the folder
    except FileExistsError:
        raise _set_exists(set_name) from None
    for class_name in class_names:
        (folder / class_name).mkdir()
    return folder


def _set_exists(name: str) -> UserError:
    return UserError(f"There is already a camera data set called “{name}”. Choose another name, or pick it from the list.")


def add_class(set_dir: Path, name: str) -> Path:
    """A new, empty class in a camera data set; returns its folder."""
    class_name = _class_name(name)
    if class_name.casefold() in {c.casefold() for c in class_shots(set_dir)}:
        raise UserError(f"This data set already has a class called “{class_name}”.")
    folder = Path(set_dir) / class_name
    try:
        folder.mkdir()
    except FileExistsError:
        raise UserError(f"This data set already has a class called “{class_name}”.") from None
    except FileNotFoundError:
        raise UserError(f"The data set “{Path(set_dir).name}” no longer exists.") from None
    return folder


def class_shots(set_dir: Path) -> dict[str, list[Path]]:
    """Each class of a camera data set (sorted) with its shots, oldest first."""
    set_dir = Path(set_dir)
    if not set_dir.is_dir():
        raise UserError(f"The data set “{set_dir.name}” no longer exists.")
    return {c.name: [p for p in _entries(c) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            for c in _entries(set_dir) if c.is_dir() and not c.is_symlink()}


def _shot_suffix(data: bytes) -> str:
    """'.jpg' or '.png' for the bytes of a readable JPEG or PNG; UserError for anything else."""
    try:
        decode(io.BytesIO(data))
    except ValueError as e:
        raise UserError(f"The camera sent something that is not a usable picture: it is {e}. Nothing was saved.") from None
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
    if fmt not in SHOT_SUFFIXES:
        raise UserError(f"The camera sent a {fmt} picture; Loupe keeps camera shots as JPEG or PNG. Nothing was saved.")
    return SHOT_SUFFIXES[fmt]


def shot_name(suffix: str, now: float | None = None) -> str:
    """A new shot's file name: the time it was taken, then a random part, so two windows never pick one name."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}"
    return f"{stamp}-{secrets.token_hex(4)}{suffix}"


def add_shot(set_dir: Path, class_name: str, data: bytes) -> Path:
    """Save one camera shot (JPEG or PNG bytes, kept as they are) into a class; returns the new file."""
    suffix = _shot_suffix(data)
    if class_name not in class_shots(set_dir):
        raise UserError(f"The data set “{Path(set_dir).name}” has no class called “{class_name}” any more.")
    target = Path(set_dir) / class_name / shot_name(suffix)
    try:
        # written whole under a hidden name, then renamed: a scan in another window never reads half a shot
        write_bytes(target, data)
    except OSError as e:
        raise UserError(f"Could not save the shot in “{class_name}”: {e.strerror or e}. Is the disk full?") from None
    return target


def delete_shot(set_dir: Path, shot: Path) -> Path:
    """Move one shot of a camera data set into Loupe's trash (never deleted); returns where it went."""
    set_dir, shot = Path(set_dir), Path(shot)
    in_a_class = (shot.parent.parent == set_dir and not shot.parent.name.startswith(".")
                  and os.path.realpath(shot.parent.parent) == os.path.realpath(set_dir))
    if not in_a_class or shot.is_symlink() or shot.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"“{shot.name}” is not a shot of the data set “{set_dir.name}”, so Loupe will not move it.")
    if not shot.is_file():
        raise UserError(f"The shot “{shot.name}” is gone already (another window may have deleted it).")
    try:
        return move_to_loupe_trash(shot, f"camera-{set_dir.name}-{shot.parent.name}")
    except FileNotFoundError:
        raise UserError(f"The shot “{shot.name}” is gone already (another window may have deleted it).") from None
    except OSError as e:
        raise UserError(f"Could not move “{shot.name}” to Loupe's trash ({e.strerror or e}); it is still there.") from None
