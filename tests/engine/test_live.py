"""Tests for engine/results/live.py: the per-frame function of the live view, its rate cap and threads, and saving a frame."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.camera import class_shots, create_set
from engine.errors import UserError
from engine.results.live import (BAR_COLOUR, LiveStream, draw_top, frame_jpeg, limit_threads_here, panel_layout,
                                 predict_frame, save_frame)
from engine.train.export import ExportedModel, preprocess
from engine.train.models import create_model

PREP = {"arch": "small", "n_classes": 4, "size": 28, "presize": 32, "method": "crop",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CLASSES = ["cat", "dog", "fox", "owl"]


@pytest.fixture(scope="module")
def exported() -> ExportedModel:
    torch.manual_seed(0)
    model, _ = create_model("small", len(CLASSES))
    return ExportedModel(model=model.eval(), classes=CLASSES, preprocessing=PREP)


def camera_frame(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class ScriptedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_predict_frame_gives_the_top_3_of_the_validation_path(exported):
    rgb = camera_frame(1)
    top = predict_frame(exported, rgb)
    with torch.no_grad():  # an independent route: preprocess, the model, a softmax over every class
        probs = exported.model(preprocess([Image.fromarray(rgb)], PREP)).softmax(dim=1)[0]
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    order = probs.argsort(descending=True)[:3].tolist()
    assert [name for name, _ in top] == [CLASSES[i] for i in order]
    assert [p for _, p in top] == pytest.approx([float(probs[i]) for i in order], abs=1e-6)
    assert sum(p for _, p in top) <= 1.0 + 1e-6
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_draw_top_draws_a_bar_per_class_as_long_as_its_probability():
    rgb = np.full((480, 640, 3), 30, dtype=np.uint8)
    out = draw_top(rgb, [("cat", 0.5), ("dog", 0.25), ("fox", 0.125)], "9.0 predictions/s")
    size = panel_layout(480)
    assert size == {"margin": 8, "row": 30, "bar": 160, "text": 190}
    for i, expected in enumerate([80, 40, 20]):
        y = size["margin"] + i * size["row"] + 5
        orange = np.all(out[y, :, :] == BAR_COLOUR, axis=1)
        assert orange.sum() == expected and orange[size["margin"]:size["margin"] + expected].all()
        text = out[size["margin"] + i * size["row"]:size["margin"] + (i + 1) * size["row"],
                   2 * size["margin"] + size["bar"]:]
        assert (text.max(axis=2) > 200).sum() > 20  # the class name and its percentage, in white
    right = 3 * size["margin"] + size["bar"] + size["text"] + 1
    assert (out[:, right:] == 30).all() and (out[size["margin"] + 4 * size["row"] + 1:] == 30).all()  # the rest as it was
    assert (rgb == 30).all()  # the camera's frame itself is left alone


def test_a_stream_predicts_at_most_max_fps_and_draws_the_newest_prediction_on_every_frame(exported):
    clock = ScriptedClock()
    stream = LiveStream(exported, max_fps=10, clock=clock)
    assert stream.reading() is None and stream.latest_frame() is None
    outputs = []
    for i, t in enumerate([0.0, 0.05, 0.1, 0.15, 0.2]):  # 20 frames a second from the camera
        clock.now = t
        rgb = camera_frame(i, 120, 160)
        outputs.append(stream.frame(rgb))
        assert stream.latest_frame() is rgb
        assert outputs[-1].shape == rgb.shape and not np.array_equal(outputs[-1], rgb)
    reading = stream.reading()
    assert reading.count == 3  # at 0, 0.1 and 0.2 s
    assert reading.fps == pytest.approx(10.0)
    assert reading.top == predict_frame(exported, camera_frame(4, 120, 160))
    assert np.array_equal(outputs[4], draw_top(camera_frame(4, 120, 160), reading.top, "10.0 predictions/s"))
    # between predictions the last one is drawn again
    assert np.array_equal(outputs[3], draw_top(camera_frame(3, 120, 160), stream_top_at(exported, 2), "10.0 predictions/s"))

    stream.use_model(exported)  # another run picked: its predictions start afresh
    assert stream.reading() is None
    clock.now = 0.25
    stream.frame(camera_frame(5))
    assert stream.reading().count == 1


def stream_top_at(exported, seed: int):
    return predict_frame(exported, camera_frame(seed, 120, 160))


class ThreadsSeen(torch.nn.Module):
    """A model that records how many threads torch may use while it runs."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes, self.seen = n_classes, []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return torch.zeros(len(x), self.n_classes)


def test_the_frame_thread_predicts_on_one_thread_and_leaves_the_others_theirs():
    model = ThreadsSeen(len(CLASSES))
    stream = LiveStream(ExportedModel(model=model, classes=CLASSES, preprocessing=PREP), threads=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        worker = threading.Thread(target=stream.frame, args=(camera_frame(0),))
        worker.start()
        worker.join()
        seen_by_new = []
        fresh = threading.Thread(target=lambda: seen_by_new.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert model.seen == [1]
        assert torch.get_num_threads() == 2 and seen_by_new == [2]  # this thread's and a new thread's, unchanged
        assert [p for _, p in stream.reading().top] == [0.25] * 3  # equal logits: equal probabilities
    finally:
        torch.set_num_threads(before)


def test_limit_threads_here_is_for_the_calling_thread_only():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        def limited():
            limit_threads_here(1)
            seen.append(torch.get_num_threads())

        worker = threading.Thread(target=limited)
        worker.start()
        worker.join()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_save_frame_saves_the_frame_on_screen_into_the_chosen_class(exported, tmp_path):
    folder = create_set("hands", ["left", "right"], root=tmp_path)
    stream = LiveStream(exported, clock=ScriptedClock())
    with pytest.raises(UserError, match="no frame to save yet"):
        save_frame(stream, folder, "left")
    assert class_shots(folder) == {"left": [], "right": []}

    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[:, 32:] = (200, 40, 10)
    stream.frame(rgb)
    shot = save_frame(stream, folder, "right")
    assert class_shots(folder) == {"left": [], "right": [shot]}
    assert shot.read_bytes() == frame_jpeg(rgb)
    with Image.open(shot) as img:
        assert img.format == "JPEG" and img.size == (64, 48)
        back = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(back - rgb).mean() < 4  # the frame as the camera sent it, no panel drawn on it

    with pytest.raises(UserError, match="no class called “gone”"):
        save_frame(stream, folder, "gone")
    assert class_shots(folder) == {"left": [], "right": [shot]}
