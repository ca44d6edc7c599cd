"""Tests for engine/train/models.py: shapes, fastai's head and groups, freezing, safe weight files, downloads on localhost."""
from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import socket
import threading

import fastai_reference as fastai
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from engine.data.augment import normalize
from engine.data.builtin import digit_images
from engine.errors import UserError
from engine.train.models import (
    ARCHS, AdaptiveConcatPool2d, ModelInfo, count_params, create_model, download_weights, freeze,
    load_weights_file, norm_bias_params, param_groups, unfreeze, weights_file,
)

RESNET_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
HEAD_TYPES = [AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear,
              nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]


@pytest.fixture(autouse=True)
def isolated_torch_home(tmp_path, monkeypatch):
    """Every test gets its own empty torchvision cache and never reaches a real server or proxy."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LOUPE_WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}/models")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def closed_port() -> int:
    """A localhost port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seeded_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


# ---------------------------------------------------------------- shapes and the head

def test_archs_are_described():
    assert list(ARCHS) == ["small", "resnet18", "resnet34", "resnet50"]
    assert all(isinstance(d, str) and d for d in ARCHS.values())


@pytest.mark.parametrize("arch", ["small", "resnet18", "resnet34", "resnet50"])
def test_output_shape_head_and_features(arch):
    model, info = create_model(arch, 7)
    assert isinstance(model, nn.Sequential) and len(model) == 2
    assert info == ModelInfo(arch=arch, n_classes=7, pretrained=False, message="",
                             n_features=RESNET_FEATURES.get(arch, 256))
    model.eval()
    sizes = [64, 28] if arch == "small" else [64]
    with torch.no_grad():
        for size in sizes:
            assert model(torch.randn(3, 3, size, size)).shape == (3, 7)
            assert model[0](torch.randn(2, 3, size, size)).shape[1] == info.n_features

    head = model[1]
    assert [type(m) for m in head] == HEAD_TYPES
    nf = 2 * info.n_features
    assert head[2].num_features == nf and head[6].num_features == 512
    assert head[3].p == 0.25 and head[7].p == 0.5
    assert (head[4].in_features, head[4].out_features) == (nf, 512)
    assert (head[8].in_features, head[8].out_features) == (512, 7)
    assert head[4].bias is None and head[8].bias is None  # fastai: no bias after a BatchNorm
    # kaiming_normal_ (fan_in, gain √2): std of the first Linear's weights ≈ √(2 / nf)
    assert head[4].weight.std().item() == pytest.approx((2 / nf) ** 0.5, rel=0.05)


def test_resnet_body_is_torchvision_cut_before_pooling():
    body = create_model("resnet18", 3)[0][0]
    reference = torchvision.models.resnet18(weights=None)
    assert [type(m) for m in body] == [type(m) for m in list(reference.children())[:-2]]
    assert len(body[:6]) == 6 and len(body[6:]) == 2


def test_concat_pool_is_max_then_avg_as_fastai():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-1.0, -5.0], [0.0, -2.0]]]])  # [1, 2, 2, 2]
    out = AdaptiveConcatPool2d()(x)
    assert out.shape == (1, 4, 1, 1)
    assert out.flatten().tolist() == [6.0, 0.0, 3.0, -2.0]  # max of each channel, then mean
    x = torch.randn(5, 7, 3, 4)
    assert torch.equal(AdaptiveConcatPool2d()(x), fastai.concat_pool(x))
    assert torch.equal(create_model("small", 3)[0][1][0](x), fastai.concat_pool(x))  # the head's first layer


def test_legacy_concat_pool_is_avg_then_max():
    # the layout of models exported before Loupe matched fastai: they must load and predict as before
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-1.0, -5.0], [0.0, -2.0]]]])
    assert AdaptiveConcatPool2d("avg_max")(x).flatten().tolist() == [3.0, -2.0, 6.0, 0.0]
    model, _ = create_model("small", 3, pool="avg_max")
    assert model[1][0].order == "avg_max"
    with pytest.raises(ValueError, match="pooling order"):
        AdaptiveConcatPool2d("min_max")


def test_bad_arch_or_classes_is_a_user_error():
    with pytest.raises(UserError, match="Unknown model"):
        create_model("vgg16", 3)
    with pytest.raises(UserError, match="at least 2 classes"):
        create_model("small", 1)


# ---------------------------------------------------------------- groups, freeze, counts

@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_param_groups_partition_the_model(arch):
    model, _ = create_model(arch, 5)
    groups = param_groups(model)
    assert len(groups) == 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))  # disjoint
    assert set(ids) == {id(p) for p in model.parameters()}  # complete
    assert {id(p) for p in groups[2]} == {id(p) for p in model[1].parameters()}


def test_resnet18_groups_follow_fastai_split():
    model, _ = create_model("resnet18", 5)
    body, head = model
    groups = [{id(p) for p in g} for g in param_groups(model)]
    assert id(body[0].weight) in groups[0]  # conv1
    assert id(body[5][0].conv1.weight) in groups[0]  # layer2
    assert id(body[6][0].conv1.weight) in groups[1]  # layer3
    assert id(head[8].weight) in groups[2]


