"""The data cleaner: delete or relabel images the way the label rule reads them, with an undo log.

Nothing is ever destroyed: a deleted image is moved into `<root>/.loupe-trash/<batch id>/`, a CSV is
backed up there before it is rewritten, and every "Apply" is one line in `<root>/.loupe-trash/log.jsonl`
that `undo_last` reverses. Every change is checked before anything on disk moves, a move never replaces a
file, and one lock file per data set (`<root>/.loupe-trash/.lock`) lets one apply or undo run at a time
across threads and processes (two browser tabs, two servers, the command line).
"""
from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from engine.data.builtin import BUILTINS, builtin_path, ensure_builtin
from engine.errors import UserError
from engine.data.labels import CSVLabeller, LabelRule, compile_pattern, labeller_for
from engine.data.sources import TRASH_DIR, move_to_loupe_trash
from engine.store.files import write_bytes

KEEP, DELETE, RELABEL = "keep", "delete", "relabel"
ACTIONS = (KEEP, DELETE, RELABEL)
LOG_NAME = "log.jsonl"
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 60.0  # a batch is renames and one CSV rewrite: another process holds the lock for moments only
CSV_BACKUP_DIR = ".csv-backup"  # hidden, so it can never clash with a deleted image's relative path
MAX_FREE_NAME_TRIES = 1000

_reset_lock = threading.Lock()  # one built-in reset at a time in this process


@dataclass(frozen=True)
class Change:
    """What to do with one image: keep it, delete it, or give it a new label."""

    rel_path: str  # posix path relative to the data set root, as in LabelledItems.rel_paths
    action: str  # KEEP | DELETE | RELABEL
    new_label: str | None = None  # for RELABEL


@dataclass
class ChangeBatch:
    """One "Apply" of the cleaner: what was done, in order, so it can be undone."""

    id: int
    time: float
    steps: list[dict]  # {"op": "move", "src", "dst"} | {"op": "mkdir", "dir"} | {"op": "csv", "csv", "backup", "rows", "sha256"}
    summary: str  # plain language, e.g. "Moved 1 image to the trash, relabelled 2 (seven → one)"
    undone: bool = False


def trash_dir(root: str | Path) -> Path:
    """Where a data set's deleted images, CSV backups, undo log and lock file live."""
    return Path(root) / TRASH_DIR


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the data set's lock: one apply, undo or reset at a time, across threads and processes."""
    lock_path = trash_dir(root) / LOCK_NAME
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=LOCK_TIMEOUT_S)
        lock.acquire()
    except Timeout:
        raise UserError("Another Loupe window or command is changing this data set right now. "
                        "Try again in a moment; nothing was changed.") from None
    except OSError as e:
        raise UserError(f"Loupe cannot write in {root} ({e.strerror or e}), so it cannot change this data set. "
                        "Nothing was changed.") from None
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- checks

def _check_rel(rel: object) -> str:
    """A relative path that stays inside the root and names no hidden file; else a UserError."""
    if not isinstance(rel, str) or not rel:
        raise UserError("A change names no file.")
    if "\\" in rel or "\x00" in rel:
        raise UserError(f"'{rel}' is not a valid path inside the data set (use / between folders).")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise UserError(f"'{rel}' is an absolute path; the cleaner only changes files inside the data set folder.")
    parts = rel.split("/")
    if ".." in parts:
        raise UserError(f"'{rel}' points outside the data set folder; the cleaner only changes files inside it.")
    if any(p in ("", ".") for p in parts):
        raise UserError(f"'{rel}' is not a valid path inside the data set (empty or '.' folder name).")
    if any(p.startswith(".") for p in parts):
        raise UserError(f"'{rel}' is a hidden file or inside a hidden folder (such as {TRASH_DIR}); "
                        "the cleaner only changes the images Loupe shows.")
    return rel


