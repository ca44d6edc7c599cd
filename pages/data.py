"""Data: choose images, a label rule and a split; check the data's health; look at augmented batches."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.data.loaders import PresizeCache, health_report, label_items, memory_budget_bytes, presize_bytes, usable_counts
from engine.errors import UserError
from engine.data.labels import LabelRule, read_label_csv
from engine.data.resolve import resolve
from engine.spec import NAME_PATTERN, PRESIZE_METHODS, setting_name
from engine.train.run import data_loaders
from ui.aug_controls import aug_controls
from ui.background_view import health_progress, page_wait_s, read_progress
from ui.cache_view import cache_panel
from ui.charts import class_counts_figure, size_spread_figure
from ui.charts_show import show_chart
from ui.frame import require_app_frame
from ui.demo_script import demo_script
from ui.explain import explain
from ui.gallery import image_grid
from ui.health_view import health_panel
from ui.label_levels import label_level_chooser
from ui.present import technical
from ui.source_picker import pick_source
from ui.text import md, md_list
from ui.data_status import remember_data
from ui.draft import bind, draft, update_draft, view_spec, window_id
from ui.shared import data_prep
from ui.state import SCAN_STOPPED, VIEW_COLS, VIEW_MODE, VIEW_ROWS, VIEW_SEED
from ui.stop import stop_page

require_app_frame("pages/data.py")

LABEL_KINDS = {"name": "Regex on the file name", "path": "Regex on the relative path", "folder": "Parent folder",
               "grandparent": "Grandparent folder", "top-folder": "Top-level folder", "csv": "CSV column"}
SPLIT_KINDS = {"random": "Random", "folder": "By folder", "csv": "CSV column"}
VIEWS = {"train": "Training batch", "unique": "One image, many augmentations", "valid": "Validation batch"}


def csv_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def relative(path: str, root: Path) -> str | None:
    """`path` relative to `root` (posix), or None when it is elsewhere."""
    return Path(path).relative_to(root).as_posix() if path and Path(path).is_relative_to(root) else None


def label_kind(rule: LabelRule) -> str:
    return rule.on if rule.kind == "regex" else rule.kind


def label_rule_for(kind: str, root: Path) -> LabelRule:
    """The rule a new choice of label kind starts from (the pattern typed so far is kept)."""
    current = view_spec().data.label
    if kind in ("name", "path"):
        pattern = current.pattern if current is not None and current.kind == "regex" else NAME_PATTERN
        return LabelRule(kind="regex", pattern=pattern, on=kind)
    if kind == "csv":
        csvs = csv_files(root)
        return LabelRule(kind="csv", csv_path=str(root / csvs[0]) if csvs else "")
    return LabelRule(kind=kind)  # folder, grandparent or top-folder


def pick_csv(root: Path, rule: str, second: str, second_label: str) -> bool:
    """A CSV of the data folder and two of its columns, bound to the draft's `rule` (data.label or data.split)."""
    csvs = csv_files(root)
    if not csvs:
        st.error("There is no CSV file in this folder. Choose another option.")
        return False
    current = getattr(view_spec().data, rule.split(".")[1])
    if relative(current.csv_path, root) not in csvs:
        update_draft({f"{rule}.csv_path": str(root / csvs[0])})
    st.selectbox("CSV file", csvs, **bind(f"{rule}.csv_path", lambda p: Path(p).relative_to(root).as_posix(),
                                          lambda rel: str(root / rel)))
    current = getattr(view_spec().data, rule.split(".")[1])
    try:
        columns = list(read_label_csv(current.csv_path).columns)
    except UserError as e:
        st.error(md(e))
        return False
    fixes = {}  # columns another CSV had: start from this one's
    if current.file_col not in columns:
        fixes[f"{rule}.file_col"] = columns[0]
    if getattr(current, second) not in columns:
        fixes[f"{rule}.{second}"] = columns[min(1, len(columns) - 1)] if rule == "data.label" else columns[-1]
    if fixes:
        update_draft(fixes)
    c1, c2 = st.columns(2)
    c1.selectbox("Column with the file name or path", columns, **bind(f"{rule}.file_col"))
    c2.selectbox(second_label, columns, **bind(f"{rule}.{second}"))
    return True


KEEP = dict(persist_state="session")  # view choices that are not run settings: kept across pages
VIEW_MODE.setdefault("train")
VIEW_ROWS.setdefault(3)
VIEW_COLS.setdefault(3)
st.title("Data")
st.caption("Choose images, tell Loupe how to read their labels, and look at what the model will see.")
demo_script()
explain("data")

# ---- where the images are
st.header("1 · Images", divider="orange")
source = pick_source()
if source is None:
    stop_page()
if SCAN_STOPPED.get() == source.source:
    st.warning(f"You stopped reading {md(source.root)}. Choose another folder, or read it again.")
    st.button("Read it again", key="data.rescan", on_click=SCAN_STOPPED.clear)
    stop_page()


