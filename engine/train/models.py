"""Models like fastai's vision_learner: a body (a resnet cut before its pooling, or a small convnet) and fastai's head.

The model is `nn.Sequential(body, head)`; its parameters fall into three groups (early body, late body,
head) for discriminative learning rates, and `freeze` keeps everything but the head and the BatchNorm
layers fixed, as fastai does for a pretrained body. ImageNet weights come from torchvision's download
address into torchvision's own cache folder, read with `weights_only=True` (never unpickled).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from engine.errors import UserError, plain_reason

ARCHS: dict[str, str] = {
    "small": "A small convnet of 4 blocks: trains from scratch in seconds on a CPU; good for small, simple images.",
    "resnet18": "ResNet-18: the smallest ResNet; quick, and strong when started from ImageNet weights.",
    "resnet34": "ResNet-34: fastai's usual first choice; a little slower than ResNet-18, often a little better.",
    "resnet50": "ResNet-50: larger and slower; worth it for big data sets and a GPU.",
}

_RESNETS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}
SMALL_CHANNELS = (32, 64, 128, 256)
WEIGHTS_URL_ENV = "LOUPE_WEIGHTS_URL"  # a base address to fetch weights from instead of download.pytorch.org
CHUNK = 1 << 20  # download in 1 MiB pieces
HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torchvision's file names carry a sha256 prefix: resnet18-f37072fd.pth
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NORM_TYPES = (*BN_TYPES, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm)  # fastai's norm_types
POOLS = ("max_avg", "avg_max")  # the concat pool's order: fastai's, and Loupe's before it matched fastai
Progress = Callable[[int, int | None], None]


@dataclass
class ModelInfo:
    arch: str
    n_classes: int
    pretrained: bool  # True only if ImageNet weights were actually loaded into the body
    message: str = ""  # plain-language note for the UI, e.g. why pretrained weights were not used
    n_features: int = 0  # channels out of the body


# ---------------------------------------------------------------- the head

class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling to 1×1, side by side: [B, C, H, W] -> [B, 2C, 1, 1] (max first, as fastai).

    order="avg_max" puts the average first: the layout of models exported by earlier Loupe versions.
    """

    def __init__(self, order: str = "max_avg") -> None:
        super().__init__()
        if order not in POOLS:
            raise ValueError(f"unknown pooling order {order!r}; expected one of {POOLS}")
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.cat([mx, avg] if self.order == "max_avg" else [avg, mx], dim=1)

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


def create_head(n_features: int, n_classes: int, pool: str = "max_avg") -> nn.Sequential:
    """fastai's default head: concat pool, then BatchNorm-Dropout-Linear twice (512 hidden units)."""
    nf = 2 * n_features
    head = nn.Sequential(
        AdaptiveConcatPool2d(pool),
        nn.Flatten(),
        nn.BatchNorm1d(nf),
        nn.Dropout(0.25),
        nn.Linear(nf, 512, bias=False),  # fastai: no bias where a BatchNorm comes first (LinBnDrop bias=not bn)
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(0.5),
        nn.Linear(512, n_classes, bias=False),
    )
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)  # fastai's apply_init
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)  # fastai's BatchNorm(): weight 1, bias 1e-3
            nn.init.constant_(m.bias, 1e-3)
    return head


# ---------------------------------------------------------------- bodies

def small_body(channels: tuple[int, ...] = SMALL_CHANNELS) -> nn.Sequential:
    """Blocks of conv3×3 stride 2 → BatchNorm → ReLU; each block halves the image side (28 px → 14, 7, 4, 2)."""
    blocks, c_in = [], 3
    for c_out in channels:
        blocks.append(nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        ))
        c_in = c_out
    body = nn.Sequential(*blocks)
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return body


def resnet_body(net: nn.Module) -> nn.Sequential:
    """A torchvision resnet without its avgpool and fc: conv1, bn1, relu, maxpool, layer1..layer4."""
    return nn.Sequential(*list(net.children())[:-2])


# ---------------------------------------------------------------- pretrained weights

def _check_resnet(arch: str) -> None:
    if arch not in _RESNETS:
        have = ", ".join(_RESNETS)
        raise UserError(f"There are no pretrained weights for the model “{arch}”; only for {have}.")


def has_pretrained_weights(arch: str) -> bool:
    """Whether ImageNet weights exist for this model (the ResNets; never the small convnet)."""
    return arch in _RESNETS


def weights_url(arch: str) -> str:
    """Where the ImageNet weights of `arch` are downloaded from (LOUPE_WEIGHTS_URL replaces the server)."""
    _check_resnet(arch)
    url = _RESNETS[arch][1].url
    base = os.environ.get(WEIGHTS_URL_ENV)
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def _checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of `arch` (TORCH_HOME/hub/checkpoints/<file>)."""
    return _checkpoints_dir() / weights_url(arch).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a run can start from ImageNet weights: "local" (on this computer), "downloadable", or "unavailable"."""

    state: str
    size: int | None = None  # bytes, when known
    reason: str = ""  # why they are unavailable