def _check_item(root: Path, real_root: str, rel: str) -> str:
    """An existing file inside the root (after following links); else a UserError."""
    _check_rel(rel)
    path = root / rel
    if not os.path.lexists(path):
        raise UserError(f"'{rel}' is no longer in the data set folder (was it moved or deleted?). "
                        "Reload the data set and try again.")
    if not Path(os.path.realpath(path)).is_relative_to(real_root):
        raise UserError(f"'{rel}' is a link to a file outside the data set folder; the cleaner leaves it alone.")
    if not path.is_file():
        raise UserError(f"'{rel}' is not a file.")
    return rel


def _check_label(label: object, rel: str) -> str:
    """A new label that can be a folder or file-name part: non-empty, no slashes, not hidden."""
    if not isinstance(label, str) or not label.strip():
        raise UserError(f"Choose a new label for '{rel}' (it is empty).")
    label = label.strip()
    if "/" in label or "\\" in label:
        raise UserError(f"The label '{label}' contains a slash; labels become folder or file names, so use e.g. '-' instead.")
    if label.startswith("."):
        raise UserError(f"The label '{label}' starts with '.', which would hide the file; choose another label.")
    if any(ord(c) < 32 for c in label):
        raise UserError(f"The label {label!r} contains control characters; choose a plain label.")
    return label


# ---------------------------------------------------------------- the undo log

def _log_path(root: Path) -> Path:
    return trash_dir(root) / LOG_NAME


def _read_log(root: Path) -> list[dict]:
    path = _log_path(root)
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: the rest of the history still counts
        if isinstance(event, dict) and event.get("event") in ("apply", "undo"):
            events.append(event)
    return events


def _append_log(root: Path, event: dict) -> None:
    path = _log_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _batches(events: list[dict]) -> list[ChangeBatch]:
    """Batches oldest first, with undone flags."""
    batches: dict[int, ChangeBatch] = {}
    for e in events:
        if e["event"] == "apply":
            batches[int(e["id"])] = ChangeBatch(id=int(e["id"]), time=float(e["time"]), steps=list(e["steps"]),
                                                summary=str(e["summary"]))
        elif int(e["id"]) in batches:
            batches[int(e["id"])].undone = True
    return sorted(batches.values(), key=lambda b: b.id)


def history(root: str | Path) -> list[ChangeBatch]:
    """Every batch applied to this data set, newest first, with undone flags."""
    # no lock: log lines are appended whole, and a line cut short is skipped (a read-only folder has a history too)
    return _batches(_read_log(Path(root).expanduser().resolve()))[::-1]


def _next_id(root: Path, events: list[dict]) -> int:
    """The next batch id (the caller holds the data set's lock, so no other process takes the same one)."""
    used = [int(e["id"]) for e in events]
    trash = trash_dir(root)
    if trash.is_dir():  # a batch folder left by a crash before its log line was written
        used += [int(p.name) for p in trash.iterdir() if p.name.isdigit()]
    return max(used, default=0) + 1


# ---------------------------------------------------------------- links between the data set's files

MAX_LINK_HOPS = 40  # as the OS allows before it calls a chain of links a loop


def _hops(link: str) -> set[str]:
    """Every path a chain of links passes through on its way to a file (each with its folders resolved)."""
    seen: set[str] = set()
    current = link
    for _ in range(MAX_LINK_HOPS):
        try:
            target = os.readlink(current)
        except OSError:
            break  # not a link (the file at the end), or gone
        current = os.path.join(os.path.realpath(os.path.dirname(current)), target)
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        if current in seen:
            break
        seen.add(current)
    return seen