def stop_reading(source: str, job) -> None:
    SCAN_STOPPED.set(source)
    job.stop()


# the folder is scanned and its images decoded in the background; the page waits for the scan only a moment
spec = view_spec()
read = data_prep().read(source.root, spec.data.presize, spec.data.presize_method, owner=window_id())
if not read.wait_scanned(page_wait_s()):
    read_progress(read, on_stop=stop_reading, args=(source.source, read.job))
    stop_page()
if read.scan is None:
    st.error(md(read.failed or f"Reading {source.root} was stopped; nothing was loaded."))
    stop_page()
scan = read.scan
if draft().data.label is None or draft().data.split is None:  # a new source: its rules, as guessed, into the draft
    guessed = resolve(draft(), scan).data
    update_draft({"data.label": draft().data.label or guessed.label, "data.split": draft().data.split or guessed.split})
st.caption(f"{len(scan.images):,} images in {md(scan.root)}"
           + (f" · {scan.skipped:,} other files ignored (e.g. {md_list(scan.skipped_examples[:3])})" if scan.skipped else ""))

# ---- labels
st.header("2 · Labels", divider="orange")
st.segmented_control("How is each image's class given?", list(LABEL_KINDS), format_func=LABEL_KINDS.get, required=True,
                     **bind("data.label", label_kind, lambda kind: label_rule_for(kind, scan.root)))
label_level_chooser(scan, view_spec().data.label)
rule_column, tester = st.columns([3, 2], gap="large")
kind = label_kind(view_spec().data.label)
if kind in ("name", "path"):
    rule_column.text_input("Pattern (regular expression; the part in ( ) is the label)",
                           help="e.g. ^(.+)_\\d+\\.jpg$ turns 'great_pyrenees_12.jpg' into 'great_pyrenees'. "
                                "A group named (?P<label>…) is used if present.", **bind("data.label.pattern"))
elif kind == "csv":
    with rule_column:
        if not pick_csv(scan.root, "data.label", "label_col", "Column with the label"):
            stop_page()

# ---- split
st.header("3 · Validation split", divider="orange")
st.segmented_control("Which images check the model (validation)?", list(SPLIT_KINDS), format_func=SPLIT_KINDS.get,
                     required=True, **bind("data.split.kind"))
split_kind = view_spec().data.split.kind
if split_kind == "random":
    c1, c2, c3 = st.columns(3)
    c1.slider(setting_name("data.split.valid_pct"), 0.05, 0.5, step=0.05, **bind("data.split.valid_pct"))
    c2.number_input("Seed", 0, 2**31 - 1, step=1, help="The same seed picks the same images.", **bind("data.split.seed"))
    c3.checkbox("Stratified (same share per class)", **bind("data.split.stratify"))
elif split_kind == "folder":
    c1, c2 = st.columns(2)
    c1.text_input("Training folder name", **bind("data.split.train_name"))
    c2.text_input("Validation folder name", **bind("data.split.valid_name"))
elif not pick_csv(scan.root, "data.split", "valid_col", "Column that is true for validation images"):
    stop_page()

spec = view_spec()
try:
    items = label_items(scan, spec.data.label, spec.data.split)
except UserError as e:
    tester.error(md(e))
    st.error(md(e))
    stop_page()

# the live tester, beside the rule
report = items.label_report
with tester:
    m1, m2 = st.columns(2)
    m1.metric("Labelled images", f"{report.n_matched:,}", help=f"of {items.n_files:,} images found")
    m2.metric("Classes", len(report.class_counts))
    if report.n_unmatched:
        st.warning(f"{report.n_unmatched:,} file(s) got no label, e.g. " + md_list(report.unmatched_examples))
    else:
        st.success("Every image has a label.")
    for warning in report.warnings:  # e.g. a CSV naming one file twice
        st.warning(md(warning))
split_counts = st.empty()  # filled once the images are decoded: the counts of images that can be used
show_chart(class_counts_figure(items.counts()), key="data.class_chart")
for warning in items.warnings():
    if "no label" not in warning:  # said beside the rule
        st.warning(md(warning))

# ---- presizing
st.header("4 · Image size", divider="orange")
c1, c2, c3, c4 = st.columns(4)
c1.number_input(setting_name("data.size"), 16, 1024, step=8, **bind("data.size"))
c2.number_input(setting_name("data.presize"), 16, 2048, step=8, **bind("data.presize"),
                help="Each image is decoded once to this size and cached on disk; augmentation then crops and resizes "
                     "whole batches to the model size. It follows the size by fastai's ratio (460 px for 224) until "
                     "you change it.")
c3.selectbox(setting_name("data.presize_method"), list(PRESIZE_METHODS), help="crop: centre square. squish: whole image, stretched.",
             **bind("data.presize_method"))
