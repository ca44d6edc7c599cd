"""Look inside the network: one picture followed through a run's model, stage by stage (in the spirit of CNN Explainer).

    inside = look_inside(exported, x)            # x: one normalised picture [1, 3, size, size]
    inside.layers[2].shape, inside.layers[2].top_channels, inside.layers[2].cam
    index = channel_index(review)                # every validation picture's mean activation per stage and channel
    index.top_pictures("block 2", 17)            # what channel 17 of block 2 responds to

The stages are the input (as the model sees it: resized and normalised), the body's blocks (the small model's four
blocks; a resnet's stem and its four residual stages) and the head. Each body stage gives its output shape
[C, H, W], its channels ranked by mean activation with their feature maps, and the Grad-CAM of the predicted class
at that stage (`engine.results.gradcam.grad_cams`: one pass for all stages). Everything is tensors and frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch import nn

from engine.data.augment import denormalize
from engine.data.images import open_image
from engine.errors import UserError
from engine.results.gradcam import grad_cams
from engine.results.review import RunReview
from engine.train.export import ExportedModel, preprocess
from engine.train.scoring import EVAL_BS, eval_mode, model_device

TOP_CHANNELS = 8  # feature maps shown per stage
TOP_PICTURES = 8  # validation pictures shown per channel
INPUT, HEAD = "input", "head"


@dataclass(frozen=True)
class Stage:
    """A stage of a model: a name, what it does in plain words, and the module whose output is its output."""

    name: str
    what: str
    module: nn.Module | None  # None for the input


@dataclass
class StageView:
    """One stage's output for one picture."""

    name: str
    what: str
    shape: tuple[int, int, int]  # [C, H, W] of its output
    means: torch.Tensor  # [C] mean activation of each channel (for the head: each class's score)
    top_channels: list[int]  # channels by mean activation, the most active first
    maps: torch.Tensor  # [k, H, W] the feature maps of top_channels, in that order
    cam: torch.Tensor | None  # [size, size] in [0, 1]: Grad-CAM of the predicted class here (None: input and head)


@dataclass
class Inside:
    """One picture followed through a model, from input to head."""

    image: torch.Tensor  # [3, size, size] in [0, 1]: the input as the model sees it, de-normalised to be shown
    layers: list[StageView]
    probs: torch.Tensor  # [n_classes]
    classes: list[str]

    @property
    def predicted(self) -> int:
        return int(self.probs.argmax())

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely classes with their probabilities, most likely first."""
        p = self.probs.topk(min(k, len(self.classes)))
        return [(self.classes[i], v) for v, i in zip(p.values.tolist(), p.indices.tolist())]

    def to_dict(self, k: int = 5) -> dict:
        """The CLI's JSON: {"layers": [{"name", "shape", "top_channels"}, …], "prediction": {"class", "probability", "top"}}."""
        top = self.top(k)
        return {"layers": [{"name": v.name, "shape": list(v.shape), "top_channels": v.top_channels} for v in self.layers],
                "prediction": {"class": top[0][0], "probability": round(top[0][1], 6),
                               "top": [[c, round(p, 6)] for c, p in top]}}


def stages(model: nn.Module, arch: str) -> list[Stage]:
    """The body's stages of a Loupe model (`nn.Sequential(body, head)`), first to last; the input and head not included."""
    body = model[0]
    if arch == "small":
        return [Stage(f"block {i + 1}", f"3×3 convolution with stride 2 (halves the side), BatchNorm, ReLU: "
                                        f"{block[0].out_channels} feature maps", block) for i, block in enumerate(body)]
    # a torchvision resnet cut before its pooling: conv1, bn1, relu, maxpool, layer1..layer4
    found = [Stage("stem", "7×7 convolution with stride 2, BatchNorm, ReLU, then 3×3 max pooling with stride 2: the "
                           "side shrinks 4 times", body[3])]
    for i, layer in enumerate(body[4:8]):
        found.append(Stage(f"stage {i + 1}", f"{len(layer)} residual blocks (torchvision's layer{i + 1})"
                                             + (": the first halves the side" if i else ""), layer))
    return found


