"""The Data page's health check: duplicates, near copies, one picture under two labels, train/valid leaks,
imbalance and files that cannot be used, each with thumbnails and a way to send them to the cleaner."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from engine.clean import DELETE, KEEP
from engine.data import LabelledItems, PresizeCache
from engine.health import Cluster, HealthCheck, health_check
from engine.images import PresizedImages
from engine.sources import FolderScan
from engine.spec import RunSpec
from ui.gallery import image_grid
from ui.state import CLEAN_PENDING
from ui.text import md

MAX_CLUSTERS = 12  # clusters drawn per tab; the rest are counted
KINDS = {  # tab title, what it means
    "leaks": ("Train/valid leaks", "The same picture (or a near copy) is in both the training and the validation "
                                   "images: the model is checked on pictures it learned, so its accuracy looks better "
                                   "than it is."),
    "label_conflicts": ("Two labels", "The same picture (or a near copy) carries two different labels: at least one "
                                      "is wrong."),
    "duplicates": ("Duplicates", "Exact copies: the same pixels under several names."),
    "near_duplicates": ("Near copies", "Pictures that are the same after re-saving or resizing."),
}


@st.cache_resource(max_entries=4, show_spinner="Checking the images for copies and leaks…")
def _check(cache_key: str, rules: str, _items: LabelledItems, _images: PresizedImages, broken: tuple[str, ...],
           unreadable: tuple[str, ...]) -> HealthCheck:
    return health_check(_items, _images, broken_links=broken, unreadable_folders=unreadable)


def check_for(spec: RunSpec, scan: FolderScan, items: LabelledItems, images: PresizedImages) -> HealthCheck:
    """The health check of the chosen data, computed once per data set contents, presize and rules."""
    key = PresizeCache.key(items.scanned_paths, spec.data.presize, spec.data.presize_method)
    rules = json.dumps(spec.to_dict()["data"])
    return _check(key, rules, items, images, tuple(scan.broken_links), tuple(scan.unreadable))


def _thumbnails(cluster: Cluster, items: LabelledItems, images: PresizedImages, key: str) -> None:
    pixels = images.pixels[items.image_index[cluster.positions]].float() / 255
    titles = [f"{f.rsplit('/', 1)[-1]} · {label} · {split}" for f, label, split in
              zip(cluster.files, cluster.labels, cluster.splits)]
    image_grid(pixels, titles, cols=min(6, max(2, len(titles))), key=key)


def send_to_cleaner(root: str, clusters: list[Cluster], keep_all: bool = False) -> None:
    """Mark the extra copies for deletion (or keep them, for the user to relabel) on the Clean page."""
    choices = {}
    for cluster in clusters:
        extra = set(cluster.to_delete())
        for f in cluster.files:
            choices[f] = KEEP if keep_all or f not in extra else DELETE
    CLEAN_PENDING.set({"root": root, "choices": choices, "source": "health"})
    st.switch_page("pages/clean.py")


def health_panel(check: HealthCheck, items: LabelledItems, images: PresizedImages) -> None:
    """Warnings in plain words, the imbalance ratio, and a tab per kind of problem with its thumbnails."""
    c1, c2, c3 = st.columns(3)
    c1.metric("Imbalance (largest ÷ smallest class)",
              "—" if check.imbalance_ratio == float("inf") else f"{check.imbalance_ratio:.1f}×")
    c2.metric("Images compared", f"{check.n_checked:,}")
    c3.metric("Extra copies", f"{check.extra_copies():,}")
    for line in check.summary():
        st.warning(md(line))
    tabs = st.tabs([f"{KINDS[k][0]} ({len(getattr(check, k))})" for k in KINDS]
                   + [f"Broken links ({len(check.broken_links)})"])
    root = str(items.root)
    for tab, kind in zip(tabs, KINDS):
        clusters: list[Cluster] = getattr(check, kind)
        with tab:
            st.caption(KINDS[kind][1])
            if not clusters:
                st.success("None found.")
                continue
            for i, cluster in enumerate(clusters[:MAX_CLUSTERS]):
                _thumbnails(cluster, items, images, key=f"health-{kind}-{i}")
            if len(clusters) > MAX_CLUSTERS:
                st.caption(f"… and {len(clusters) - MAX_CLUSTERS:,} more groups.")
            relabel = kind == "label_conflicts"
            label = ("Open these in the cleaner (to relabel)" if relabel else
                     "Send the extra copies to the cleaner (marked for deletion)")
            if st.button(label, key=f"health.send.{kind}", icon=":material/cleaning_services:"):
                send_to_cleaner(root, clusters, keep_all=relabel)
    with tabs[-1]:
        if check.broken_links:
            st.warning("These links lead nowhere (or in a loop): they are left out.")
            st.dataframe(pd.DataFrame({"link": check.broken_links}), hide_index=True)
        else:
            st.success("No broken links.")
