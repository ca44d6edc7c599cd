"""The app's state: shared objects, the window's draft run spec, and every session-state entry, typed.

Pages never read or write `st.session_state` by a string of their own: they use the entries declared
here (`TRAIN_JOB.get()`, `key=INTERPRET_K.key`) and the draft spec (`draft()`, `update_draft(...)`).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import streamlit as st

from engine.data.builtin import ensure_builtin
from engine.data.loaders import DataCounts, PresizeCache, label_items, usable_counts
from engine.data.data_prep import DataPrep, clean_stamp
from engine.store.drafts import DraftStore, new_draft_id, valid_draft_id
from engine.errors import UserError, plain_reason
from engine.train.export import ExportedModel, load_run
from engine.store.jobs import JobManager
from engine.results.review import RunReview, data_fingerprint, loss_table, review_run
from engine.store.runs import RunStore
from engine.data.sources import clean_stale_extractions, is_downloaded
from engine.data.resolve import data_name, data_root, resolve
from engine.spec import RunSpec, get, override

T = TypeVar("T")
_LOG = logging.getLogger("loupe.widgets")


# ---------------------------------------------------------------- objects shared by every session

@st.cache_resource
def presize_cache() -> PresizeCache:
    """Presized pixels, shared by every page and session of this server."""
    return PresizeCache(max_entries=2)


@st.cache_resource
def data_prep() -> DataPrep:
    """Folder scans, decoding and health checks in the background, kept for every page and session of this server."""
    return DataPrep(presize_cache())


@st.cache_resource
def job_manager() -> JobManager:
    """The background jobs: they outlive reruns, page switches and browser reloads."""
    return JobManager()


@st.cache_resource
def run_store() -> RunStore:
    """The run history database (opening it marks runs of a dead server as interrupted)."""
    return RunStore()


@st.cache_resource
def draft_store() -> DraftStore:
    return DraftStore()


@st.cache_resource
def server_started() -> int:
    """Once per server start: remove the unpacking folders a crash left behind; returns how many."""
    return clean_stale_extractions()


# ---------------------------------------------------------------- typed session entries

class SessionKey(Generic[T]):
    """One session-state entry, declared once with its default; widgets bound to it take its `key`."""

    def __init__(self, key: str, default: T | None = None, factory: Callable[[], T] | None = None) -> None:
        self.key, self.default, self.factory = key, default, factory

    def get(self) -> T:
        if self.key not in st.session_state and self.factory is not None:
            st.session_state[self.key] = self.factory()
        return st.session_state.get(self.key, self.default)

    def set(self, value: T) -> None:
        st.session_state[self.key] = value

    def clear(self) -> None:
        st.session_state.pop(self.key, None)

    def pop(self) -> T | None:
        return st.session_state.pop(self.key, None)

    def is_set(self) -> bool:
        return self.key in st.session_state

    def setdefault(self, value: T) -> T:
        """The entry's value, set to `value` first if it has none (a widget's starting value)."""
        return st.session_state.setdefault(self.key, value)


def keep_widget_values(*prefixes: str) -> None:
    """Keep the values of the widgets whose keys start with `prefixes` through runs that do not draw them.

    Streamlit forgets a widget's value at the end of a run that did not draw it (e.g. the Compare page's
    settings while its experiment runs); a value written back through the Session State API is kept.
    """
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefixes)]:
        st.session_state[key] = st.session_state[key]


EXPLAIN = SessionKey[bool]("loupe.explain")  # the guided demo mode: plain-language notes on every page
DEMO_GOTO = SessionKey[str]("loupe.demo_goto")  # the page a demo-script button opens next
DRAFT_ID = SessionKey[str]("loupe.draft_id")
DRAFT = SessionKey[RunSpec]("loupe.draft")  # this window's draft, as saved under its id
PUSHED = SessionKey[dict]("loupe.pushed", factory=dict)  # widget key -> (value it showed before, value it shows)
MOVED_BY_USER = SessionKey[set]("loupe.moved_by_user", factory=set)  # bound widgets the user changed since they were drawn
SOURCE_KIND = SessionKey[str]("data.kind")  # the source picker's choice (a draft with no source yet has none)
FRAMED = SessionKey[bool]("loupe.framed", False)
INTENDED_PAGE = SessionKey[str]("loupe.intended_page")
DATA_SUMMARY = SessionKey[tuple]("loupe.data_summary")  # ((data spec JSON, clean stamp), DataSummary or the error message)
SCAN_STOPPED = SessionKey[str]("data.scan_stopped")  # the source whose folder scan the user stopped
FOLDER_TEXT = SessionKey[str]("data.folder_text", "")  # the last folder typed, kept while another source is shown
UPLOAD_TO_DELETE = SessionKey[str]("data.upload_to_delete")  # the upload awaiting the user's confirmation
UPLOAD_MESSAGE = SessionKey[str]("data.upload_message")
CACHE_LIMIT_GB = SessionKey[float]("data.cache_limit_gb")
CACHE_MESSAGE = SessionKey[str]("data.cache_message")
ZIP_VERDICTS = SessionKey[dict]("data.zip_verdicts", factory=dict)  # upload file_id -> message, checked once
VIEW_SEED = SessionKey[int]("view.seed", 0)
VIEW_MODE = SessionKey[str]("view.mode")
VIEW_ROWS = SessionKey[int]("view.rows")
VIEW_COLS = SessionKey[int]("view.cols")
TRAIN_JOB = SessionKey[str]("train.job_id", "")
TRAIN_ESTIMATE = SessionKey[tuple]("train.estimate")  # (spec JSON, seconds) of the last estimate shown
TRAIN_LINKED_RUN = SessionKey[int]("train.linked_run")
LR_SLICE_ON = SessionKey[bool]("train.lr_slice_on")  # the Train page's discriminative-LR toggle
LR_SOURCE = SessionKey[str]("train.lr_source")  # where the learning rate came from (the LR finder)
LR_FOUND_FOR = SessionKey[tuple]("train.lr_found_for")  # (LR finder key, LR) of the LR taken from the finder
LRF_JOB = SessionKey[str]("lrf.job_id", "")
LRF_CHOSEN = SessionKey[float]("lrf.chosen")
LRF_CHART = SessionKey[object]("lrf.chart")  # the LR finder chart's selection (a click on a point)
REVIEW_RUN = SessionKey[int]("review.run_id")
RUNS_CONFIRM = SessionKey[list]("runs.confirm")
RUNS_TABLE = SessionKey[tuple]("runs.table_state")  # (generation of the table's key, run ids as drawn, ids ticked)
INTERPRET_CAM = SessionKey[bool]("interpret.gradcam", False)
INTERPRET_K = SessionKey[int]("interpret.k", 9)
INTERPRET_NORMALISE = SessionKey[bool]("interpret.normalise", False)
INTERPRET_CLICKED = SessionKey[tuple]("interpret.clicked")
INTERPRET_ACTUAL = SessionKey[str]("interpret.actual")
INTERPRET_PREDICTED = SessionKey[str]("interpret.predicted")
INTERPRET_MIN_VAL = SessionKey[int]("interpret.min_val", 1)
INTERPRET_UNSURE_K = SessionKey[int]("interpret.unsure_k", 9)
CLEAN_MESSAGE = SessionKey[str]("clean.message")
CLEAN_PENDING = SessionKey[dict]("clean.pending")  # {"root": data set folder, "choices": {rel path: action}}
CLEAN_LABEL = SessionKey[str]("clean.label")
CLEAN_SPLIT = SessionKey[str]("clean.split")
CLEAN_PER_PAGE = SessionKey[int]("clean.per_page")
CLEAN_PAGE = SessionKey[int]("clean.page", 1)
CLEAN_CONFIRM_RESET = SessionKey[bool]("clean.confirm_reset", False)
CLEAN_CHOICE_PREFIX = "clean.choice."  # one entry per image shown: clean_choice(rel)
CLEAN_ISSUES_TICK_PREFIX = "clean.issues_tick."  # one entry per flagged image shown: issue_tick(rel)
PREDICT_SOURCE = SessionKey[str]("predict.source")
PREDICT_UPLOAD = SessionKey[list]("predict.upload")
PREDICT_VALID_ITEMS = SessionKey[list]("predict.valid_items")
PREDICT_CAMERA = SessionKey[object]("predict.camera")  # the Predict page's camera shot (an UploadedFile)
CAMERA_SET = SessionKey[str]("camera.set")  # the camera data set shown (its folder name)
CAMERA_CLASS = SessionKey[str]("camera.class")  # the class the next shots go into
CAMERA_NEW_NAME = SessionKey[str]("camera.new_name", "")
CAMERA_NEW_CLASSES = SessionKey[str]("camera.new_classes", "")  # one class per line
CAMERA_ADD_CLASS = SessionKey[str]("camera.add_class", "")
CAMERA_SHOTS_TAKEN = SessionKey[int]("camera.shots_taken", 0)  # in the camera widget's key: a fresh camera after each shot
CAMERA_MESSAGE = SessionKey[tuple]("camera.message")  # (kind, text) a callback leaves for the page: "error" or "success"
CAMERA_SHOT_PREFIX = "camera.shot."  # the camera widget of the n-th shot: camera_shot(n)
CLEAN_VIEW = SessionKey[str]("clean.view")  # which images the Clean page shows (ui.clean_view.VIEWS)
CLEAN_HEALTH = SessionKey[dict]("clean.health")  # the health check's list as handed over: {"root", "choices"}
CLEAN_HEALTH_PAGE = SessionKey[int]("clean.health_page", 1)
CLEAN_ISSUES_K = SessionKey[int]("clean.issues_k")  # folds of the likely-wrong-labels search
CLEAN_ISSUES_EPOCHS = SessionKey[int]("clean.issues_epochs")  # epochs of each fold's model
CLEAN_ISSUES_JOB = SessionKey[str]("clean.issues_job_id", "")
CLEAN_ISSUES = SessionKey[dict]("clean.issues")  # {"job_id", "root", "fingerprint", "table", "n_images", "ticked",
# "accepted"}: the last search, the images ticked in its review list (none at first), how many were accepted
CLEAN_ISSUES_PAGE = SessionKey[int]("clean.issues_page", 1)


def issue_tick(rel: str) -> SessionKey[bool]:
    """The tick of one image in the likely-wrong-labels review list (every tick starts empty)."""
    return SessionKey[bool](CLEAN_ISSUES_TICK_PREFIX + rel, False)


def clean_choice(rel: str) -> SessionKey[str]:
    """The Clean page's pending action for one image (keep, delete or a class to relabel it to)."""
    return SessionKey[str](CLEAN_CHOICE_PREFIX + rel)


