"""Tests for export_onnx in engine/train/export.py: a valid ONNX file that onnxruntime runs with the model's own outputs."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from engine.errors import UserError
from engine.train.export import export_onnx, preprocess
from engine.train.models import create_model

PREPROCESSING = {"arch": "small", "n_classes": 10, "size": 28, "presize": 32, "method": "crop",
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def model(one_thread):
    """The small model with random weights and BatchNorm statistics (so that eval mode is not the identity)."""
    torch.manual_seed(0)
    net, _ = create_model("small", 10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    net.train()  # as a model is during training: the export must still use eval mode
    return net


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model):
    return export_onnx(model, PREPROCESSING, tmp_path_factory.mktemp("onnx") / "sub" / "model.onnx")


@pytest.fixture(scope="module")
def digits(tmp_path_factory, write_digits) -> torch.Tensor:
    """Five real digits, through the validation preprocessing: [5, 3, 28, 28]."""
    folder = write_digits(tmp_path_factory.mktemp("digits"), count=5)
    images = [Image.open(p) for p in sorted(folder.glob("*.png"))]
    assert len(images) == 5
    return preprocess(images, PREPROCESSING)


def test_the_file_is_valid_onnx(onnx_file, model):
    assert onnx_file.name == "model.onnx" and onnx_file.is_file()
    proto = onnx.load(onnx_file)
    onnx.checker.check_model(proto)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert model.training  # the model passed in is left as it was


def test_onnxruntime_gives_the_model_outputs(onnx_file, model, digits):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "logits")
    assert inp.shape[1:] == [3, 28, 28] and not isinstance(inp.shape[0], int)  # a dynamic batch axis
    model_eval = create_model("small", 10)[0]
    model_eval.load_state_dict(model.state_dict())
    model_eval.eval()
    for batch in (digits, digits[:2], digits[3:4]):
        with torch.no_grad():
            expected = model_eval(batch).numpy()
        (logits,) = session.run(None, {"image": batch.numpy()})
        assert logits.shape == (len(batch), 10)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_a_folder_that_cannot_be_written_is_a_user_error(tmp_path, model):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot be written"):
        export_onnx(model, PREPROCESSING, blocker / "model.onnx")


def test_the_older_exporter_is_the_fallback(tmp_path, model, digits, monkeypatch):
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("torch.export cannot trace this model")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    path = export_onnx(model, PREPROCESSING, tmp_path / "model.onnx")
    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model_eval = create_model("small", 10)[0]
    model_eval.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = model_eval.eval()(digits).numpy()
    for batch, want in ((digits, expected), (digits[:2], expected[:2])):
        np.testing.assert_allclose(session.run(None, {"image": batch.numpy()})[0], want, atol=1e-4, rtol=0)


def test_when_no_exporter_works_the_user_is_told(tmp_path, model, monkeypatch):
    def always_fails(*args, dynamo=True, **kwargs):
        raise RuntimeError(f"no luck with dynamo={dynamo}\nlong details")

    monkeypatch.setattr(torch.onnx, "export", always_fails)
    with pytest.raises(UserError, match=r"could not be exported to ONNX \(no luck with dynamo=True; "
                                        r"no luck with dynamo=False\)\.$"):  # no exception class names
        export_onnx(model, PREPROCESSING, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
