"""The Data page's source picker: built-in, a folder, an uploaded zip, a camera data set, or a fastai download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from engine.data.resolve import data_name, data_root
from engine.data.builtin import BUILTINS, ensure_builtin
from engine.data.camera import camera_root, list_sets
from engine.errors import UserError
from engine.store.home import home_subdir
from engine.data.sources import FASTAI_DATASETS, dataset_path, delete_upload, download_dataset, extract_zip, is_downloaded
from engine.spec import DataSpec
from ui.text import md
from ui.draft import bind, draft, shown, take_missed_change, update_draft
from ui.state import FOLDER_TEXT, SOURCE_KIND, UPLOAD_MESSAGE, UPLOAD_TO_DELETE, ZIP_VERDICTS

KINDS = {
    "builtin": "Built-in (offline)",
    "folder": "A folder on this computer",
    "zip": "Upload a zip",
    "camera": "Camera data sets",
    "download": "Download a fastai data set",
}


@dataclass(frozen=True)
class ChosenSource:
    root: Path
    name: str
    source: str  # the draft's data.source
    kind: str


def _uploads() -> Path:
    return home_subdir("uploads")


def source_kind(data: DataSpec) -> str | None:
    """Which picker a source belongs to (None while no source is chosen)."""
    if not data.source:
        return None
    if data.kind == "builtin":
        return "builtin"
    if data.kind == "fastai":
        return "download"
    if data_root(data).parent == camera_root():
        return "camera"
    return "zip" if data_root(data).parent == _uploads() else "folder"


def _first_source(kind: str) -> str:
    """The source a picker starts from: the first built-in, the last folder typed, the newest upload, PETS."""
    if kind == "builtin":
        return f"builtin:{next(iter(BUILTINS))}"
    if kind == "folder":
        return _folder_source(FOLDER_TEXT.get())
    if kind == "zip":
        previous = _previous_uploads()
        return str(_uploads() / previous[-1]) if previous else ""
    if kind == "camera":
        sets = list_sets()
        return str(camera_root() / sets[-1]) if sets else ""
    return f"fastai:{next(iter(FASTAI_DATASETS))}"


def _kind_changed() -> None:
    update_draft({"data.source": _first_source(SOURCE_KIND.get())})


def pick_source() -> ChosenSource | None:
    """Draw the source widgets; the chosen folder, or None while nothing usable is chosen."""
    take_missed_change(SOURCE_KIND.key, lambda: source_kind(draft().data),
                       lambda kind: update_draft({"data.source": _first_source(kind)}))
    SOURCE_KIND.set(source_kind(draft().data) or SOURCE_KIND.get() or "builtin")
    shown(SOURCE_KIND.key, SOURCE_KIND.get())
    kind = st.segmented_control("Where are the images?", list(KINDS), format_func=KINDS.get, key=SOURCE_KIND.key,
                                required=True, on_change=_kind_changed)
    if kind == "builtin":
        return _builtin()
    if kind == "folder":
        return _folder()
    if kind == "zip":
        return _zip()
    if kind == "camera":
        return _camera()
    return _download()


def _builtin() -> ChosenSource:
    if draft().data.kind != "builtin":
        update_draft({"data.source": _first_source("builtin")})
    key = st.selectbox("Built-in data set", list(BUILTINS), format_func=lambda k: BUILTINS[k].title,
                       **bind("data.source", lambda s: s.split(":", 1)[1], lambda k: f"builtin:{k}"))
    st.caption(BUILTINS[key].description + " Made from scikit-learn's real handwritten digits; works offline.")
    with st.spinner("Writing the built-in images (first use only)…"):
        root = ensure_builtin(key)
    return ChosenSource(root, BUILTINS[key].title, f"builtin:{key}", "builtin")


def _folder_source(text: str) -> str:
    """The draft's source for a typed folder path ("" for none)."""
    text = text.strip()
    return str(Path(text).expanduser().resolve()) if text else ""


def _folder_typed() -> None:
    update_draft({"data.source": _folder_source(FOLDER_TEXT.get())})


def _typed_folder_in_draft(data: DataSpec) -> str:
    """The folder text that the draft holds: the text typed, if the draft has taken it (else the draft's source)."""
    source = data.source if source_kind(data) == "folder" else ""
    return FOLDER_TEXT.get() if _folder_source(FOLDER_TEXT.get()) == source else source


