"""Data: choose images, a label rule and a split; check the data's health; look at augmented batches."""
from __future__ import annotations

import dataclasses

import streamlit as st

from engine.builtin import BUILTINS
from engine.data import DataConfig, DataLoaders, health_report, label_items, presize_bytes, suggest_rules
from engine.device import default_device
from engine.errors import UserError
from engine.labels import LabelRule, read_label_csv
from engine.sources import scan_folder
from engine.split import SplitRule
from engine.augment import AugSettings
from ui.aug_controls import aug_controls, set_aug_widgets
from ui.charts import class_counts_figure, size_spread_figure
from ui.frame import require_app_frame
from ui.gallery import image_grid
from ui.source_picker import pick_source
from ui.state import DataSummary, presize_cache, set_current_data

require_app_frame("pages/data.py")

KEEP = dict(persist_state="session")
LABEL_KINDS = {"name": "Regex on the file name", "path": "Regex on the relative path", "folder": "Parent folder", "csv": "CSV column"}
SPLIT_KINDS = {"random": "Random", "folder": "By folder", "csv": "CSV column"}
VIEWS = {"train": "Training batch", "unique": "One image, many augmentations", "valid": "Validation batch"}


def reset_rules(source_id: str, label: LabelRule, split: SplitRule, aug: AugSettings, small: bool) -> None:
    """Give the rule and augmentation widgets the new source's suggested values (only when the source changes)."""
    if st.session_state.get("data.source_id") == source_id:
        return
    st.session_state["data.source_id"] = source_id
    st.session_state.update({
        "data.label_kind": label.on if label.kind == "regex" else label.kind,
        "data.pattern": label.pattern, "data.split_kind": split.kind, "data.valid_pct": split.valid_pct,
        "data.seed": split.seed, "data.stratify": split.stratify, "data.train_name": split.train_name,
        "data.valid_name": split.valid_name, "data.size": 28 if small else 224, "data.presize": 32 if small else 320,
    })
    set_aug_widgets(aug)


def pick_csv(root, key: str, second_label: str, second_default: int) -> tuple[str, str, str] | None:
    """A CSV in the data folder and two of its columns: the file column and one more."""
    csvs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))
    if not csvs:
        st.error("There is no CSV file in this folder. Choose another option.")
        return None
    csv_rel = st.selectbox("CSV file", csvs, key=f"{key}.csv", **KEEP)
    try:
        columns = list(read_label_csv(root / csv_rel).columns)
    except UserError as e:
        st.error(str(e))
        return None
    c1, c2 = st.columns(2)
    file_col = c1.selectbox("Column with the file name or path", columns, key=f"{key}.file_col", **KEEP)
    other = c2.selectbox(second_label, columns, index=min(second_default, len(columns) - 1), key=f"{key}.col", **KEEP)
    return str(root / csv_rel), file_col, other


st.session_state.setdefault("data.bs", 64)
st.session_state.setdefault("data.method", "crop")
st.title("Data")
st.caption("Choose images, tell Loupe how to read their labels, and look at what the model will see.")

# ---- where the images are
st.header("1 · Images", divider="orange")
source = pick_source()
if source is None:
    st.stop()
try:
    scan = scan_folder(source.root)
except UserError as e:
    st.error(str(e))
    st.stop()
if source.kind == "builtin":
    key = source.source_id.split(":", 1)[1]
    suggested = (BUILTINS[key].label_rule, BUILTINS[key].split_rule, BUILTINS[key].aug)
else:
    suggested = (*suggest_rules(scan), AugSettings())
reset_rules(source.source_id, *suggested, small=source.kind == "builtin")
st.caption(f"{len(scan.images):,} images in {scan.root}"
           + (f" · {scan.skipped:,} other files ignored (e.g. {', '.join(scan.skipped_examples[:3])})" if scan.skipped else ""))

# ---- labels
st.header("2 · Labels", divider="orange")
label_kind = st.segmented_control("How is each image's class given?", list(LABEL_KINDS), format_func=LABEL_KINDS.get,
                                  key="data.label_kind", required=True, **KEEP)
rule_column, tester = st.columns([3, 2], gap="large")
if label_kind in ("name", "path"):
    pattern = rule_column.text_input("Pattern (regular expression; the part in ( ) is the label)", key="data.pattern",
                            help="e.g. ^(.+)_\\d+\\.jpg$ turns 'great_pyrenees_12.jpg' into 'great_pyrenees'. "
                                 "A group named (?P<label>…) is used if present.", **KEEP)
    label = LabelRule(kind="regex", pattern=pattern, on=label_kind)
elif label_kind == "folder":
    label = LabelRule(kind="folder")
else:
    with rule_column:
        picked = pick_csv(scan.root, "data.label_csv", "Column with the label", 1)
    if picked is None:
        st.stop()
    csv_path, file_col, label_col = picked
    label = LabelRule(kind="csv", csv_path=csv_path, file_col=file_col, label_col=label_col)

# ---- split
st.header("3 · Validation split", divider="orange")
split_kind = st.segmented_control("Which images check the model (validation)?", list(SPLIT_KINDS),
                                  format_func=SPLIT_KINDS.get, key="data.split_kind", required=True, **KEEP)
if split_kind == "random":
    c1, c2, c3 = st.columns(3)
    valid_pct = c1.slider("Validation share", 0.05, 0.5, step=0.05, key="data.valid_pct", **KEEP)
    seed = c2.number_input("Seed", 0, 2**31 - 1, step=1, key="data.seed", help="The same seed picks the same images.", **KEEP)
    stratify = c3.checkbox("Stratified (same share per class)", key="data.stratify", **KEEP)
    split = SplitRule(kind="random", valid_pct=valid_pct, seed=int(seed), stratify=stratify)
