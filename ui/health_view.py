"""The Data page's health check: duplicates, near copies, one picture under two labels, train/valid leaks,
imbalance and files that cannot be used, each with thumbnails and a way to send them to the cleaner."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.data.clean import DELETE, KEEP
from engine.data.loaders import LabelledItems
from engine.data.health import KEEP_RULE, MIN_SIMILARITY, Cluster, HealthCheck
from engine.data.images import PresizedImages
from ui.gallery import DISPLAY_PX, display_image
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
    "near_duplicates": ("Near copies", "The same picture re-saved, re-encoded, resized or slightly cropped: found by a "
                                       "perceptual hash, then confirmed by comparing the pictures' content (a plain or "
                                       "transparent background counts for nothing)."),
}


def group_caption(cluster: Cluster) -> str:
    """How sure the check is about one group, in words."""
    if cluster.exact:
        return f"{len(cluster.files)} exact copies: the same pixels."
    return (f"{len(cluster.files)} pictures; near copies: at least {cluster.similarity:.0%} of their content matches "
            f"({MIN_SIMILARITY:.0%} needed; 100% is the same picture).")


def _thumbnails(cluster: Cluster, items: LabelledItems, images: PresizedImages, key: str) -> None:
    """One group side by side, every picture at the same size, captioned with its path in the data set."""
    pixels = images.pixels[items.image_index[cluster.positions]].float() / 255
    extra = set(cluster.extra_copies())
    st.caption(group_caption(cluster))
    with st.container(key=key, horizontal=True, gap="small"):
        for x, f, label, split in zip(pixels, cluster.files, cluster.labels, cluster.splits):
            title = f"{f} · {label} · {split}" + (" · extra copy" if f in extra else "")
            with st.container(width=DISPLAY_PX + 8, gap=None):
                st.image(display_image(x), caption=md(title), width=DISPLAY_PX)  # captions read Markdown


def handoff(clusters: list[Cluster], relabel: bool = False) -> dict[str, str]:
    """The choices sent to the cleaner: every file of the clusters, the exact extra copies marked for deletion
    (none when the user is to relabel), the rest (kept copies, near copies) unmarked."""
    choices = {}
    for cluster in clusters:
        extra = set() if relabel else set(cluster.extra_copies())
        for f in cluster.files:
            choices[f] = DELETE if f in extra else choices.get(f, KEEP)
    return choices


def send_label(choices: dict[str, str], relabel: bool) -> str:
    """The button's words: how many pictures go to the cleaner, and how many of them arrive marked."""
    sent, marked = len(choices), sum(v == DELETE for v in choices.values())
    if relabel:
        return f"Open these {sent:,} pictures in the cleaner (to relabel)"
    return (f"Send {sent:,} pictures to the cleaner: {marked:,} extra exact cop{'y' if marked == 1 else 'ies'} "
            f"marked for deletion, {sent - marked:,} unmarked")


def send_to_cleaner(root: str, choices: dict[str, str]) -> None:
    """Open the Clean page with these choices."""
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
            choices = handoff(clusters, relabel)
            st.caption("Nothing is marked but exact copies: " + KEEP_RULE + ". Near copies and the kept pictures "
                       "arrive unmarked, for you to decide." if not relabel else
                       "Every picture arrives unmarked: choose its label (or delete it) on the Clean page.")
            if st.button(send_label(choices, relabel), key=f"health.send.{kind}", icon=":material/cleaning_services:"):
                send_to_cleaner(root, choices)
    with tabs[-1]:
        if check.broken_links:
            st.warning("These links lead nowhere (or in a loop): they are left out.")
            st.dataframe(pd.DataFrame({"link": check.broken_links}), hide_index=True)
        else:
            st.success("No broken links.")
