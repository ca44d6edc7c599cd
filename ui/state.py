"""Every session-state entry, typed: pages never read or write `st.session_state` by a string of their own, they use
the entries declared here (`TRAIN_JOB.get()`, `key=INTERPRET_K.key`).

The rest of the app's state has a module per job: ui/shared.py (objects shared by every session), ui/draft.py (the
window's draft spec and the widgets bound to it), ui/data_status.py (the chosen data set's summary) and
ui/run_cache.py (a run's reviewed model).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

import streamlit as st

from engine.spec import RunSpec

T = TypeVar("T")


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
