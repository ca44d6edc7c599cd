"""The training loss's smoothing, the LR finder's stop rule, and its suggestions: pure functions, as in fastai.

`smooth_step` and `diverged` are what the fit loop and the LR finder run, batch by batch.
Every suggestion function takes the finder's *whole* record and prepares it itself with `trim`,
exactly as fastai's `lr_find` does before calling its `valley`, `minimum`, `steep` and `slide`.
Pass the `num_it` the finder was asked for: when a run stopped early on divergence, fastai still
drops `num_it // 10` points from the start, not a tenth of what was recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import UserError

SMOOTH_BETA = 0.98  # fastai's Recorder: AvgSmoothLoss(beta=0.98)
SKIP_END = 5  # fastai drops the last 5 points: the loss is usually exploding there
LR_DIFF = 15  # slide's default window, in points


class LRFinderError(UserError, ValueError):
    """The finder's record is too short (or all NaN) to suggest a learning rate."""


@dataclass(frozen=True)
class Suggestion:
    """One suggested learning rate and the point to mark on the loss-vs-LR plot."""
    name: str  # "valley" | "minimum" | "steep" | "slide"
    lr: float
    loss: float  # smoothed loss at the suggested point; for minimum, the minimum loss itself
    explanation: str  # one plain sentence for people who do not program


EXPLANATIONS = {
    "valley": "Valley: halfway down the longest stretch where the loss keeps falling (fastai's default). "
              "If the loss falls only once, right at the start, Loupe suggests the smallest learning rate where "
              "fastai would suggest the largest.",
    "minimum": "Minimum ÷ 10: one tenth of the learning rate where the loss was lowest.",
    "steep": "Steep: where the loss falls fastest (the steepest part of the curve).",
    "slide": "Slide: walking back from the end, the first place where the slope of the loss stops changing.",
}


def smooth_step(avg: float, loss: float, count: int, beta: float = SMOOTH_BETA) -> tuple[float, float]:
    """One batch of the debiased moving average: (new running average, smoothed loss of the first `count` losses)."""
    avg = beta * avg + (1 - beta) * loss
    return avg, avg / (1 - beta ** count)


def smooth_losses(raw: Sequence[float], beta: float = SMOOTH_BETA) -> np.ndarray:
    """The smoothed loss after each of the raw losses, as the fit loop reports them."""
    out = np.empty(len(raw), dtype=np.float64)
    avg = 0.0
    for count, loss in enumerate(raw, start=1):
        avg, out[count - 1] = smooth_step(avg, float(loss), count, beta)
    return out


def diverged(smoothed: float, best: float) -> bool:
    """fastai's stop_div test: the smoothed loss is more than 4 times the best smoothed loss so far.

    Like fastai, a NaN loss does not count as diverged (NaN compares false); `trim` cuts NaNs later.
    """
    return smoothed > 4 * best


