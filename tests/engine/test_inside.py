"""Look inside the network (engine/results/inside.py and `python -m engine inside`), on a real tiny run on the digits."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.data.augment import denormalize
from engine.data.labels import LabelRule
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.results.gradcam import grad_cam, grad_cams
from engine.results.inside import channel_index, look_inside, look_inside_file, look_inside_image, stages
from engine.results.review import review_run
from engine.spec import RunSpec, load_spec, override
from engine.store.runs import RunStore
from engine.train.export import ExportedModel, load_run, predict, preprocess
from engine.train.models import create_model
from engine.train.run import train_run

SMALL_SHAPES = [("input", [3, 28, 28]), ("block 1", [32, 14, 14]), ("block 2", [64, 7, 7]), ("block 3", [128, 4, 4]),
                ("block 4", [256, 2, 2]), ("head", [10, 1, 1])]


@pytest.fixture(scope="module")
def run(tmp_path_factory, write_digits, one_thread):
    """One epoch of the small model on 200 real digits; returns (run folder, its data folder)."""
    home = tmp_path_factory.mktemp("inside-home")
    data = write_digits(tmp_path_factory.mktemp("inside-digits"), count=200)
    spec = override(RunSpec(), {"data.source": str(data), "data.label": LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$"),
                                "data.size": 28, "data.presize": 32, "data.bs": 32, "model.arch": "small",
                                "model.pretrained": False, "train.schedule": "one_cycle", "train.epochs": 1,
                                "train.lr": 5e-3, "train.seed": 0, "device.threads": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_HOME", str(home))
        store = RunStore()
        try:
            result = train_run(spec, PresizeCache(max_entries=1), store, source="cli", out_dir=home / "run")
        finally:
            store.close()
    assert result["status"] == "done"
    return home / "run", data


@pytest.fixture(scope="module")
def review(run):
    folder, _ = run
    return review_run({"id": 1, "weights_path": str(folder), "spec": load_spec(folder / "spec.json")},
                      PresizeCache(max_entries=1))


def test_shapes_from_input_to_head(run, review):
    exported = review.exported
    x = review.model_input(review.valid_pos[:1])
    inside = look_inside(exported, x)
    assert [(v.name, list(v.shape)) for v in inside.layers] == SMALL_SHAPES
    # each body stage's output, computed independently: the body's first blocks applied in turn
    body = exported.model[0]
    with torch.no_grad():
        a = x
        for i, view in enumerate(inside.layers[1:5]):
            a = body[i](a)
            assert torch.allclose(view.means, a[0].mean(dim=(1, 2)), atol=1e-5)
            assert torch.allclose(view.maps, a[0, view.top_channels], atol=1e-5)
        logits = exported.model(x)[0]
    assert torch.allclose(inside.layers[-1].means, logits, atol=1e-5)
    assert torch.allclose(inside.probs, logits.softmax(dim=0), atol=1e-6)
    assert inside.predicted == int(logits.argmax())
    # the input as the model sees it, shown de-normalised
    assert inside.image.shape == (3, 28, 28) and inside.image.min() >= 0 and inside.image.max() <= 1
    assert torch.allclose(inside.image, denormalize(x)[0].clamp(0, 1))


def test_top_channels_are_sorted_by_mean_activation(review):
    inside = look_inside(review.exported, review.model_input(review.valid_pos[3:4]), k=8)
    for view in inside.layers:
        assert len(view.top_channels) == min(8, view.shape[0]) == len(view.maps)
        top = view.means[view.top_channels]
        assert torch.all(top[:-1] >= top[1:])  # most active first
        rest = torch.ones(view.shape[0], dtype=torch.bool)
        rest[view.top_channels] = False
        assert not rest.any() or view.means[rest].max() <= top[-1]  # none left out is more active
        assert torch.allclose(view.maps.mean(dim=(1, 2)), top, atol=1e-5)
    assert inside.layers[0].top_channels == sorted(range(3), key=lambda c: -float(inside.layers[0].means[c]))
    assert inside.layers[-1].top_channels[0] == inside.predicted  # the head's most active channel is the prediction


def test_grad_cam_at_every_stage(review):
    exported = review.exported
    x = review.model_input(review.valid_pos[:1])
    inside = look_inside(exported, x)
    assert inside.layers[0].cam is None and inside.layers[-1].cam is None  # the input and the head have none
    for view in inside.layers[1:-1]:
        assert view.cam.shape == (28, 28) and view.cam.min() >= 0 and view.cam.max() <= 1
        assert float(view.cam.max()) in (0.0, 1.0)  # scaled by its own peak
    # one pass at every stage gives what one pass per stage gives; the last stage is the Interpret page's map
    body = stages(exported.model, "small")
    for stage, view in zip(body, inside.layers[1:-1]):
        assert torch.allclose(view.cam, grad_cam(exported.model, x, layer=stage.module)[0], atol=1e-6)
    assert torch.allclose(inside.layers[4].cam, grad_cam(exported.model, x)[0], atol=1e-6)


def test_a_resnets_stem_and_four_stages():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 3)
    prep = {"arch": "resnet18", "n_classes": 3, "size": 64, "presize": 80, "method": "crop",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    exported = ExportedModel(model=model.eval(), classes=["a", "b", "c"], preprocessing=prep)
    inside = look_inside_image(exported, Image.new("RGB", (120, 90), (200, 40, 10)), k=5)
    assert [(v.name, list(v.shape)) for v in inside.layers] == [
        ("input", [3, 64, 64]), ("stem", [64, 16, 16]), ("stage 1", [64, 16, 16]), ("stage 2", [128, 8, 8]),
        ("stage 3", [256, 4, 4]), ("stage 4", [512, 2, 2]), ("head", [3, 1, 1])]
    assert inside.layers[0].top_channels == [0, 1, 2]  # a red picture: red, then green, then blue
    assert [len(v.top_channels) for v in inside.layers] == [3, 5, 5, 5, 5, 5, 3]
    assert all(v.cam.shape == (64, 64) for v in inside.layers[1:-1])


def test_what_a_channel_responds_to(review):
    index = channel_index(review, bs=50)  # several batches
    n = len(review.valid_pos)
    assert set(index.means) == {"input", "block 1", "block 2", "block 3", "block 4"}
    assert [index.means[s].shape for s in index.means] == [(n, 3), (n, 32), (n, 64), (n, 128), (n, 256)]
    # independently: block 2's activations of every validation picture in one batch
    x = review.model_input(review.valid_pos)
    with torch.no_grad():
        acts = review.exported.model[0][:2](x).mean(dim=(2, 3))
    assert torch.allclose(index.means["block 2"], acts, atol=1e-5)
    channel = int(acts.mean(dim=0).argmax())
    top = index.top_pictures("block 2", channel, k=9)
    expected = torch.sort(acts[:, channel], descending=True, stable=True).indices[:9]
    assert top["pos"].tolist() == review.valid_pos[expected].tolist()
    assert top["activation"].is_monotonic_decreasing
    items = review.dls.items
    assert top["item"].tolist() == [items.rel_paths[p] for p in top["pos"]]
    assert top["label"].tolist() == [items.labels[p] for p in top["pos"]]
    # the picture's own look inside agrees with the index
    first = look_inside(review.exported, review.model_input(top["pos"][:1].tolist()))
    assert abs(float(first.layers[2].means[channel]) - top["activation"][0]) < 1e-4
    with pytest.raises(KeyError, match="no stage named"):
        index.top_pictures("head", 0)


def test_the_cli_prints_one_json_line(run, capsys, tmp_path):
    folder, data = run
    picture = sorted(data.glob("seven_*.png"))[0]
    assert main(["inside", str(folder), str(picture), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert [(layer["name"], layer["shape"]) for layer in result["layers"]] == SMALL_SHAPES
    assert all(len(layer["top_channels"]) == min(8, layer["shape"][0]) for layer in result["layers"])
    exported = load_run(folder)
    (best, p), *_ = predict(exported, [Image.open(picture)])[0]
    assert result["prediction"]["class"] == best and abs(result["prediction"]["probability"] - p) < 1e-5
    inside = look_inside(exported, preprocess([Image.open(picture)], exported.preprocessing))
    assert result["layers"][3]["top_channels"] == inside.layers[3].top_channels

    assert main(["inside", str(folder), str(picture)]) == 0  # without --json: a line per stage
    out = capsys.readouterr().out
    assert "block 4   256 × 2 × 2" in out and f"prediction: {best}" in out

    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")
    assert main(["inside", str(folder), str(notes), "--json"]) == 2
    err = capsys.readouterr().err
    assert "is not a picture Loupe can read" in err and "Error" not in err and "Errno" not in err
    assert main(["inside", str(tmp_path / "nowhere"), str(picture)]) == 2
    assert "There is no folder" in capsys.readouterr().err


def test_look_inside_file_refuses_what_is_not_a_picture(run, tmp_path):
    folder, _ = run
    with pytest.raises(UserError, match="not a picture"):
        look_inside_file(load_run(folder), tmp_path / "missing.png")


def test_grad_cams_leaves_a_frozen_model_as_found():
    torch.manual_seed(0)
    model, _ = create_model("small", 4)
    for p in model.parameters():
        p.requires_grad_(False)  # nothing needs a gradient: the first stage's map starts from a fresh leaf
    x = torch.randn(2, 3, 28, 28)
    out = grad_cams(model, x, list(model[0]))
    assert len(out.maps) == 4 and all(m.shape == (2, 28, 28) for m in out.maps)
    assert all(torch.allclose(m, grad_cam(model, x, layer=block)) for m, block in zip(out.maps, model[0]))
    assert not any(p.requires_grad or p.grad is not None for p in model.parameters())
