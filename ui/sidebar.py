"""The sidebar every page shares: the chosen data set."""
import streamlit as st

from ui.state import current_data


def render_sidebar() -> None:
    config, summary = current_data()
    with st.sidebar:
        st.subheader("Data set")
        if summary is None:
            st.caption("None chosen yet: start on the Data page.")
            return
        st.markdown(f"**{summary.name}**")
        st.caption(f"{len(summary.classes)} classes · {summary.n_train:,} train · {summary.n_valid:,} valid")
        shown = ", ".join(summary.classes[:12]) + (" …" if len(summary.classes) > 12 else "")
        st.caption(f"Classes: {shown}")
        st.caption(f"Images: {config.size} px (presized {config.presize} px) · batch size {config.bs}")
