"""fastai 2.8's algorithms written out independently in plain Python, as references for the tests.

Nothing here is Loupe's code and nothing here is imported by Loupe: each function transcribes one
piece of fastai's source (cited in its docstring) so that a test can compare Loupe's answer with
fastai's on the same inputs. fastai computes its suggestions in float32 tensors; these use Python
floats, like Loupe, so the comparisons are exact.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

BETA = 0.98  # fastai/learner.py: Recorder(beta=0.98) -> AvgSmoothLoss


def lr_finder_record(raw_losses, num_it=100, start_lr=1e-7, end_lr=10.0, stop_div=True):
    """The (lrs, smoothed losses) fastai's Recorder holds after `learn.fit(n, cbs=LRFinder(...))`.

    fastai/callback/schedule.py, LRFinder: num_it < 6 becomes 6; before_batch sets
    lr = SchedExp(start, end)(train_iter / num_it); after_batch (after the Recorder appended the
    point) updates best_loss when smooth < best, cancels the fit when smooth > 4 * best and stop_div,
    and when train_iter >= num_it. fastai/learner.py, AvgSmoothLoss: val = lerp(loss, val, beta),
    value = val / (1 - beta**count), reset at before_fit.
    """
    num_it = max(num_it, 6)
    lrs, losses = [], []
    val, best = 0.0, float("inf")
    for train_iter, loss in enumerate(raw_losses):
        lrs.append(start_lr * (end_lr / start_lr) ** (train_iter / num_it))
        val = BETA * val + (1 - BETA) * loss
        smooth = val / (1 - BETA ** (train_iter + 1))
        losses.append(smooth)
        if smooth < best:
            best = smooth
        if smooth > 4 * best and stop_div:
            break
        if train_iter + 1 >= num_it:
            break
    return lrs, losses


def lr_find_points(lrs, losses, num_it=100):
    """The points fastai's lr_find hands to the suggestion functions (fastai/callback/schedule.py, lr_find).

    lrs[num_it//10:-5] and losses[num_it//10:-5], with `num_it` as the caller passed it, then cut at
    the first NaN (torch.isnan: an inf is not cut).
    """
    lrs, losses = list(lrs[num_it // 10:-5]), list(losses[num_it // 10:-5])
    nans = [i for i, x in enumerate(losses) if math.isnan(x)]
    if nans:
        lrs, losses = lrs[:nans[0]], losses[:nans[0]]
    return lrs, losses


def valley(lrs, losses):
    """fastai/callback/schedule.py, valley: the lr it returns (lrs[-1] when its index is -1)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def minimum(lrs, losses):
    """fastai/callback/schedule.py, minimum: a tenth of the lr at the lowest loss (first one on ties)."""
    return float(lrs[int(np.argmin(losses))]) / 10


def steep(lrs, losses):
    """fastai/callback/schedule.py, steep: the lr starting the segment of most negative d(loss)/d(log lr)."""
    grads = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    return float(lrs[int(np.argmin(grads))])


def slide(lrs, losses, lr_diff=15, thresh=0.005, adjust_value=1.0):
    """fastai/callback/schedule.py, slide: negative indices from the end, as fastai writes it."""
    loss_grad = np.gradient(np.asarray(losses, dtype=np.float64))
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while l_idx >= -len(losses) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


SUGGESTIONS = {"valley": valley, "minimum": minimum, "steep": steep, "slide": slide}

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
              nn.InstanceNorm3d, nn.LayerNorm)  # fastai/torch_core.py, norm_types


def norm_bias_params(m: nn.Module, with_bias: bool = True) -> list:
    """fastai/torch_core.py, norm_bias_params: what Learner.create_opt marks do_wd=False (wd_bn_bias=False)."""
    if isinstance(m, NORM_TYPES):
        return list(m.parameters())
    res = [p for child in m.children() for p in norm_bias_params(child, with_bias)]
    if with_bias and getattr(m, "bias", None) is not None:
        res.append(m.bias)
    return res


def adam_step(p: torch.Tensor, grad: torch.Tensor, state: dict, lr: float, mom: float = 0.9, sqr_mom: float = 0.99,
              eps: float = 1e-5, wd: float = 0.01, do_wd: bool = True) -> torch.Tensor:
    """fastai/optimizer.py, Adam: weight_decay (decoupled), average_grad(dampening=True), average_sqr_grad,
    step_stat, adam_step with debias; in float64 on a copy. `state` carries grad_avg, sqr_avg, step."""
    p, grad = p.double().clone(), grad.double()
    if do_wd and wd != 0:
        p.mul_(1 - lr * wd)
    state["grad_avg"] = state.get("grad_avg", torch.zeros_like(p)) * mom + (1 - mom) * grad
    state["sqr_avg"] = state.get("sqr_avg", torch.zeros_like(p)) * sqr_mom + (1 - sqr_mom) * grad * grad
    state["step"] = state.get("step", 0) + 1
    debias1 = (1 - mom) * (1 - mom ** state["step"]) / (1 - mom)
    debias2 = (1 - sqr_mom) * (1 - sqr_mom ** state["step"]) / (1 - sqr_mom)
    return p - lr / debias1 * state["grad_avg"] / ((state["sqr_avg"] / debias2).sqrt() + eps)


def concat_pool(x: torch.Tensor) -> torch.Tensor:
    """fastai/layers.py, AdaptiveConcatPool2d.forward: torch.cat([max pool, avg pool], 1)."""
    return torch.cat([nn.AdaptiveMaxPool2d(1)(x), nn.AdaptiveAvgPool2d(1)(x)], 1)