def camera_shot(n: int) -> SessionKey:
    """The Camera page's camera widget for the n-th shot of this window (a new key gives a camera ready to shoot)."""
    return SessionKey(f"{CAMERA_SHOT_PREFIX}{n}")


# ---------------------------------------------------------------- the window's draft spec

def window_id() -> str:
    """This window's id: its draft's id, kept in the page address (`?draft=`) so reloads and restarts keep it.

    A window opened without one starts a new draft from the latest saved one.
    """
    draft_id = DRAFT_ID.get()
    if draft_id is None:
        asked = st.query_params.get("draft")
        store = draft_store()
        if valid_draft_id(asked):
            draft_id = asked
            if store.load(draft_id) is None:
                store.save(draft_id, store.latest() or RunSpec())
        else:
            draft_id = new_draft_id()
            store.save(draft_id, store.latest() or RunSpec())
        DRAFT_ID.set(draft_id)
    if st.query_params.get("draft") != draft_id:
        st.query_params["draft"] = draft_id
    return draft_id


def draft() -> RunSpec:
    """The settings this window is working on (automatic ones still None)."""
    spec = DRAFT.get()
    if spec is None:
        spec = draft_store().load(window_id()) or RunSpec()
        DRAFT.set(spec)
    return spec


def set_draft(spec: RunSpec) -> None:
    """Replace the draft (saved at once under LOUPE_HOME/drafts, so a reload or a restart comes back to it)."""
    DRAFT.set(spec)
    draft_store().save(window_id(), spec)