def trim(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """fastai's preparation: keep lrs[num_it//10 : -5] and the matching losses, cut at the first NaN or inf.

    A NaN never stops fastai's finder (NaN > 4·best is false), so its record runs on to num_it, NaN from
    the first NaN on; Loupe's finder stops at that NaN instead. A record ending in NaN is therefore
    trimmed as if it ran to num_it: its last 5 points are counted from num_it, as fastai's are.
    Unlike fastai, an inf also cuts the record (fastai cuts only at NaN; with stop_div an inf ends its
    record and falls in the 5 points dropped, so the two differ only with stop_div=False).
    """
    lrs = np.asarray(lrs, dtype=np.float64).reshape(-1)
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    if len(lrs) != len(losses):
        raise LRFinderError(f"The finder recorded {len(lrs)} learning rates but {len(losses)} losses; they must match.")
    if num_it is None:
        num_it = len(lrs)
    end = max(num_it, len(losses)) if len(losses) and np.isnan(losses[-1]) else len(losses)
    lrs, losses = lrs[num_it // 10:end - SKIP_END], losses[num_it // 10:end - SKIP_END]
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        lrs, losses = lrs[:bad[0]], losses[:bad[0]]
    if len(losses) < 2:
        raise LRFinderError(
            f"The learning-rate finder left only {len(losses)} usable point(s) after dropping the first "
            f"{num_it // 10}, the last {SKIP_END} and everything from the first NaN/infinite loss on. "
            "Run it for more iterations, or start from a lower learning rate.")
    return lrs, losses


def valley(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> Suggestion:
    """fastai's valley: a point along the longest strictly decreasing stretch of the loss.

    One deliberate difference: when that stretch is just the first two points, fastai's index comes
    out as -1 and it answers the *largest* LR (where the loss usually explodes); Loupe answers the first.
    """
    lrs, losses = trim(lrs, losses, num_it)
    # lds[i]: length of the longest strictly decreasing subsequence (not necessarily contiguous) ending at i
    lds = np.ones(len(losses), dtype=np.int64)
    for i in range(1, len(losses)):
        higher_before = lds[:i][losses[:i] > losses[i]]
        if len(higher_before):
            lds[i] = higher_before.max() + 1
    end = int(np.argmax(lds))  # first index of the longest, like fastai's strict '<' update
    length = int(lds[end])
    start = end - length  # fastai's convention: one before the subsequence's first possible point
    idx = start + length // 3 + length // 6
    # idx is -1 when the longest run is the first two points (fastai's lrs[-1]); or when the loss never
    # falls (length 1), where fastai's own bookkeeping gives 0. Both answer the first point here.
    idx = max(idx, 0)
    return Suggestion("valley", float(lrs[idx]), float(losses[idx]), EXPLANATIONS["valley"])


def minimum(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> Suggestion:
    """fastai's minimum: one tenth of the LR where the loss is lowest."""
    lrs, losses = trim(lrs, losses, num_it)
    idx = int(np.argmin(losses))
    return Suggestion("minimum", float(lrs[idx]) / 10, float(losses[idx]), EXPLANATIONS["minimum"])


def steep(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> Suggestion:
    """fastai's steep: the LR at the left end of the segment where d(loss)/d(log lr) is most negative."""
    lrs, losses = trim(lrs, losses, num_it)
    slopes = np.diff(losses) / np.diff(np.log(lrs))  # one per segment [i, i+1]
    idx = int(np.argmin(slopes))
    return Suggestion("steep", float(lrs[idx]), float(losses[idx]), EXPLANATIONS["steep"])


def slide(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None,
          lr_diff: int = LR_DIFF, thresh: float = 0.005, adjust_value: float = 1.0) -> Suggestion:
    """fastai's slide rule: slide a window of lr_diff points left until the slopes at its ends agree."""
    lrs, losses = trim(lrs, losses, num_it)
    if len(losses) <= lr_diff:
        raise LRFinderError(
            f"The slide rule needs more than {lr_diff} usable points but the finder left {len(losses)}. "
            "Run the finder for more iterations.")
    grad = np.gradient(losses)  # per step, not per log-LR: thresh is in loss units per step
    right = len(losses) - 1
    left = right - lr_diff
    pick = left
    while left >= 0 and abs(grad[right] - grad[left]) > thresh:
        pick = left
        left -= 1
        right -= 1
    lr = float(lrs[pick]) * adjust_value
    loss = float(np.interp(np.log10(lr), np.log10(lrs), losses))
    return Suggestion("slide", lr, loss, EXPLANATIONS["slide"])


def suggest_all(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> dict[str, Suggestion]:
    """All four suggestions by name; slide is left out when too few points remain for its window."""
    out = {
        "valley": valley(lrs, losses, num_it),
        "minimum": minimum(lrs, losses, num_it),
        "steep": steep(lrs, losses, num_it),
    }
    if len(trim(lrs, losses, num_it)[0]) > LR_DIFF:
        out["slide"] = slide(lrs, losses, num_it)
    return out


def _times(r: float) -> str:
    """3.04 → 'about 3×', 12.6 → '13×'."""
    return f"{r:,.0f}×" if r >= 10 else f"about {r:.1f}×".replace(".0×", "×")


def compare(suggestions: dict[str, Suggestion]) -> dict[str, str]:
    """For each suggestion, one sentence on where its rate sits among the others and next to the curve's lowest point.

    Derived from the values, never from the name: on a curve that falls only at its start, steep can be the smallest
    rate of all, and is then the most cautious one, not a bold one.
    """
    if not suggestions:
        return {}
    by_lr = sorted(suggestions, key=lambda n: suggestions[n].lr)
    lowest_at = suggestions["minimum"].lr * 10 if "minimum" in suggestions else None  # where the loss was lowest
    ref = suggestions.get("valley")
    out = {}
    for name, s in suggestions.items():
        parts = []
        if len(by_lr) > 1 and suggestions[by_lr[0]].lr < suggestions[by_lr[-1]].lr:
            if name == by_lr[0] or s.lr == suggestions[by_lr[0]].lr:
                parts.append("The smallest rate suggested: the most cautious, slowest to learn.")
            elif name == by_lr[-1] or s.lr == suggestions[by_lr[-1]].lr:
                parts.append("The largest rate suggested: the boldest.")
        if ref is not None and name != "valley":
            r = s.lr / ref.lr
            if r >= 1.5:
                parts.append(f"{_times(r)} valley's rate: faster learning, less margin before the loss turns up.")
            elif r <= 1 / 1.5:
                parts.append(f"{_times(1 / r)} smaller than valley's rate: safer, slower learning.")
            else:
                parts.append("About valley's rate.")
        if lowest_at is not None and name != "minimum":
            if s.lr >= lowest_at:
                parts.append(f"At or past the lowest point of the curve ({lowest_at:.1e}): the loss rises from here, "
                             "so this rate is likely too high.")
            else:
                parts.append(f"{_times(lowest_at / s.lr)} below the rate where the loss was lowest ({lowest_at:.1e}).")
        out[name] = " ".join(p[0].upper() + p[1:] for p in parts)
    return out