def test_norm_bias_params_match_fastai():
    # fastai's own example (fastai/torch_core.py, norm_bias_params): biases anywhere, all of a norm layer
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.Conv1d(3, 4, 3))
    assert norm_bias_params(model) == [model[0].bias, model[1].weight, model[1].bias, model[2].bias]
    for arch in ("small", "resnet18"):
        model, _ = create_model(arch, 5)
        assert {id(p) for p in norm_bias_params(model)} == {id(p) for p in fastai.norm_bias_params(model)}
        bn_params = {id(p) for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))
                     for p in m.parameters()}
        assert {id(p) for p in norm_bias_params(model)} == bn_params  # Loupe's layers have no other biases


def test_small_groups_split_the_blocks_in_half():
    model, _ = create_model("small", 5)
    body = model[0]
    groups = [{id(p) for p in g} for g in param_groups(model)]
    assert {id(p) for p in body[:2].parameters()} == groups[0]
    assert {id(p) for p in body[2:].parameters()} == groups[1]


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_freeze_trains_only_batchnorm_and_head(arch):
    model, _ = create_model(arch, 4)
    body, head = model
    freeze(model)
    for m in body.modules():
        for p in m.parameters(recurse=False):
            assert p.requires_grad == isinstance(m, nn.BatchNorm2d), m
    assert all(p.requires_grad for p in head.parameters())
    first_conv = body[0] if arch == "resnet18" else body[0][0]
    assert not first_conv.weight.requires_grad
    bn = body[1] if arch == "resnet18" else body[3][1]
    assert bn.weight.requires_grad and bn.bias.requires_grad

    trainable, total = count_params(model)
    bn_and_head = sum(p.numel() for m in body.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    bn_and_head += sum(p.numel() for p in head.parameters())
    assert (trainable, total) == (bn_and_head, sum(p.numel() for p in model.parameters()))

    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    assert count_params(model) == (total, total)


def test_count_params_small_exact():
    model, _ = create_model("small", 10)
    convs = 9 * (3 * 32 + 32 * 64 + 64 * 128 + 128 * 256)
    bns = 2 * (32 + 64 + 128 + 256)
    head = 2 * 512 + 512 * 512 + 2 * 512 + 512 * 10
    assert count_params(model) == (convs + bns + head, convs + bns + head)


# ---------------------------------------------------------------- pretrained weights from the cache

def test_weights_file_honours_torch_home(tmp_path):
    assert weights_file("resnet18") == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert weights_file("resnet50").name == "resnet50-0676ba61.pth"


def test_pretrained_loads_cached_weights():
    state = seeded_resnet18_state()
    path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model, info = create_model("resnet18", 10, pretrained=True)
    assert info.pretrained and info.message == ""
    assert torch.equal(model[0][0].weight, state["conv1.weight"])
    assert torch.equal(model[0][7][1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_pretrained_offline_trains_from_scratch():
    model, info = create_model("resnet34", 10, pretrained=True)
    assert not info.pretrained
    assert "resnet34" in info.message and "offline" in info.message and "from scratch" in info.message
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not weights_file("resnet34").exists()
    assert list(weights_file("resnet34").parent.glob("*.part")) == []


def test_small_has_no_pretrained_weights():
    _, info = create_model("small", 10, pretrained=True)
    assert not info.pretrained and "from scratch" in info.message
    with pytest.raises(UserError):
        weights_file("small")


def test_wrong_layers_in_weights_file_fall_back():
    path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    _, info = create_model("resnet18", 10, pretrained=True)
    assert not info.pretrained and "do not match" in info.message and "from scratch" in info.message


TRAP: list[str] = []


def spring_trap() -> None:
    TRAP.append("unpickled!")


class Booby:
    """Unpickling an instance runs spring_trap: what a malicious weights file could do."""

    def __reduce__(self):
        return spring_trap, ()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_never_unpickled(tmp_path):
    raw = pickle.dumps(Booby())
    pickle.loads(raw)  # the trap works when unpickled the unsafe way
    assert TRAP == ["unpickled!"]
    TRAP.clear()

    path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(Booby(), path)  # torch's own zip format, holding the object
    with pytest.raises(UserError, match="not a weights file"):
        load_weights_file(path)
    _, info = create_model("resnet18", 10, pretrained=True)
    assert not info.pretrained and "not a weights file" in info.message

    plain = tmp_path / "plain.pth"
    plain.write_bytes(raw)  # a bare pickle
    with pytest.raises(UserError, match="not a weights file"):
        load_weights_file(plain)
    assert TRAP == []


def test_random_bytes_and_non_tensors_are_not_weights(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UserError, match="not a weights file"):
        load_weights_file(junk)
    numbers = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [2, 3]}, numbers)  # loads safely, but holds no tensors
    with pytest.raises(UserError, match="not a weights file"):
        load_weights_file(numbers)
    ok = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(3.0)}, ok)
    assert torch.equal(load_weights_file(ok)["w"], torch.arange(3.0))