def update_draft(changes: dict[str, Any]) -> RunSpec:
    """Change settings of the draft by dotted name; a part still automatic (None) is filled in first."""
    spec = draft()
    for name in changes:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if get(spec, parent) is None:
                spec = override(spec, {parent: get(view_spec(spec), parent)})
    spec = override(spec, changes)
    set_draft(spec)
    return spec


def source_ready(spec: RunSpec) -> bool:
    """Whether the draft's images can be read now (a folder exists, a fastai set is downloaded)."""
    data = spec.data
    if not data.source:
        return False
    if data.kind == "builtin":
        return True
    if data.kind == "fastai":
        return is_downloaded(data.key.upper())
    return data_root(data).is_dir()


def view_spec(spec: RunSpec | None = None) -> RunSpec:
    """The draft with its automatic settings filled in, as the widgets show them."""
    spec = spec or draft()
    if not source_ready(spec):
        return spec
    try:
        return _resolved(spec.to_json())
    except (UserError, OSError):  # e.g. a folder with no images: the Data page says what is wrong
        return spec


@st.cache_data(max_entries=16, show_spinner=False)
def _resolved(spec_json: str) -> RunSpec:
    # never scans a folder (the sidebar asks on every page): the Data page writes a new folder's rules into the draft
    return resolve(RunSpec.from_json(spec_json), guess_rules=False)


