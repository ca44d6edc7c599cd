"""Download buttons for a run's model: a zip (weights, labels, predict.py, train.py) and an ONNX file."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.errors import UserError
from engine.train.export import ExportedModel, export_onnx, export_zip
from ui.text import md


def _zip_bytes(run: dict) -> bytes:
    return export_zip(Path(run["weights_path"]), spec=run["spec"], name=f"run-{run['id']}")


def onnx_file(run: dict) -> Path:
    """Where a run's ONNX file is kept once made: beside its model.pt."""
    return Path(run["weights_path"]) / "model.onnx"


def _onnx_ready(run: dict) -> bool:
    path, weights = onnx_file(run), Path(run["weights_path"]) / "model.pt"
    return path.is_file() and path.stat().st_mtime >= weights.stat().st_mtime


def export_buttons(run: dict, exported: ExportedModel) -> None:
    """The two downloads, made when clicked (the page never waits for them)."""
    prep = exported.preprocessing
    st.markdown(
        "- **Zip**: `model.pt` (the weights), `labels.json`, `preprocessing.json`, a standalone `predict.py` "
        "(needs only torch, torchvision and pillow: `python predict.py photo.jpg`), the run's `spec.json` and "
        "`train.py`, which trains the same run again from it with Loupe's command line.\n"
        f"- **ONNX**: for other runtimes. Input `image` [batch, 3, {prep['size']}, {prep['size']}], RGB scaled to 0–1 "
        "then normalised with ImageNet's mean and std; output `logits`, one per class in the order of labels.json.")
    c1, c2, _ = st.columns([1, 1, 2])
    # the run's files were checked when its model was loaded, so making the zip on click cannot fail for the user
    c1.download_button("Download model (zip)", data=lambda: _zip_bytes(run), file_name=f"loupe-run-{run['id']}.zip",
                       mime="application/zip", key="export.zip", icon=":material/download:", type="primary",
                       on_click="ignore")
    if _onnx_ready(run):  # made once, kept with the run (and moved to the trash with it)
        c2.download_button("Download ONNX", data=lambda: onnx_file(run).read_bytes(), file_name=f"loupe-run-{run['id']}.onnx",
                           mime="application/octet-stream", key="export.onnx", icon=":material/download:", on_click="ignore")
    elif c2.button("Make the ONNX file", key="export.onnx_make", icon=":material/memory:",
                   help="Converts the model with torch.onnx (a few seconds to a minute)."):
        try:
            with st.spinner("Converting to ONNX…"):
                export_onnx(exported.model, exported.preprocessing, onnx_file(run))
        except UserError as e:
            st.error(md(e))
        else:
            st.rerun()