# ---------------------------------------------------------------- downloads from a local server

class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving `files` (path -> bytes) and counting requests.

    extra_length > 0 announces more bytes than are sent, like a connection that drops mid-download.
    """

    def __init__(self, files: dict[str, bytes], extra_length: int = 0):
        server = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + extra_length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def state_bytes() -> bytes:
    """A 2.5 MiB state dict as torch.save writes it: three 1 MiB download chunks."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(655_360, dtype=torch.float32)}, buf)
    return buf.getvalue()


def test_download_weights_streams_checks_and_caches(tmp_path):
    data = state_bytes()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    calls = []
    with Server({f"/models/{name}": data}) as server:
        path = download_weights("resnet18", progress=lambda done, total: calls.append((done, total)),
                                url=f"{server.url}/models/{name}")
        assert path == tmp_path / "torch" / "hub" / "checkpoints" / name
        assert path.read_bytes() == data
        assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert len(calls) == 1 + -(-len(data) // (1 << 20))
        assert len(server.requests) == 1
        assert download_weights("resnet18", url=f"{server.url}/models/{name}") == path
        assert len(server.requests) == 1  # cached: no second request
    assert torch.equal(load_weights_file(path)["w"], torch.arange(655_360, dtype=torch.float32))


def test_download_with_wrong_hash_is_refused():
    data = state_bytes()
    wrong = "0" * 8 if not hashlib.sha256(data).hexdigest().startswith("0" * 8) else "f" * 8
    name = f"resnet18-{wrong}.pth"
    with Server({f"/models/{name}": data}) as server:
        with pytest.raises(UserError, match="damaged"):
            download_weights("resnet18", url=f"{server.url}/models/{name}")
    folder = weights_file("resnet18").parent
    assert list(folder.iterdir()) == []  # neither the file nor its .part is left


def test_interrupted_download_leaves_nothing():
    data = state_bytes()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    with Server({f"/models/{name}": data}, extra_length=1000) as server:
        with pytest.raises(UserError, match="weights"):
            download_weights("resnet18", url=f"{server.url}/models/{name}")
    assert list(weights_file("resnet18").parent.iterdir()) == []


def test_download_errors_are_user_errors():
    with Server({}) as server:
        with pytest.raises(UserError, match="404"):
            download_weights("resnet18", url=f"{server.url}/models/resnet18-f37072fd.pth")
    with pytest.raises(UserError, match="offline"):
        download_weights("resnet18")  # LOUPE_WEIGHTS_URL points at a closed port
    assert list(weights_file("resnet18").parent.iterdir()) == []


def test_pretrained_downloads_through_create_model(monkeypatch):
    """create_model fetches the weights from LOUPE_WEIGHTS_URL, reporting progress, and loads them."""
    state = seeded_resnet18_state(seed=1)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url",
                        f"https://example.invalid/resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth")
    name = weights_file("resnet18").name
    calls = []
    with Server({f"/models/{name}": data}) as server:
        monkeypatch.setenv("LOUPE_WEIGHTS_URL", f"{server.url}/models/")
        model, info = create_model("resnet18", 10, pretrained=True, progress=lambda d, t: calls.append((d, t)))
    assert info.pretrained
    assert calls[-1] == (len(data), len(data))
    assert torch.equal(model[0][0].weight, state["conv1.weight"])


# ---------------------------------------------------------------- the small model learns

@pytest.fixture
def one_thread():
    """One torch thread: on a small, busy CPU, threads waiting on each other cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_small_model_learns_digits(one_thread):
    images, targets = digit_images(28)
    x = torch.from_numpy(images[:512]).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    x, y = normalize(x), torch.from_numpy(targets[:512])
    torch.manual_seed(0)
    model, _ = create_model("small", 10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, 512, (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9, accuracy


def test_weights_status_is_known_before_a_run(tmp_path, monkeypatch):
    """Here, downloadable from a server, or unavailable (offline) — said at the model choice, before training."""
    from engine.train.models import weights_file, weights_status

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = weights_file("resnet18").name
    with Server({f"/models/{name}": b"x" * 1234}) as server:
        monkeypatch.setenv("LOUPE_WEIGHTS_URL", f"{server.url}/models")
        status = weights_status("resnet18")
        assert (status.state, status.size) == ("downloadable", 1234)
        assert server.requests == [f"/models/{name}"]
        assert weights_status("resnet34").state == "unavailable"  # 404 here
    monkeypatch.setenv("LOUPE_WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}/models")
    offline = weights_status("resnet18")
    assert offline.state == "unavailable" and "offline" in offline.reason
    weights_file("resnet18").parent.mkdir(parents=True)
    weights_file("resnet18").write_bytes(b"w" * 10)
    assert weights_status("resnet18").state == "local"
    assert weights_status("small").state == "unavailable"
