"""The Data page's presize cache panel: its size on disk, its limit, and a way to clear it."""
from __future__ import annotations

import streamlit as st

from engine.data.cache import cache_dir, cache_entries, cache_size, clear_cache, disk_limit_bytes, set_disk_limit
from engine.errors import UserError
from ui.state import CACHE_LIMIT_GB, CACHE_MESSAGE
from ui.text import md


def _limit_changed() -> None:
    try:
        freed = set_disk_limit(float(CACHE_LIMIT_GB.get()))
    except UserError as e:
        CACHE_MESSAGE.set(str(e))
        return
    CACHE_MESSAGE.set(f"Limit set to {CACHE_LIMIT_GB.get():g} GB" + (f"; {freed / 1024**2:,.0f} MB of the least "
                      "recently used data sets freed." if freed else "."))


def _clear() -> None:
    freed = clear_cache()
    CACHE_MESSAGE.set(f"Cache cleared: {freed / 1024**2:,.0f} MB freed. Images are decoded again when next used.")


def cache_panel() -> None:
    """Size of the cache, its limit (the least recently used data sets go first), and Clear."""
    with st.expander(f"Presize cache: {cache_size() / 1024**2:,.0f} MB on disk", icon=":material/storage:"):
        st.caption(f"Presized images are kept in {md(cache_dir())}, so a restart, or another Loupe, reuses them; "
                   "a changed file is decoded again alone.")
        entries = cache_entries()
        if entries:
            st.dataframe([{"data set": e.root, "presize": e.presize, "method": e.method, "images": e.images,
                           "MB": round(e.bytes / 1024**2, 1), "last used": e.last_used} for e in entries],
                         hide_index=True, key="data.cache_table")
        CACHE_LIMIT_GB.set(round(disk_limit_bytes() / 1024**3, 2))
        c1, c2 = st.columns([1, 1], vertical_alignment="bottom")
        c1.number_input("Keep the cache under (GB)", 0.1, 10_000.0, step=1.0, key=CACHE_LIMIT_GB.key,
                        on_change=_limit_changed, help="Above it, the least recently used data sets are removed "
                        "first (they are decoded again if used).")
        c2.button("Clear the cache", key="data.clear_cache", on_click=_clear, icon=":material/delete_sweep:",
                  disabled=not entries)
        if CACHE_MESSAGE.is_set():
            st.success(md(CACHE_MESSAGE.pop()))
