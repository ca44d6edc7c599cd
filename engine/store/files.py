"""Files written whole or not at all: a reader (another window, another process, a crash's next start) sees the old
file or the new one, never half of one.

    write_bytes(path, data); write_text(path, text); write_json(path, value)
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def temp_path(path: str | Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A new temporary name beside `path`: hidden (folder scans skip it) and unique to this write."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def write_bytes(path: str | Path, data: bytes, temp_suffix: str = TEMP_SUFFIX) -> Path:
    """Replace the file `path` by `data` atomically and durably; it keeps the permissions of the file it replaces.

    The bytes go to a temporary file of their own in the same folder (`temp_suffix` ends its name), are flushed to
    the disk, then renamed over `path`; on any failure the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = temp_path(path, temp_suffix)
    try:
        with open(tmp, "xb") as f:  # "x": never shares a temporary file with another writer
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except OSError:
            pass  # a new file (or one that cannot be looked at): the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Replace the file `path` by `text` atomically (as write_bytes)."""
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, value: Any) -> Path:
    """Replace the file `path` by `value` as JSON atomically (as write_bytes)."""
    return write_text(path, json.dumps(value))