def links_to(root: str | Path, rels: list[str]) -> dict[str, list[str]]:
    """For each of these files, the links elsewhere in the data set that lead to it (directly or through other
    links), as relative paths: what would lead nowhere once the file is moved. Files nothing links to are left out."""
    root = Path(root).expanduser().resolve()
    wanted = {os.path.join(os.path.realpath(os.path.dirname(root / rel)), PurePosixPath(rel).name): rel for rel in rels}
    found: dict[str, list[str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.startswith(".") or not os.path.islink(path):
                continue
            rel = Path(path).relative_to(root).as_posix()
            for hop in _hops(path):
                if hop in wanted and wanted[hop] != rel:
                    found.setdefault(wanted[hop], []).append(rel)
    return found


def _said(links: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{link}'" for link in links[:limit])
    return shown + (f" and {len(links) - limit} more" if len(links) > limit else "")


# ---------------------------------------------------------------- planning

@dataclass
class _Plan:
    """Everything one batch will do, worked out before anything on disk changes."""

    batch_dir: str  # relative to root
    moves: list[tuple[str, str]]  # (src, dst), relative to root
    new_dirs: list[str]  # folders to create, parents first, relative to root
    csv_path: Path | None = None
    csv_bytes: bytes = b""
    csv_rows: int = 0
    links: list[str] = field(default_factory=list)  # links to deleted files, moved to the trash with them


def _missing_dirs(root: Path, real_root: str, rel_dir: str, planned: list[str]) -> list[str]:
    """The folders to create (parents first) so that rel_dir exists; refuses files in the way and links out."""
    missing: list[str] = []
    current = PurePosixPath(rel_dir)
    while str(current) not in (".", "") and str(current) not in planned:
        path = root / str(current)
        if os.path.lexists(path):
            if not path.is_dir():
                raise UserError(f"Cannot create the folder '{current}': a file of that name is in the way.")
            if not Path(os.path.realpath(path)).is_relative_to(real_root):
                raise UserError(f"'{current}' links outside the data set folder; the cleaner will not move files there.")
            break
        missing.append(str(current))
        current = current.parent
    return missing[::-1]


def _free_name(root: Path, rel: str, taken: set[str], accept: Callable[[str], bool]) -> str | None:
    """rel, or rel with '-1', '-2'… added to its stem, whichever is free first; None if a variant is not accepted."""
    candidate, path = rel, PurePosixPath(rel)
    for n in range(1, MAX_FREE_NAME_TRIES + 1):
        if not (os.path.lexists(root / candidate) or candidate in taken):
            return candidate
        candidate = str(path.with_name(f"{path.stem}-{n}{path.suffix}"))
        if not accept(candidate):
            return None
    return None


def _renamed_by_regex(rule: LabelRule, rel: str, new_label: str) -> str:
    """The relative path with the label group's text replaced by new_label."""
    compiled = compile_pattern(rule.pattern)
    group = "label" if "label" in compiled.groupindex else 1
    name = PurePosixPath(rel).name
    target = name if rule.on == "name" else rel
    match = compiled.search(target, timeout=5)
    if not match or not match.group(group):
        raise UserError(f"The label pattern does not match '{target}', so Loupe cannot tell which part of the "
                        "name to change. Adjust the pattern first.")
    start, end = match.span(group)
    if "/" in target[start:end]:
        raise UserError(f"In '{rel}' the label '{target[start:end]}' spans several folders; Loupe will not "
                        "restructure folders to relabel it. Use a pattern whose label is one folder or name part.")
    renamed = target[:start] + new_label + target[end:]
    if rule.on == "name":
        parent = str(PurePosixPath(rel).parent)
        return renamed if parent == "." else f"{parent}/{renamed}"
    return renamed


def _plan_move_relabel(root: Path, real_root: str, rule: LabelRule, rel: str, new_label: str,
                       taken: set[str], plan: _Plan) -> None:
    """Plan the move or rename that makes a folder or regex rule read new_label for this file."""
    labeller = labeller_for(rule)

    def gets_label(candidate: str) -> bool:
        return labeller.label_all([candidate])[0] == new_label

    path = PurePosixPath(rel)
    if rule.kind in ("folder", "grandparent", "top-folder"):
        depth = {"folder": 2, "grandparent": 3, "top-folder": 2}[rule.kind]
        if len(path.parts) < depth:
            raise UserError(f"'{rel}' is not inside a class folder, so it cannot be moved to another class. "
                            "Relabel it by moving it into a folder yourself.")
        if rule.kind == "folder":  # the class folder holding the file
            dst = str(path.parent.parent / new_label / path.name)
        elif rule.kind == "grandparent":  # the class folder two levels up: keep the subfolder
            dst = str(path.parents[2] / new_label / path.parent.name / path.name)
        else:  # the top-level class folder: keep everything below it
            dst = str(PurePosixPath(new_label, *path.parts[1:]))
    else:
        dst = _renamed_by_regex(rule, rel, new_label)
        if not gets_label(dst):
            got = labeller.label_all([dst])[0]
            raise UserError(f"Renaming '{rel}' to '{dst}' would not give the label '{new_label}' "
                            f"(the pattern reads {'no label' if got is None else repr(got)}). "
                            "Choose a label the pattern can match, or change the pattern.")
    _check_rel(dst)
    free = _free_name(root, dst, taken, gets_label)
    if free is None:
        raise UserError(f"Cannot relabel '{rel}': '{dst}' already exists and no free name "
                        f"(like '{PurePosixPath(dst).stem}-1{PurePosixPath(dst).suffix}') still gets the label "
                        f"'{new_label}' from the pattern. Rename or remove '{dst}' first.")
    parent = str(PurePosixPath(free).parent)
    if parent != ".":
        new = _missing_dirs(root, real_root, parent, plan.new_dirs)
        plan.new_dirs.extend(new)
    taken.add(free)
    plan.moves.append((rel, free))


def _split_csv_rows(text: str) -> list[tuple[list[str], str]]:
    """Each CSV record with its raw text, so unchanged records can be written back byte for byte."""
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
    reader = csv.reader(lines)
    out, consumed = [], 0
    try:
        for row in reader:
            out.append((row, "".join(lines[consumed:reader.line_num])))
            consumed = reader.line_num
    except csv.Error as e:
        raise UserError(f"Could not read the labels CSV: {e}.") from None
    return out


def _csv_key(name: str) -> str:
    return name.strip().replace("\\", "/").removeprefix("./")  # as CSVLabeller reads the file column


def _plan_csv_relabel(rule: LabelRule, relabels: list[tuple[str, str]], plan: _Plan) -> None:
    """Plan the rewritten CSV: the label cell of every row naming a relabelled file, all else byte-identical."""
    csv_path = Path(rule.csv_path).expanduser()
    raw = csv_path.read_bytes()
    bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""
    try:
        text = raw[len(bom):].decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{csv_path.name} is not UTF-8 text, so Loupe cannot rewrite it safely. "
                        "Save it as UTF-8 CSV and try again.") from None
    records = _split_csv_rows(text)
    header_at = next((i for i, (row, _) in enumerate(records) if row), None)
    if header_at is None:
        raise UserError(f"{csv_path.name} is empty.")
    header = records[header_at][0]
    if rule.file_col not in header or rule.label_col not in header:
        raise UserError(f"{csv_path.name} has no column '{rule.file_col}' or '{rule.label_col}'.")
    file_i, label_i = header.index(rule.file_col), header.index(rule.label_col)
    body = range(header_at + 1, len(records))

    def cell(row: list[str], i: int) -> str:
        return row[i] if i < len(row) else ""

    has_paths = any("/" in _csv_key(cell(records[i][0], file_i)) for i in body if cell(records[i][0], label_i).strip())
    rows_of: dict[str, list[int]] = {}
    for i in body:
        if records[i][0]:
            rows_of.setdefault(_csv_key(cell(records[i][0], file_i)), []).append(i)

    changed: set[int] = set()
    for rel, new_label in relabels:
        key = rel if has_paths else PurePosixPath(rel).name
        if key not in rows_of:
            raise UserError(f"No row of {csv_path.name} names '{key}' in its '{rule.file_col}' column, "
                            "so Loupe cannot relabel it there.")
        for i in rows_of[key]:
            row = records[i][0]
            row.extend([""] * (label_i + 1 - len(row)))
            row[label_i] = new_label
            changed.add(i)

    pieces = []
    for i, (row, raw_text) in enumerate(records):
        if i in changed:
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow(row)
            ending = raw_text[len(raw_text.rstrip("\r\n")):]
            pieces.append(out.getvalue() + ending)
        else:
            pieces.append(raw_text)
    new_bytes = bom + "".join(pieces).encode("utf-8")

    # read it back exactly as the label rule will, before anything on disk changes
    with tempfile.TemporaryDirectory(prefix="loupe-clean-") as tmp:
        check = Path(tmp) / csv_path.name
        check.write_bytes(new_bytes)
        got = CSVLabeller(str(check), rule.file_col, rule.label_col).label_all([rel for rel, _ in relabels])
    for (rel, new_label), label in zip(relabels, got):
        if label != new_label:
            raise UserError(f"After rewriting {csv_path.name}, '{rel}' would be labelled "
                            f"{'nothing' if label is None else repr(label)} instead of '{new_label}' "
                            "(another row may name the same file). Fix the CSV by hand.")
    plan.csv_path, plan.csv_bytes, plan.csv_rows = csv_path.resolve(), new_bytes, len(changed)


def _summary(n_deleted: int, relabels: list[tuple[str | None, str]], n_links: int = 0) -> str:
    """'Moved 1 image to the trash, relabelled 2 (seven → one)'."""
    parts = []
    if n_deleted:
        links = f" (and {n_links} link{'s' if n_links != 1 else ''} to {'it' if n_deleted == 1 else 'them'})" if n_links else ""
        parts.append(f"moved {n_deleted} image{'s' if n_deleted != 1 else ''}{links} to the trash")
    if relabels:
        pairs = Counter((old or "no label", new) for old, new in relabels)
        said = ", ".join(f"{old} → {new}" + (f" ×{n}" if n > 1 and len(pairs) > 1 else "") for (old, new), n in pairs.items())
        parts.append(f"relabelled {len(relabels)} ({said})")
    text = ", ".join(parts)
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- doing and undoing steps

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rename_no_replace(source: Path, target: Path) -> None:
    """Rename a file; FileExistsError instead of replacing anything already at target."""
    if not os.path.islink(source):
        try:
            os.link(source, target)  # atomic, and fails when target exists
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links on this file system (FAT, some network shares): fall back to a checked rename
        else:
            try:
                os.unlink(source)
            except OSError:
                os.unlink(target)
                raise
            return
    if os.path.lexists(target):  # between this check and the rename, the data set's lock keeps other Loupes out
        raise FileExistsError(errno.EEXIST, "a file is already there", str(target))
    os.rename(source, target)


def _move(root: Path, src: str, dst: str) -> None:
    (root / dst).parent.mkdir(parents=True, exist_ok=True)
    _rename_no_replace(root / src, root / dst)  # a rename: the bytes never change


def _undo_steps(root: Path, steps: list[dict]) -> list[str]:
    """Reverse steps, newest first, carrying on past a step that fails; the files left where they are."""
    stuck = []
    for step in reversed(steps):
        try:
            _undo_step(root, step)
        except OSError:
            stuck.append(step.get("dst") or step.get("csv") or step.get("dir"))
    return stuck


def _undo_step(root: Path, step: dict) -> None:
    """Reverse one step (the caller has checked it can be reversed)."""
    if step["op"] == "move":
        _move(root, step["dst"], step["src"])
    elif step["op"] == "mkdir":
        try:
            (root / step["dir"]).rmdir()
        except OSError:
            pass  # not empty (something else was put there since) or already gone: leave it
    elif step["op"] == "csv":
        write_bytes(Path(step["csv"]), (root / step["backup"]).read_bytes())


def _redo_step(root: Path, step: dict) -> None:
    """Do one step again after a failed undo (a CSV step is always undone last, so never redone)."""
    if step["op"] == "move":
        _move(root, step["src"], step["dst"])
    elif step["op"] == "mkdir":
        (root / step["dir"]).mkdir(exist_ok=True)


def _check_undoable(root: Path, batch: ChangeBatch) -> None:
    """Raise a UserError if any step of the batch cannot be reversed as things are now."""
    for step in batch.steps:
        if step["op"] == "move":
            if not os.path.lexists(root / step["dst"]):
                raise UserError(f"Cannot undo '{batch.summary}': '{step['dst']}' is no longer there "
                                "(was it moved or deleted since?). Nothing was changed.")
            if os.path.lexists(root / step["src"]):
                raise UserError(f"Cannot undo '{batch.summary}': a file is now at '{step['src']}', where the image "
                                "would go back. Move that file away and try again. Nothing was changed.")
        elif step["op"] == "csv":
            csv_path, backup = Path(step["csv"]), root / step["backup"]
            if not backup.is_file():
                raise UserError(f"Cannot undo '{batch.summary}': the backup of {csv_path.name} is missing from "
                                f"{TRASH_DIR}. Nothing was changed.")
            if csv_path.is_file() and _sha256(csv_path) != step["sha256"]:
                raise UserError(f"Cannot undo '{batch.summary}': {csv_path.name} was edited after this change, "
                                f"and undoing would lose those edits. Its earlier version is kept at {backup}. "
                                "Nothing was changed.")


def _plan_batch(root: Path, real_root: str, rule: LabelRule, todo: list[Change],
                batch_id: int) -> tuple[_Plan, list[str], list[tuple[str, str]], list[str | None]]:
    """Check every change and work out the whole batch, before anything on disk moves."""
    seen: dict[str, Change] = {}
    for c in todo:
        _check_item(root, real_root, c.rel_path)
        if c.rel_path in seen and seen[c.rel_path] != c:
            raise UserError(f"'{c.rel_path}' has two different changes; choose one.")
        seen[c.rel_path] = c
    todo = list(seen.values())
    deletes = [c.rel_path for c in todo if c.action == DELETE]
    relabels = [(c.rel_path, _check_label(c.new_label, c.rel_path)) for c in todo if c.action == RELABEL]
    old_labels = labeller_for(rule).label_all([rel for rel, _ in relabels]) if relabels else []
    for (rel, new_label), old in zip(relabels, old_labels):
        if old == new_label:
            raise UserError(f"'{rel}' is already labelled '{new_label}'.")

    plan = _Plan(batch_dir=f"{TRASH_DIR}/{batch_id}", moves=[], new_dirs=[])
    if relabels and rule.kind == "csv":
        _plan_csv_relabel(rule, relabels, plan)
    elif relabels:
        taken: set[str] = set()
        for rel, new_label in relabels:
            _plan_move_relabel(root, real_root, rule, rel, new_label, taken, plan)
        _check_moved_links(root, plan)
    # a link to a deleted file would lead nowhere: it goes to the trash with the file (and comes back with an undo)
    linked = links_to(root, deletes) if deletes else {}
    moving = {src for src, _ in plan.moves} | set(deletes)
    plan.links = sorted({link for links in linked.values() for link in links if link not in moving})
    for rel in [*deletes, *plan.links]:
        plan.moves.append((rel, f"{plan.batch_dir}/{rel}"))
    return plan, deletes, relabels, old_labels


def _check_moved_links(root: Path, plan: _Plan) -> None:
    """Refuse a relabel that would leave a link leading nowhere: one to a moved file, or a moved link itself."""
    moved = [src for src, _ in plan.moves]
    for rel, links in links_to(root, moved).items():
        others = [link for link in links if link not in moved]
        if others:
            raise UserError(f"'{rel}' cannot be moved to relabel it: {len(others)} other file(s) in the data set are "
                            f"links to it ({_said(others)}) and would lead nowhere. Relabel those links as well, "
                            "or delete them first. Nothing was changed.")
    for src, dst in plan.moves:
        path = root / src
        if os.path.islink(path) and not os.path.isabs(os.readlink(path)):
            there = os.path.normpath(os.path.join(os.path.dirname(root / dst), os.readlink(path)))
            if os.path.realpath(there) != os.path.realpath(path):
                raise UserError(f"'{src}' is a link to '{os.readlink(path)}'; moved to '{dst}' to relabel it, it would "
                                "lead nowhere. Relabel the file it links to instead. Nothing was changed.")


# ---------------------------------------------------------------- the public functions

def apply_changes(root: str | Path, rule: LabelRule, changes: list[Change]) -> ChangeBatch | None:
    """Delete (to the trash) and relabel images as one undoable batch; None when every change is KEEP."""
    root = Path(root).expanduser().resolve()
    real_root = os.path.realpath(root)
    todo = [c for c in changes if c.action != KEEP]
    for c in todo:
        if c.action not in ACTIONS:
            raise ValueError(f"unknown cleaner action {c.action!r}; use one of {', '.join(ACTIONS)}")
    if not todo:
        return None
    if rule.kind not in ("regex", "folder", "grandparent", "top-folder", "csv"):
        labeller_for(rule)  # raises the UserError naming the known kinds

    # check and plan once before taking the lock, so a refused batch writes nothing (not even the lock file),
    # then again under the lock, where no other Loupe process can change the folder between check and move
    _plan_batch(root, real_root, rule, todo, batch_id=0)
    with _locked(root):
        batch_id = _next_id(root, _read_log(root))
        plan, deletes, relabels, old_labels = _plan_batch(root, real_root, rule, todo, batch_id)

        # do it, undoing what was done if a step fails (a full disk, a file locked by another program)
        done: list[dict] = []
        try:
            (root / plan.batch_dir).mkdir(parents=True)  # a new folder: its id was taken under the lock
            if plan.csv_path is not None:
                backup = f"{plan.batch_dir}/{CSV_BACKUP_DIR}/{plan.csv_path.name}"
                (root / backup).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(plan.csv_path, root / backup)
                write_bytes(plan.csv_path, plan.csv_bytes)
                done.append({"op": "csv", "csv": str(plan.csv_path), "backup": backup, "rows": plan.csv_rows,
                             "sha256": hashlib.sha256(plan.csv_bytes).hexdigest()})
            for d in plan.new_dirs:
                (root / d).mkdir()
                done.append({"op": "mkdir", "dir": d})
            for src, dst in plan.moves:
                _move(root, src, dst)
                done.append({"op": "move", "src": src, "dst": dst})
            batch = ChangeBatch(id=batch_id, time=time.time(), steps=done,
                                summary=_summary(len(deletes), list(zip(old_labels, [n for _, n in relabels])), len(plan.links)))
            _append_log(root, {"event": "apply", "id": batch.id, "time": batch.time, "steps": batch.steps,
                               "summary": batch.summary})
        except OSError as e:
            stuck = _undo_steps(root, done)
            if stuck:
                raise UserError(f"Could not apply the changes ({e.strerror or e}), and {len(stuck)} of them could not "
                                f"be put back: {', '.join(stuck[:5])} (nothing was deleted).") from None
            raise UserError(f"Could not apply the changes ({e.strerror or e}); everything was put back as it was.") from None
        return batch


def undo_last(root: str | Path) -> ChangeBatch | None:
    """Undo the most recent batch not yet undone and return it (now flagged undone); None if there is none."""
    root = Path(root).expanduser().resolve()
    if not trash_dir(root).is_dir():
        return None  # nothing was ever applied here
    with _locked(root):
        pending = [b for b in _batches(_read_log(root)) if not b.undone]
        if not pending:
            return None
        batch = pending[-1]
        _check_undoable(root, batch)
        undone: list[dict] = []
        try:
            for step in reversed(batch.steps):
                _undo_step(root, step)
                undone.append(step)
            _append_log(root, {"event": "undo", "id": batch.id, "time": time.time()})
        except OSError as e:
            stuck = []
            for step in reversed(undone):
                try:
                    _redo_step(root, step)
                except OSError:
                    stuck.append(step.get("src") or step.get("dir"))
            if stuck:
                raise UserError(f"Could not undo '{batch.summary}' ({e.strerror or e}); part of it was undone and "
                                f"stays so: {', '.join(stuck[:5])} (nothing was deleted).") from None
            raise UserError(f"Could not undo '{batch.summary}' ({e.strerror or e}); nothing was changed.") from None
        batch.undone = True
        return batch


def reset_builtin(key: str, root: Path | None = None) -> Path:
    """Move a built-in data set into Loupe's trash folder (never deleted) and write it afresh."""
    if key not in BUILTINS:
        raise KeyError(f"unknown built-in data set {key!r}; known: {', '.join(BUILTINS)}")
    with _reset_lock:
        dest = builtin_path(key, root)
        if os.path.lexists(dest):
            with _locked(dest):  # waits for a batch another process is applying to it
                move_to_loupe_trash(dest, key)
        return ensure_builtin(key, root)