def _ranked(acts: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
    """Mean activation of each channel of one picture's [C, H, W], and the k most active channels (ties: lower first)."""
    means = acts.float().mean(dim=(1, 2))
    order = torch.sort(means, descending=True, stable=True).indices[:k]
    return means, order.tolist()


def look_inside(exported: ExportedModel, x: torch.Tensor, k: int = TOP_CHANNELS) -> Inside:
    """One normalised picture x [1, 3, size, size] followed through the model: input, each stage, head, probabilities."""
    if x.dim() != 4 or len(x) != 1:
        raise ValueError(f"look_inside takes one picture [1, 3, H, W], got {list(x.shape)}")
    model, prep = exported.model, exported.preprocessing
    body = stages(model, prep["arch"])
    cams = grad_cams(model, x, [s.module for s in body])  # the predicted class, at every stage in one pass
    x = x.detach().cpu()
    means, top = _ranked(x[0], k)
    layers = [StageView(INPUT, "the picture, resized and normalised: one channel per colour (red, green, blue)",
                        tuple(x.shape[1:]), means, top, x[0, top], None)]
    for stage, acts, cam in zip(body, cams.acts, cams.maps):
        acts = acts[0].float().cpu()
        means, top = _ranked(acts, k)
        layers.append(StageView(stage.name, stage.what, tuple(acts.shape), means, top, acts[top], cam[0].cpu()))
    logits = cams.logits[0].float().cpu()
    means, top = _ranked(logits[:, None, None], k)
    layers.append(StageView(HEAD, "pooling, then two fully connected layers: one score per class", (len(logits), 1, 1),
                            means, top, logits[top][:, None, None], None))
    image = denormalize(x, prep["mean"], prep["std"])[0].clamp(0, 1)
    return Inside(image=image, layers=layers, probs=logits.softmax(dim=0), classes=list(exported.classes))


def look_inside_image(exported: ExportedModel, img: Image.Image, k: int = TOP_CHANNELS) -> Inside:
    """A picture (any size, any colour mode) followed through the model, prepared as for predictions."""
    return look_inside(exported, preprocess([img], exported.preprocessing), k)


def look_inside_file(exported: ExportedModel, path: str | Path, k: int = TOP_CHANNELS) -> Inside:
    """A picture file followed through the model; UserError if it is not a picture Loupe can read."""
    try:
        img = open_image(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a picture Loupe can read ({e}).") from e
    return look_inside_image(exported, img, k)


# ---------------------------------------------------------------- what a channel responds to

@dataclass
class ChannelIndex:
    """Every validation picture's mean activation per stage and channel: what each channel responds to."""

    means: dict[str, torch.Tensor]  # stage name -> [N, C], the input and every body stage
    pos: torch.Tensor  # [N] dls position of each validation picture
    items: list[str]  # [N] its relative path
    labels: list[str]  # [N] its label

    def top_pictures(self, stage: str, channel: int, k: int = TOP_PICTURES) -> pd.DataFrame:
        """The k validation pictures that activate `channel` of `stage` most, most first (ties keep their order).

        Columns: item, label, activation (the channel's mean over the picture), pos (in the review's dls)."""
        if stage not in self.means:
            raise KeyError(f"no stage named {stage!r}; the stages are {', '.join(self.means)}")
        column = self.means[stage][:, channel]
        order = torch.sort(column, descending=True, stable=True).indices[:k]
        return pd.DataFrame({"item": [self.items[i] for i in order.tolist()],
                             "label": [self.labels[i] for i in order.tolist()],
                             "activation": column[order].tolist(), "pos": self.pos[order].tolist()})


def channel_index(review: RunReview, bs: int = EVAL_BS) -> ChannelIndex:
    """Mean activation of every channel of the input and every body stage, for each validation picture of a review."""
    model = review.exported.model
    body = stages(model, review.exported.preprocessing["arch"])
    pos = review.valid_pos
    collected: dict[str, list[torch.Tensor]] = {INPUT: [], **{s.name: [] for s in body}}

    def keep(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            collected[name].append(output.float().mean(dim=(2, 3)).cpu())
        return hook

    handles = [s.module.register_forward_hook(keep(s.name)) for s in body]
    device = model_device(model)
    try:
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(pos), bs):
                x = review.model_input(pos[start:start + bs])
                collected[INPUT].append(x.float().mean(dim=(2, 3)))
                model(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
    means = {name: torch.cat(parts) if parts else torch.zeros(0, 0) for name, parts in collected.items()}
    items = review.dls.items
    return ChannelIndex(means=means, pos=pos.clone(), items=[items.rel_paths[i] for i in pos.tolist()],
                        labels=[items.labels[i] for i in pos.tolist()])