c4.number_input(setting_name("data.bs"), 1, 1024, step=8, **bind("data.bs"))
spec = view_spec()
needed = presize_bytes(len(scan.images), spec.data.presize)
st.caption(f"Presized images take {needed / 1024**2:,.0f} MB, cached on disk and reused after a restart; "
           + ("training holds them in memory." if needed <= memory_budget_bytes() else
              f"over the {memory_budget_bytes() / 1024**2:,.0f} MB memory budget, training reads them from the cache "
              "files a batch at a time."))
cache_panel()
if (spec.data.presize, spec.data.presize_method) != (read.presize, read.method):
    st.rerun()  # the presize changed during this run (the next one reads at the new size)
if not read.wait(page_wait_s()):  # decoding (the first time only): the counts and the rest follow when it ends
    with split_counts.container():
        read_progress(read)
    stop_page()
if read.images is None:
    st.error(md(read.failed or "Decoding the images was stopped."))
    stop_page()
images = read.images
counts = usable_counts(items, images)
remember_data(spec, counts)  # the sidebar and the other pages show these same numbers
with split_counts.container():
    m3, m4 = st.columns(2)
    m3.metric("Training images", f"{counts.n_train:,}", help="Labelled training images that can be read")
    m4.metric("Validation images", f"{counts.n_valid:,}", help="Labelled validation images that can be read")
    if counts.n_unreadable:
        st.caption(f"{counts.n_unreadable:,} labelled image(s) cannot be read and are left out (see Data health).")

# ---- health
st.header("5 · Data health", divider="orange")
health = health_report(items, images)
if scan.unreadable:
    health.failures = pd.concat([health.failures, pd.DataFrame({
        "file": [f"{rel}/" for rel in scan.unreadable], "reason": "a folder Loupe has no permission to read"})],
        ignore_index=True)
tab_counts, tab_bad, tab_sizes = st.tabs(["Images per class", f"Unreadable files ({len(health.failures)})", "Sizes and colours"])
with tab_counts, technical("Images per class, as a table"):
    st.dataframe(health.counts, width="stretch")
with tab_bad:
    if len(health.failures):
        st.warning(f"{len(health.failures):,} file(s) or folder(s) could not be read. They are left out of training; "
                   "your files are not changed.")
        with technical("The files, as a table"):
            st.dataframe(health.failures, width="stretch", hide_index=True)
    else:
        st.success("Every image could be read.")
with tab_sizes:
    if len(health.sizes):
        st.caption(f"Width {health.sizes.width.min()}–{health.sizes.width.max()} px (median {health.sizes.width.median():.0f}), "
                   f"height {health.sizes.height.min()}–{health.sizes.height.max()} px (median {health.sizes.height.median():.0f}). "
                   "Every image becomes RGB. Original colour modes: "
                   + ", ".join(f"{mode} × {n:,}" for mode, n in sorted(health.modes.items())))
        show_chart(size_spread_figure(health.sizes), key="data.size_chart")
st.subheader("Copies, leaks and balance", anchor=False)
checking = data_prep().check(PresizeCache.key(items.scanned_paths, spec.data.presize, spec.data.presize_method),
                              json.dumps([spec.to_dict()["data"][k] for k in ("label", "split")]), items, images, scan, owner=window_id())
if checking.wait(page_wait_s()) and checking.check is not None:
    health_panel(checking.check, items, images)
elif checking.job.active:
    health_progress(checking)
else:
    st.error(md(checking.job.error or "The health check was stopped."))

# ---- show_batch


@st.fragment
def show_batch_section(items, images) -> None:
    """Augmentation sliders and the grid: changing them reruns only this part of the page."""
    with st.expander("Augmentation (fastai's aug_transforms)", expanded=False):
        aug_controls()
    spec = view_spec()
    view = st.segmented_control("Show", list(VIEWS), format_func=VIEWS.get, key=VIEW_MODE.key, required=True, **KEEP)
    c2, c3, c4 = st.columns([1, 1, 4], vertical_alignment="bottom")
    rows = c2.selectbox("Rows", [1, 2, 3, 4, 5, 6], key=VIEW_ROWS.key, **KEEP)
    cols = c3.selectbox("Columns", [2, 3, 4, 5, 6, 8], key=VIEW_COLS.key, **KEEP)
    if c4.button("New batch", key="view.shuffle", help="Other images (the augmentation settings stay)."):
        VIEW_SEED.set(VIEW_SEED.get() + 1)
    try:
        dls = data_loaders(spec, items, images, seed=VIEW_SEED.get())  # the batches a run of this spec would draw
    except UserError as e:
        st.error(md(e))
        return
    x, titles = dls.show_batch(max_n=rows * cols, split="valid" if view == "valid" else "train", unique=view == "unique")
    image_grid(x, titles, cols, key="show_batch")
    explain("show_batch")


st.header("6 · show_batch", divider="orange")
show_batch_section(items, images)