def widget_key(name: str, part: str = "") -> str:
    """The session key of the widget bound to a draft setting (`part` tells apart widgets showing parts of one)."""
    return f"spec.{name}" + (f".{part}" if part else "")


def bind(name: str, to_widget: Callable[[Any], Any] = lambda v: v,
         from_widget: Callable[[Any], Any] = lambda v: v, part: str = "") -> dict:
    """Keyword arguments that bind a widget to a draft setting: its value comes from the draft, changes go back to it."""
    key = widget_key(name, part)
    take_missed_change(key, lambda: to_widget(get(view_spec(), name)), lambda v: update_draft({name: from_widget(v)}))
    value = to_widget(get(view_spec(), name))
    pushed = PUSHED.get()
    before = pushed.get(key)
    if key in MOVED_BY_USER.get():
        # the user moved it: going back to its earlier value later is a choice, never a stale echo
        MOVED_BY_USER.get().discard(key)
        pushed[key] = (None, value)
    elif before is None or before[1] != value:  # the page moves the widget (e.g. an automatic LR follows the schedule)
        pushed[key] = (None if before is None else before[1], value)
    st.session_state[key] = value
    return {"key": key, "on_change": _widget_changed, "args": (name, key, from_widget)}


def take_missed_change(key: str, draft_value: Callable[[], Any], apply: Callable[[Any], None]) -> bool:
    """Take a value the browser sent for a widget whose change callback never ran; True if there was one.

    Streamlit can deliver a widget's new value without calling its `on_change` (e.g. a change that arrives while a
    run is being replaced); the page would then draw the draft's old value over it and the click or the typed value
    would be lost. Called before the widget is drawn: a value that is neither what the page last showed, nor the
    draft's, nor the value the page replaced (a stale echo) is the user's, and goes to the draft now.
    """
    shown = PUSHED.get().get(key)
    if shown is None or key not in st.session_state:
        return False  # drawn for the first time (or not kept since): nothing can have been missed
    value, (previous, current) = st.session_state[key], shown
    if _same(value, current) or _same(value, draft_value()):
        return False  # as shown, or the callback has taken it
    if previous is not None and _same(value, previous):
        return False  # the browser's echo of the value the page replaced
    _LOG.warning("taking a change to %s that arrived without its callback", key)
    apply(value)
    MOVED_BY_USER.get().add(key)
    return True


def shown(key: str, value: Any) -> None:
    """Record that the page shows `value` in the widget `key` (for widgets bound by hand, not by `bind`)."""
    before = PUSHED.get().get(key)
    if before is None or not _same(before[1], value):
        PUSHED.get()[key] = (None if before is None else before[1], value)


def _same(a: Any, b: Any) -> bool:
    """Widget values compared as the browser sends them back (a range slider's tuple returns as a list)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def _widget_changed(name: str, key: str, from_widget: Callable[[Any], Any]) -> None:
    value = st.session_state[key]
    pushed = PUSHED.get()
    previous, current = pushed.get(key, (None, None))
    others_changed = any(other != key and other in st.session_state and not _same(st.session_state[other], shown)
                         for other, (_, shown) in pushed.items())
    if previous is not None and _same(value, previous) and not _same(value, current) and others_changed:
        # the browser sent back the value the page had just replaced, together with the change the user made
        # elsewhere (they clicked on before the new value arrived): a stale echo, not a choice
        pushed[key] = (None, current)
        st.session_state[key] = current
        return
    update_draft({name: from_widget(value)})
    MOVED_BY_USER.get().add(key)  # bind() records the new value as the user's, not as the page's move


# ---------------------------------------------------------------- the chosen data set

@dataclass(frozen=True)
class DataSummary:
    """What the sidebar and later pages show of the chosen data set: the usable images (engine.data.loaders.usable_counts)."""

    name: str
    root: str
    classes: tuple[str, ...]
    n_train: int
    n_valid: int
    n_unreadable: int = 0


PENDING = "pending"  # the data set is still being read in the background


def _summary_key(spec: RunSpec) -> tuple[str, str]:
    """What the counts depend on: the data settings and the cleaner's last change to the folder."""
    return json.dumps(spec.to_dict()["data"]), clean_stamp(data_root(spec.data))


