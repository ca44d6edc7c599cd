"""Tests for engine/results/gradcam.py: shapes and ranges, the model left untouched, and a map checked against a hand computation."""
import torch
import torch.nn.functional as F
from torch import nn

from engine.results.gradcam import grad_cam, jet, overlay
from engine.train.models import create_model, freeze


def _check_maps(cam: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert cam.shape == shape and cam.dtype == torch.float32
    assert cam.min() >= 0 and cam.max() <= 1
    peaks = cam.amax(dim=(1, 2))
    assert all(p == 1 or p == 0 for p in peaks.tolist())  # each map scaled by its own maximum


def test_small_model_maps_have_the_image_size():
    torch.manual_seed(0)
    model, _ = create_model("small", 10)
    x = torch.randn(3, 3, 28, 28)
    _check_maps(grad_cam(model, x), (3, 28, 28))
    _check_maps(grad_cam(model, x, target=torch.tensor([0, 1, 2])), (3, 28, 28))
    # another layer, one followed by an in-place ReLU
    _check_maps(grad_cam(model, x, layer=model[0][-1][1]), (3, 28, 28))


def test_resnet18_maps_have_the_image_size():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 3)
    _check_maps(grad_cam(model, torch.randn(2, 3, 64, 64)), (2, 64, 64))


def test_the_model_is_left_as_found():
    torch.manual_seed(0)
    model, _ = create_model("small", 10)
    x = torch.randn(4, 3, 28, 28)
    freeze(model)  # a mix of trainable and frozen parameters
    model.train()
    model(x).sum().backward()  # some parameters now hold a .grad, the frozen ones none
    model[1].eval()  # a mix of modes
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    cam = grad_cam(model, x)
    with torch.no_grad():  # Grad-CAM needs gradients even where the caller switched them off
        assert torch.equal(grad_cam(model, x), cam)

    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for before, p in zip(grads, model.parameters()):
        assert (p.grad is None) if before is None else torch.equal(p.grad, before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm statistics too
    # and the maps are those of eval mode: the default target is the eval-mode prediction
    model.eval()
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    assert torch.equal(cam, grad_cam(model, x, target=predicted))


class QuadrantScores(nn.Module):
    """Class 0: green anywhere (channel 1, averaged); class 1: red in the top-left quadrant only (channel 0)."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        return torch.stack([a[:, 1].mean((1, 2)), a[:, 0, :h // 2, :w // 2].sum((1, 2))], dim=1)


def colour_model() -> nn.Module:
    """A body of one block (2×2 conv, stride 2: a red and a green detector, then ReLU) and the head above."""
    conv = nn.Conv2d(3, 2, kernel_size=2, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0], conv.weight[0, 1] = 0.25, -0.25  # red minus green
        conv.weight[1, 1], conv.weight[1, 0] = 0.25, -0.25  # green minus red
    return nn.Sequential(nn.Sequential(nn.Sequential(conv, nn.ReLU())), QuadrantScores())


def test_the_map_points_at_what_the_class_looks_at():
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, 2:6, 1:7] = 1.0  # a red patch in the top-left quadrant
    x[0, 1, 9:15, 10:14] = 1.0  # a green patch in the bottom-right one
    model = colour_model()
    red, green = grad_cam(model, x, target=torch.tensor([1]))[0], grad_cam(model, x, target=torch.tensor([0]))[0]

    def quadrants(cam):
        return [cam[:8, :8].mean(), cam[:8, 8:].mean(), cam[8:, :8].mean(), cam[8:, 8:].mean()]

    top_left, *others = quadrants(red)
    assert all(top_left > q for q in others)
    bottom_right = quadrants(green)[3]
    assert all(bottom_right > q for q in quadrants(green)[:3])

    # by hand: class 1's gradient is 1 on the top-left quarter of channel 0 and 0 elsewhere, so the channel
    # weights are (1/4, 0) and the map is the red detector's activation, upsampled and scaled to a peak of 1
    acts = model[0](x)
    expected = F.interpolate(acts[:, :1], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(red, expected / expected.max(), atol=1e-6)
    # the default target is the predicted class: here class 1 (scores 0.09 and 6)
    assert torch.allclose(model(x), torch.tensor([[6 / 64, 6.0]]))
    assert torch.equal(grad_cam(model, x)[0], red)


def test_a_map_with_nothing_to_show_stays_zero():
    cam = grad_cam(colour_model(), torch.zeros(2, 3, 16, 16), target=torch.tensor([0, 1]))
    assert cam.shape == (2, 16, 16) and torch.equal(cam, torch.zeros(2, 16, 16))


def test_jet_colours():
    v = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.equal(jet(v).T, torch.tensor([
        [0.0, 0.0, 0.5],  # dark blue
        [0.0, 0.5, 1.0],
        [0.5, 1.0, 0.5],
        [1.0, 0.5, 0.0],
        [0.5, 0.0, 0.0],  # dark red
    ]))


def test_overlay_blends_the_image_and_the_colours():
    torch.manual_seed(0)
    image, cam = torch.rand(3, 20, 24), torch.rand(20, 24)
    out = overlay(image, cam, alpha=0.4)
    assert out.shape == (3, 20, 24) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out, 0.6 * image + 0.4 * jet(cam))
    assert torch.equal(overlay(image, cam, alpha=0.0), image)
    black = overlay(torch.zeros(3, 2, 2), torch.ones(2, 2), alpha=0.5)
    assert torch.equal(black[:, 0, 0], torch.tensor([0.25, 0.0, 0.0]))
