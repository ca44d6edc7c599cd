"""Hyper-parameter schedules as pure functions of training progress pos ∈ [0, 1], as in fastai."""
from __future__ import annotations

import math
from typing import Callable, Sequence

Schedule = Callable[[float], float]


def sched_lin(start: float, end: float, pos: float) -> float:
    return start + pos * (end - start)


def sched_cos(start: float, end: float, pos: float) -> float:
    """Half a cosine from start (pos 0) to end (pos 1)."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def sched_exp(start: float, end: float, pos: float) -> float:
    """Exponential from start to end: the LR finder's schedule."""
    return start * (end / start) ** pos


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """One schedule made of several, the i-th running over a share pcts[i] of training (shares sum to 1)."""
    if abs(sum(pcts) - 1) > 1e-9 or len(pcts) != len(scheds):
        raise ValueError("combine_scheds needs one share per schedule, summing to 1")
    bounds = [sum(pcts[:i]) for i in range(len(pcts) + 1)]

    def schedule(pos: float) -> float:
        pos = min(max(pos, 0.0), 1.0)
        for i, sched in enumerate(scheds):
            last = i == len(scheds) - 1
            if pcts[i] > 0 and (pos < bounds[i + 1] or last):
                return sched((pos - bounds[i]) / pcts[i])
        return scheds[-1](1.0)

    return schedule


def combined_cos(pct: float, start: float, middle: float, end: float) -> Schedule:
    """Cosine from start to middle over the first `pct`, then cosine from middle to end."""
    return combine_scheds([pct, 1 - pct], [
        lambda p: sched_cos(start, middle, p),
        lambda p: sched_cos(middle, end, p),
    ])


def one_cycle_lr(lr_max: float, div: float = 25.0, div_final: float = 1e5, pct_start: float = 0.25) -> Schedule:
    """fit_one_cycle's LR: lr_max/div → lr_max (cosine, first pct_start) → lr_max/div_final (cosine)."""
    return combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)


def one_cycle_mom(moms: tuple[float, float, float] = (0.95, 0.85, 0.95), pct_start: float = 0.25) -> Schedule:
    """fit_one_cycle's momentum (Adam's β1): high → low → high on the same phases as the LR."""
    return combined_cos(pct_start, *moms)


def lr_range(lr: float | slice | Sequence[float], n_groups: int) -> list[float]:
    """One LR per parameter group, fastai style.

    A float gives every group that LR; slice(a, b) spreads LRs geometrically from a to b;
    slice(b) gives b/10 to every group but the last, which gets b.
    """
    if isinstance(lr, slice):
        if lr.start is None:
            return [lr.stop / 10] * (n_groups - 1) + [lr.stop]
        if n_groups == 1:
            return [lr.stop]
        ratio = lr.stop / lr.start
        return [lr.start * ratio ** (i / (n_groups - 1)) for i in range(n_groups)]
    if isinstance(lr, (list, tuple)):
        if len(lr) != n_groups:
            raise ValueError(f"{len(lr)} learning rates for {n_groups} parameter groups")
        return [float(x) for x in lr]
    return [float(lr)] * n_groups