def remember_data(spec: RunSpec, counts: DataCounts) -> None:
    """The Data page tells the others the counts it shows (usable images per split, after unreadable files)."""
    DATA_SUMMARY.set((_summary_key(spec), _summary(spec, counts)))


def _summary(spec: RunSpec, counts: DataCounts) -> DataSummary:
    return DataSummary(name=data_name(spec.data), root=str(data_root(spec.data)), classes=counts.classes, n_train=counts.n_train,
                       n_valid=counts.n_valid, n_unreadable=counts.n_unreadable)


def data_status(wait: float | None = None) -> DataSummary | str | None:
    """The draft's data set: its summary, the message of what is wrong with it, PENDING while it is read in the
    background for longer than `wait` seconds (None: wait for it), or None while none is chosen."""
    spec = view_spec()
    if not source_ready(spec) or spec.data.label is None:
        return None
    key = _summary_key(spec)
    known = DATA_SUMMARY.get()
    if known and known[0] == key:
        return known[1]
    try:
        if spec.data.kind == "builtin":
            ensure_builtin(spec.data.key)  # written on first use, as the Data page would
        read = data_prep().read(data_root(spec.data), spec.data.presize, spec.data.presize_method, owner=window_id())
        if not read.wait(wait):
            return PENDING
        if read.failed or read.images is None:
            raise UserError(read.failed or f"Reading {data_root(spec.data)} was stopped; open the Data page to read it again.")
        items = label_items(read.scan, spec.data.label, spec.data.split)
    except (UserError, OSError, ValueError) as e:
        status: DataSummary | str = plain_reason(e)
    else:
        status = _summary(spec, usable_counts(items, read.images))
    DATA_SUMMARY.set((key, status))
    return status


def data_summary() -> DataSummary | None:
    """The summary of the draft's data set: the Data page's, or computed now (after a reload or a restart)."""
    status = data_status()
    return status if isinstance(status, DataSummary) else None


def data_problem() -> str | None:
    """What is wrong with the draft's data settings (a bad label rule, a missing folder…), if anything."""
    status = data_status()
    return status if isinstance(status, str) and status != PENDING else None


def run_spec() -> RunSpec | None:
    """The draft, resolved, if its data set can be used (else None: the pages send the user to the Data page)."""
    spec = view_spec()
    if data_summary() is None:
        return None
    return spec


# ---------------------------------------------------------------- a run's model, reviewed

@st.cache_resource(max_entries=4, show_spinner="Predicting the validation images…")
def _review(run_id: int, weights_mtime: float, fingerprint: str) -> RunReview:
    run = run_store().run(run_id)
    if run is None:
        raise UserError(f"Run #{run_id} no longer exists.")
    return review_run(run, presize_cache())


def _weights_mtime(run: dict) -> float:
    weights = Path(run.get("weights_path") or "") / "model.pt"
    return weights.stat().st_mtime if weights.is_file() else 0.0


def _review_key(run: dict) -> tuple[int, float, str]:
    """What a review depends on: the run, its model file and its data (files, sizes, times)."""
    return int(run["id"]), _weights_mtime(run), data_fingerprint(resolve(run["spec"]).data)


def run_review(run: dict) -> RunReview:
    """A run's model on its data as it is now; recomputed only when the model file or the data change."""
    return _review(*_review_key(run))


@st.cache_resource(max_entries=16, show_spinner="Scoring the images…")
def _loss_table(run_id: int, weights_mtime: float, fingerprint: str, split: str, label: str):
    return loss_table(_review(run_id, weights_mtime, fingerprint), split=split, label=label)


def run_loss_table(run: dict, split: str, label: str):
    """Images of one split and label with the run's prediction and loss, largest loss first (cached like run_review)."""
    return _loss_table(*_review_key(run), split, label)


@st.cache_resource(max_entries=4)
def _model(weights_path: str, weights_mtime: float) -> ExportedModel:
    return load_run(weights_path)


def run_model(run: dict) -> ExportedModel:
    """A run's exported model, loaded once per model file."""
    if not run.get("weights_path"):
        raise UserError(f"Run #{run['id']} has no saved model (it ended before its first epoch finished).")
    return _model(run["weights_path"], _weights_mtime(run))