def _folder() -> ChosenSource | None:
    data = draft().data
    if take_missed_change(FOLDER_TEXT.key, lambda: _typed_folder_in_draft(data), lambda text: _folder_typed()):
        data = draft().data
    if source_kind(data) == "folder" and not FOLDER_TEXT.get():
        FOLDER_TEXT.set(data.source)  # a reload or a restart: the draft remembers the folder
    shown(FOLDER_TEXT.key, FOLDER_TEXT.get())
    st.text_input("Folder path", key=FOLDER_TEXT.key, on_change=_folder_typed,
                  placeholder="/home/me/Pictures/pets", help="Subfolders are scanned too; other files are ignored.")
    if not data.source or source_kind(data) != "folder":
        st.info("Type the path of a folder that holds your images.")
        return None
    return ChosenSource(data_root(data), data_name(data), data.source, "folder")


def _previous_uploads() -> list[str]:
    return sorted(p.name for p in _uploads().iterdir() if p.is_dir() and not p.name.startswith("."))


def _zip() -> ChosenSource | None:
    uploads = _uploads()
    upload = st.file_uploader("A zip of images", type=["zip"], key="data.zip_upload",
                              help="Extracted safely into Loupe's own folder; your zip is not changed.")
    verdicts = ZIP_VERDICTS.get()
    if upload is not None and upload.file_id not in verdicts:
        try:
            with st.spinner(f"Checking and extracting {upload.name}…"):
                folder = extract_zip(upload, upload.name, dest_root=uploads)
        except UserError as e:
            verdicts[upload.file_id] = f"error:{e}"
        else:
            verdicts[upload.file_id] = f"ok:Extracted {upload.name} into {folder}."
            update_draft({"data.source": str(folder)})
    if upload is not None:
        outcome, _, message = verdicts[upload.file_id].partition(":")
        if outcome == "error":
            st.error(md(message))
            return None
        st.success(md(message))
    if UPLOAD_MESSAGE.is_set():
        st.success(md(UPLOAD_MESSAGE.pop()))
    previous = _previous_uploads()
    if not previous:
        st.info("Upload a zip whose images sit in one folder per class, or have the class in their file names.")
        return None
    data = draft().data
    if source_kind(data) != "zip" or data_root(data).name not in previous:
        update_draft({"data.source": str(uploads / previous[-1])})
    name = st.selectbox("Uploaded data set", previous,
                        **bind("data.source", lambda s: Path(s).name, lambda n: str(uploads / n)))
    _delete_upload(uploads / name)
    return ChosenSource(uploads / name, name, str(uploads / name), "zip")


def _delete_upload(folder: Path) -> None:
    """Delete an uploaded data set, after a confirmation: it moves to Loupe's trash, never destroyed."""
    if UPLOAD_TO_DELETE.get() != str(folder):
        st.button("Delete this uploaded data set…", key="data.delete_upload", icon=":material/delete:",
                  on_click=UPLOAD_TO_DELETE.set, args=(str(folder),))
        return
    st.warning(f"Move “{md(folder.name)}” to Loupe's trash? The images leave the uploads list; nothing is destroyed.")
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete", type="primary", key="data.delete_upload_yes"):
        UPLOAD_TO_DELETE.clear()
        try:
            moved = delete_upload(folder)
        except UserError as e:
            st.error(md(e))
            return
        left = _previous_uploads()
        update_draft({"data.source": str(_uploads() / left[-1]) if left else ""})
        UPLOAD_MESSAGE.set(f"“{folder.name}” is in Loupe's trash: {moved}.")
        st.rerun()
    c2.button("Cancel", key="data.delete_upload_no", on_click=UPLOAD_TO_DELETE.clear)


def _camera() -> ChosenSource | None:
    """A data set made on the Camera page (LOUPE_HOME/camera/<set>, a folder per class)."""
    root, sets = camera_root(), list_sets()
    link = dict(page="pages/camera.py", label="Take shots on the Camera page", icon=":material/photo_camera:")
    if not sets:
        st.info("No camera data sets yet: make one on the Camera page.")
        st.page_link(**link)
        return None
    data = draft().data
    if source_kind(data) != "camera" or data_root(data).name not in sets:
        update_draft({"data.source": str(root / sets[-1])})
    name = st.selectbox("Camera data set", sets, **bind("data.source", lambda s: Path(s).name, lambda n: str(root / n)))
    st.page_link(**link)
    return ChosenSource(root / name, name, str(root / name), "camera")


def _download() -> ChosenSource | None:
    if draft().data.kind != "fastai":
        update_draft({"data.source": _first_source("download")})
    key = st.selectbox("fastai data set", list(FASTAI_DATASETS), format_func=lambda k: FASTAI_DATASETS[k].title,
                       **bind("data.source", lambda s: s.split(":", 1)[1].upper(), lambda k: f"fastai:{k}"))
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
            st.error(md(e))
            return None
        bar.progress(1.0, text="Downloaded and extracted.")
    root = dataset_path(key) / remote.image_subdir if remote.image_subdir else dataset_path(key)
    return ChosenSource(root, remote.key, f"fastai:{key}", "download")