def weights_status(arch: str, timeout: float = 3.0) -> WeightsStatus:
    """Look before a run: are the ImageNet weights of `arch` here, or can they be downloaded now? (Only the
    server's answer is read, never the file.)"""
    if arch not in _RESNETS:
        return WeightsStatus("unavailable", reason=f"{arch} has no pretrained weights")
    path = weights_file(arch)
    if path.exists():
        return WeightsStatus("local", size=path.stat().st_size)
    try:
        with urllib.request.urlopen(weights_url(arch), timeout=timeout) as response:  # headers only
            length = response.headers.get("Content-Length")
            return WeightsStatus("downloadable", size=int(length) if length and length.isdigit() else None)
    except urllib.error.HTTPError as e:
        return WeightsStatus("unavailable", reason=f"the server answered “{e.code} {e.reason}”")
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError, ValueError) as e:
        return WeightsStatus("unavailable", reason=f"this computer seems to be offline ({_reason(e)})")


def download_weights(arch: str, progress: Progress | None = None, timeout: float = 30,
                     url: str | None = None) -> Path:
    """The weights file of `arch`, downloaded once into torchvision's cache and checked against its hash."""
    url = url or weights_url(arch)
    dest = _checkpoints_dir() / url.rsplit("/", 1)[-1]
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    sha = hashlib.sha256()
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                if progress is not None:
                    progress(done, total)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    sha.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except urllib.error.HTTPError as e:
            raise UserError(f"The server for the {arch} weights answered “{e.code} {e.reason}” ({url}).") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as e:
            raise UserError(f"The {arch} weights could not be downloaded: this computer seems to be offline, "
                            f"or {url} is unreachable ({_reason(e)}).") from e
        except OSError as e:  # the cache folder cannot be written
            raise UserError(f"The {arch} weights could not be saved in {dest.parent} ({plain_reason(e)}).") from e
        if total is not None and done != total:
            raise UserError(f"The download of the {arch} weights stopped early ({done:,} of {total:,} bytes).")
        expected = HASH_IN_NAME.search(dest.name)
        if expected and not sha.hexdigest().startswith(expected.group(1)):
            raise UserError(f"The downloaded file for the {arch} weights is damaged (its checksum does not match); "
                            "it has been removed.")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _reason(e: Exception) -> str:
    """Why a connection failed, in words (never an errno code)."""
    return plain_reason(e)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict (names -> tensors) read safely from `path`: only tensors, never arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a bad file; all mean the same to the user
        raise UserError(f"{path} is not a weights file that can be read safely: it is damaged, or not a file of "
                        "weights.") from e
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"{path} is not a weights file: it does not hold named tensors.")
    return state


def _pretrained_resnet(arch: str, progress: Progress | None) -> nn.Module:
    """A torchvision resnet with ImageNet weights loaded; UserError if they cannot be had."""
    state = load_weights_file(download_weights(arch, progress))
    net = _RESNETS[arch][0](weights=None)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # wrong names or shapes
        raise UserError(f"{weights_file(arch).name} does not hold {arch} weights (its layers do not match).") from e
    return net


# ---------------------------------------------------------------- the model

def create_model(arch: str, n_classes: int, pretrained: bool = False, progress: Progress | None = None,
                 pool: str = "max_avg") -> tuple[nn.Module, ModelInfo]:
    """`nn.Sequential(body, head)` for `arch`; falls back to random weights (with a message) if pretrained ones are unavailable.

    `pool` is the head's concat-pool order; only models exported before Loupe matched fastai need "avg_max".
    """
    if arch not in ARCHS:
        raise UserError(f"Unknown model “{arch}”; choose one of {', '.join(ARCHS)}.")
    if n_classes < 2:
        raise UserError(f"A classifier needs at least 2 classes; this data set has {n_classes}.")
    loaded, message = False, ""
    if arch == "small":
        body, n_features, split_at = small_body(), SMALL_CHANNELS[-1], len(SMALL_CHANNELS) // 2
        if pretrained:
            message = "The small model has no pretrained weights: it trains from scratch; all layers will be trained."
    else:
        net = None
        if pretrained:
            try:
                net, loaded = _pretrained_resnet(arch, progress), True
            except UserError as e:
                message = (f"Pretrained ImageNet weights for {arch} are not available. {e} "
                           "Training from scratch instead; all layers will be trained.")
        net = net or _RESNETS[arch][0](weights=None)
        body, n_features, split_at = resnet_body(net), net.fc.in_features, 6
    body.split_at = split_at  # where param_groups cuts the body into early and late layers
    model = nn.Sequential(body, create_head(n_features, n_classes, pool))
    return model, ModelInfo(arch=arch, n_classes=n_classes, pretrained=loaded, message=message, n_features=n_features)


def param_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's three groups: early body, late body, head (resnets split at body[6], i.e. after layer2)."""
    body, head = model[0], model[1]
    cut = body.split_at
    return [list(body[:cut].parameters()), list(body[cut:].parameters()), list(head.parameters())]


def norm_bias_params(model: nn.Module) -> list[nn.Parameter]:
    """fastai's norm_bias_params: every parameter of a normalisation layer and every bias (no weight decay on these)."""
    out = []
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            out += list(m.parameters(recurse=False))
        elif isinstance(getattr(m, "bias", None), nn.Parameter):
            out.append(m.bias)
    return out


def freeze(model: nn.Module) -> None:
    """Train only the last group and every BatchNorm layer (fastai's freeze with train_bn=True)."""
    frozen = {id(p) for group in param_groups(model)[:-1] for p in group}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(id(p) not in frozen or isinstance(m, BN_TYPES))


def unfreeze(model: nn.Module) -> None:
    """Train every parameter."""
    for p in model.parameters():
        p.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
