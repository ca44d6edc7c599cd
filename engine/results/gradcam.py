"""Grad-CAM: which parts of an image made the model choose a class (Selvaraju et al., 2017).

The class score's gradient with respect to the last conv block's activations A [B, K, h, w] is
averaged over the positions to weigh each channel; the map is ReLU(Σ_k weight_k · A_k), upsampled to
the image and scaled to [0, 1]. The model is left exactly as found: its train/eval modes, its
`requires_grad` flags and the `.grad` of its parameters. Inputs are prepared and modes switched as for
predictions (`engine.train.scoring`); `RunReview.grad_cam` takes items of a data set by their dls positions, and
`grad_cams` maps several layers in one pass (the Look inside page: one map per stage).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.train.scoring import eval_mode, model_device


@dataclass
class GradCams:
    """One pass of Grad-CAM at several layers: each layer's activations and map, and the model's outputs."""

    acts: list[torch.Tensor]  # per layer [B, K, h, w], detached
    maps: list[torch.Tensor]  # per layer [B, H, W] in [0, 1]
    logits: torch.Tensor  # [B, C], detached
    target: torch.Tensor  # [B] the class each map is of


def grad_cams(model: nn.Module, x: torch.Tensor, layers: list[nn.Module],
              target: torch.Tensor | None = None) -> GradCams:
    """Grad-CAM maps of a normalised batch x [B, 3, H, W] at each of `layers` (in the order they run), from one
    forward and one backward pass, for `target` (default: the predicted class)."""
    device = model_device(model)
    captured: dict[int, torch.Tensor] = {}

    def capture(i: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            # a fresh leaf where nothing before needs a gradient (frozen layers, an input without one): its
            # gradient is all we need, and parameter .grad is never touched (autograd.grad fills no .grad)
            a = output if output.requires_grad else output.detach().requires_grad_(True)
            captured[i] = a
            return a.clone()  # a later in-place op (ReLU(inplace=True)) must not modify what we differentiate by
        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    try:
        with eval_mode(model), torch.enable_grad():  # as for predictions: BatchNorm's running statistics, no dropout
            logits = model(x.to(device))
            if target is None:
                target = logits.argmax(dim=1)
            target = torch.as_tensor(target, device=device).long().expand(len(logits))
            score = logits.gather(1, target[:, None]).sum()  # items are independent in eval mode
            acts = [captured[i] for i in range(len(layers))]
            grads = torch.autograd.grad(score, acts, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    maps = []
    for a, g in zip(acts, grads):
        a = a.detach()
        g = torch.zeros_like(a) if g is None else g  # a layer the class score does not depend on
        weights = g.mean(dim=(2, 3), keepdim=True)  # [B, K, 1, 1]
        cam = F.relu((weights * a).sum(dim=1, keepdim=True))  # [B, 1, h, w]
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = cam / peak.clamp_min(torch.finfo(cam.dtype).tiny)  # an all-zero map stays zero
        maps.append(cam.clamp(0, 1).to(x.device))
    return GradCams(acts=[a.detach() for a in acts], maps=maps, logits=logits.detach(), target=target.detach())


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps [B, H, W] in [0, 1] of a normalised batch x [B, 3, H, W] for `target` (default: the predicted class)."""
    layer = model[0][-1] if layer is None else layer  # the body's last block
    return grad_cams(model, x, [layer], target).maps[0]


def jet(v: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] with shape [...] -> RGB [3, ...] in [0, 1]: dark blue, blue, cyan, yellow, red, dark red."""
    v = v.clamp(0, 1)
    return torch.stack([(1.5 - (4 * v - c).abs()).clamp(0, 1) for c in (3.0, 2.0, 1.0)])


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """An image [3, H, W] in [0, 1] blended with its map [H, W] in jet colours: (1 - alpha)·image + alpha·jet(cam)."""
    colours = jet(cam.to(device=image.device, dtype=torch.float32))
    return ((1 - alpha) * image.float() + alpha * colours).clamp(0, 1)
