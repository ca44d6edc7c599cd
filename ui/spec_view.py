"""A run spec shown to people: a table of settings (defaults greyed) and the command that replays it."""
from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from engine.errors import UserError
from engine.data.resolve import resolve
from engine.spec import SPEC_FILE, RunSpec, override, setting_name

GREY = "color: #9a9a9a"


def _rows(spec: RunSpec) -> dict[str, object]:
    """Setting name → value as people read it (a label or split rule as one sentence)."""
    out: dict[str, object] = {}
    for name, value in spec.flat().items():
        if name.startswith(("data.label.", "data.split.")):
            rule = name.split(".")[1]
            if f"data.{rule}" not in out:
                obj = getattr(spec.data, rule)
                out[f"data.{rule}"] = obj.describe() if obj is not None else "automatic"
            continue
        if isinstance(value, list):
            value = " : ".join(f"{v:g}" for v in value)
        out[name] = "automatic" if value is None else value
    return out


def defaults_for(spec: RunSpec) -> RunSpec:
    """Loupe's defaults for the same data source (what a run with no settings changed would use)."""
    base = override(RunSpec(), {"data.source": spec.data.source})
    try:
        return resolve(base)
    except (UserError, OSError):  # the folder is gone: compare with the unresolved defaults
        return base


def settings_table(spec: RunSpec):
    """A styled table: setting (by its human name), value; rows still at Loupe's default are grey."""
    values, defaults = _rows(spec), _rows(defaults_for(spec))
    table = pd.DataFrame({"setting": [setting_name(k) for k in values], "value": [str(v) for v in values.values()]})
    is_default = [str(defaults.get(k)) == str(v) and k != "train.seed" for k, v in values.items()]
    return table.style.apply(lambda _: [GREY if d else "" for d in is_default], axis=0)


def spec_path(run: dict) -> Path | None:
    """The run folder's spec.json, if the run kept one."""
    folder = run.get("folder") or run.get("weights_path")
    path = Path(folder) / SPEC_FILE if folder else None
    return path if path is not None and path.is_file() else None


def replay_command(run: dict) -> str:
    """The one command line that trains the run again from its spec."""
    path = spec_path(run)
    target = str(path) if path is not None else f"run-{run['id']}-spec.json"
    return f".venv/bin/python -m engine train --spec {shlex.quote(target)}"
