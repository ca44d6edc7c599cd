"""Draft specs: the settings a user is working on in the app, saved under LOUPE_HOME/drafts as they change.

Each browser window keeps its own draft (its id travels in the page address), so a reload, a bookmark or
a restarted server brings the window back to where it was; a new window starts from the latest draft.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from engine.errors import UserError
from engine.store.home import home_subdir
from engine.spec import RunSpec, load_spec, save_spec

DRAFT_ID = re.compile(r"^[0-9a-f]{12}$")  # ids come from page addresses: never a path


def new_draft_id() -> str:
    return secrets.token_hex(6)


def valid_draft_id(draft_id: object) -> bool:
    return isinstance(draft_id, str) and bool(DRAFT_ID.match(draft_id))


class DraftStore:
    """Drafts as JSON files, one per window id (the last writer of a draft wins; a reader never sees half a file)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else home_subdir("drafts")
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, draft_id: str) -> Path:
        if not valid_draft_id(draft_id):
            raise ValueError(f"not a draft id: {draft_id!r}")
        return self.folder / f"{draft_id}.json"

    def load(self, draft_id: str) -> RunSpec | None:
        """The draft saved under this id; None if there is none or it can no longer be read."""
        path = self._path(draft_id)
        if not path.is_file():
            return None
        try:
            return load_spec(path)
        except UserError:  # written by a newer Loupe, or damaged: start afresh rather than fail the page
            return None

    def save(self, draft_id: str, spec: RunSpec) -> None:
        save_spec(spec, self._path(draft_id))

    def latest(self) -> RunSpec | None:
        """The most recently saved readable draft, if any."""
        def saved(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:  # gone meanwhile
                return 0.0

        for path in sorted(self.folder.glob("*.json"), key=saved, reverse=True):
            if valid_draft_id(path.stem) and (spec := self.load(path.stem)) is not None:
                return spec
        return None
