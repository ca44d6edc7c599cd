"""Tests for engine/store/files.py: a file is replaced whole or left as it was."""
import json
import os
import stat

import pytest

import engine.store.files as files
from engine.store.files import temp_path, write_bytes, write_json, write_text


def test_writes_bytes_text_and_json_and_leaves_only_the_file(tmp_path):
    assert write_bytes(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    write_text(tmp_path / "b.txt", "größe\n")
    write_json(tmp_path / "c.json", {"disk_limit_gb": 2.5})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "größe\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"disk_limit_gb": 2.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    path.write_text("old")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError):
        write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_temporary_names_are_hidden_beside_the_file_and_never_shared(tmp_path):
    names = {temp_path(tmp_path / "x.json", ".partial") for _ in range(500)}
    assert len(names) == 500
    assert all(n.parent == tmp_path and n.name.startswith(".x.json.") and n.name.endswith(".partial") for n in names)


def test_a_missing_folder_is_an_error_not_a_new_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bytes(tmp_path / "gone" / "a.bin", b"1")
    assert not (tmp_path / "gone").exists()