elif split_kind == "folder":
    c1, c2 = st.columns(2)
    train_name = c1.text_input("Training folder name", key="data.train_name", **KEEP)
    valid_name = c2.text_input("Validation folder name", key="data.valid_name", **KEEP)
    split = SplitRule(kind="folder", train_name=train_name, valid_name=valid_name)
else:
    picked = pick_csv(scan.root, "data.split_csv", "Column that is true for validation images", 99)
    if picked is None:
        st.stop()
    csv_path, file_col, valid_col = picked
    split = SplitRule(kind="csv", csv_path=csv_path, file_col=file_col, valid_col=valid_col)

try:
    items = label_items(scan, label, split)
except UserError as e:
    tester.error(str(e))
    st.error(str(e))
    st.stop()

# the live tester, beside the rule
report = items.label_report
with tester:
    m1, m2 = st.columns(2)
    m1.metric("Labelled images", f"{report.n_matched:,}", help=f"of {items.n_files:,} images found")
    m2.metric("Classes", len(report.class_counts))
    if report.n_unmatched:
        st.warning(f"{report.n_unmatched:,} file(s) got no label, e.g. " + ", ".join(f"`{x}`" for x in report.unmatched_examples))
    else:
        st.success("Every image has a label.")
m3, m4 = st.columns(2)
m3.metric("Training images", f"{int((items.split == 'train').sum()):,}")
m4.metric("Validation images", f"{int((items.split == 'valid').sum()):,}")
st.plotly_chart(class_counts_figure(items.counts()), key="data.class_chart")
for warning in items.warnings():
    if "no label" not in warning:  # said beside the rule
        st.warning(warning)

# ---- presizing
st.header("4 · Image size", divider="orange")
c1, c2, c3, c4 = st.columns(4)
size = c1.number_input("Size the model sees (px)", 16, 1024, step=8, key="data.size", **KEEP)
presize = c2.number_input("Presize (px)", 16, 2048, step=8, key="data.presize",
                          help="Each image is decoded once to this size and kept in memory; augmentation then crops "
                               "and resizes whole batches to the model size. fastai's rule of thumb: about twice the size.", **KEEP)
method = c3.selectbox("Presize by", ["crop", "squish"], key="data.method", help="crop: centre square. squish: whole image, stretched.", **KEEP)
bs = c4.number_input("Batch size", 1, 1024, step=8, key="data.bs", **KEEP)
st.caption(f"Presized images take {presize_bytes(len(scan.images), int(presize)) / 1024**2:,.0f} MB of memory.")
bar = st.empty()


def show_progress(done: int, total: int) -> None:
    bar.progress(done / total, text=f"Decoding and presizing images: {done:,} of {total:,}")


try:
    images = presize_cache().get(items.scanned_paths, int(presize), method, progress=show_progress)
except UserError as e:
    st.error(str(e))
    st.stop()
bar.empty()

# ---- health
st.header("5 · Data health", divider="orange")
health = health_report(items, images)
tab_counts, tab_bad, tab_sizes = st.tabs(["Images per class", f"Unreadable files ({len(health.failures)})", "Sizes and colours"])
with tab_counts:
    st.dataframe(health.counts, width="stretch")
with tab_bad:
    if len(health.failures):
        st.warning("These files could not be read. They are left out of training; your files are not changed.")
        st.dataframe(health.failures, width="stretch", hide_index=True)
    else:
        st.success("Every image could be read.")
with tab_sizes:
    if len(health.sizes):
        st.caption(f"Width {health.sizes.width.min()}–{health.sizes.width.max()} px (median {health.sizes.width.median():.0f}), "
                   f"height {health.sizes.height.min()}–{health.sizes.height.max()} px (median {health.sizes.height.median():.0f}). "
                   "Every image becomes RGB. Original colour modes: "
                   + ", ".join(f"{mode} × {n:,}" for mode, n in sorted(health.modes.items())))
        st.plotly_chart(size_spread_figure(health.sizes), key="data.size_chart")

# ---- show_batch


@st.fragment
def show_batch_section(base: DataConfig, items, images) -> None:
    """Augmentation sliders and the grid: changing them reruns only this part of the page."""
    with st.expander("Augmentation (fastai's aug_transforms)", expanded=False):
        aug = aug_controls()
    config = dataclasses.replace(base, aug=aug)
    view = st.segmented_control("Show", list(VIEWS), format_func=VIEWS.get, key="view.mode", default="train",
                                required=True, **KEEP)
    c2, c3, c4 = st.columns([1, 1, 4], vertical_alignment="bottom")
    rows = c2.selectbox("Rows", [1, 2, 3, 4, 5, 6], index=2, key="view.rows", **KEEP)
    cols = c3.selectbox("Columns", [2, 3, 4, 5, 6, 8], index=1, key="view.cols", **KEEP)
    if c4.button("New batch", key="view.shuffle", help="Other images (the augmentation settings stay)."):
        st.session_state["view.seed"] = st.session_state.get("view.seed", 0) + 1
    try:
        dls = DataLoaders(items, images, size=config.size, bs=config.bs, aug=aug, device=default_device(),
                          seed=st.session_state.get("view.seed", 0))
    except UserError as e:
        st.error(str(e))
        return
    x, titles = dls.show_batch(max_n=rows * cols, split="valid" if view == "valid" else "train", unique=view == "unique")
    image_grid(x, titles, cols, key="show_batch")
    set_current_data(config, DataSummary(name=config.name, root=config.root, classes=tuple(items.classes),
                                         n_train=dls.n_train, n_valid=dls.n_valid))


st.header("6 · show_batch", divider="orange")
show_batch_section(DataConfig(root=str(scan.root), name=source.name, label=label, split=split, size=int(size),
                              presize=int(presize), method=method, bs=int(bs)), items, images)
