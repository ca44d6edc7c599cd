"""The Data page's source picker: built-in, a folder, an uploaded zip, or a fastai download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from engine.builtin import BUILTINS, ensure_builtin
from engine.errors import UserError
from engine.home import home_subdir
from engine.sources import FASTAI_DATASETS, dataset_path, download_dataset, extract_zip, is_downloaded

KINDS = {
    "builtin": "Built-in (offline)",
    "folder": "A folder on this computer",
    "zip": "Upload a zip",
    "download": "Download a fastai data set",
}


@dataclass(frozen=True)
class ChosenSource:
    root: Path
    name: str
    source_id: str  # changes when the user picks another data set (resets the label and split rules)
    kind: str


def pick_source() -> ChosenSource | None:
    """Draw the source widgets; the chosen folder, or None while nothing usable is chosen."""
    kind = st.segmented_control("Where are the images?", list(KINDS), format_func=KINDS.get, key="data.kind",
                                default="builtin", required=True, persist_state="session")
    if kind == "builtin":
        return _builtin()
    if kind == "folder":
        return _folder()
    if kind == "zip":
        return _zip()
    return _download()


def _builtin() -> ChosenSource:
    key = st.selectbox("Built-in data set", list(BUILTINS), format_func=lambda k: BUILTINS[k].title,
                       key="data.builtin", persist_state="session")
    st.caption(BUILTINS[key].description + " Made from scikit-learn's real handwritten digits; works offline.")
    with st.spinner("Writing the built-in images (first use only)…"):
        root = ensure_builtin(key)
    return ChosenSource(root, BUILTINS[key].title, f"builtin:{key}", "builtin")


def _folder() -> ChosenSource | None:
    text = st.text_input("Folder path", key="data.folder", persist_state="session",
                         placeholder="/home/me/Pictures/pets", help="Subfolders are scanned too; other files are ignored.")
    if not text.strip():
        st.info("Type the path of a folder that holds your images.")
        return None
    root = Path(text.strip()).expanduser()
    return ChosenSource(root, root.name or str(root), f"folder:{root}", "folder")


def _zip() -> ChosenSource | None:
    uploads = home_subdir("uploads")
    upload = st.file_uploader("A zip of images", type=["zip"], key="data.zip_upload",
                              help="Extracted safely into Loupe's own folder; your zip is not changed.")
    verdicts: dict[str, str] = st.session_state.setdefault("data.zip_verdicts", {})  # file_id -> message, checked once
    if upload is not None and upload.file_id not in verdicts:
        try:
            with st.spinner(f"Checking and extracting {upload.name}…"):
                folder = extract_zip(upload, upload.name, dest_root=uploads)
        except UserError as e:
            verdicts[upload.file_id] = f"error:{e}"
        else:
            verdicts[upload.file_id] = f"ok:Extracted {upload.name} into {folder}."
            st.session_state["data.upload_choice"] = folder.name
    if upload is not None:
        outcome, _, message = verdicts[upload.file_id].partition(":")
        if outcome == "error":
            st.error(message)
            return None
        st.success(message)
    previous = sorted(p.name for p in uploads.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not previous:
        st.info("Upload a zip whose images sit in one folder per class, or have the class in their file names.")
        return None
    name = st.selectbox("Uploaded data set", previous, key="data.upload_choice", persist_state="session")
    return ChosenSource(uploads / name, name, f"zip:{name}", "zip")


def _download() -> ChosenSource | None:
    key = st.selectbox("fastai data set", list(FASTAI_DATASETS), format_func=lambda k: FASTAI_DATASETS[k].title,
                       key="data.remote", persist_state="session")
    remote = FASTAI_DATASETS[key]
    if not is_downloaded(key):
        st.caption(f"Not downloaded yet. It will be kept in {dataset_path(key).parent} and reused afterwards.")
        if not st.button(f"Download {key}", key="data.download", type="primary"):
            return None
        bar = st.progress(0.0, text="Connecting…")

        def progress(done: int, total: int | None) -> None:
            mb = done / 1e6
            if total:
                bar.progress(min(done / total, 1.0), text=f"Downloading {mb:,.1f} of {total / 1e6:,.1f} MB")
            else:
                bar.progress(0.0, text=f"Downloading {mb:,.1f} MB")

        try:
            download_dataset(key, progress=progress)
        except UserError as e:
            bar.empty()
            st.error(str(e))
            return None
        bar.progress(1.0, text="Downloaded and extracted.")
    root = dataset_path(key) / remote.image_subdir if remote.image_subdir else dataset_path(key)
    return ChosenSource(root, remote.key, f"download:{key}", "download")
