"""Where Loupe keeps its data: LOUPE_HOME, default ~/.cache/loupe."""
import os
from pathlib import Path


def loupe_home() -> Path:
    """The Loupe home folder (created if missing)."""
    home = Path(os.environ.get("LOUPE_HOME") or Path.home() / ".cache" / "loupe").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_subdir(name: str) -> Path:
    """A named folder inside the Loupe home (created if missing)."""
    path = loupe_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
