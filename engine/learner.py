"""The Learner: a model, its data and an optimizer, with fastai's fit_one_cycle, fine_tune and lr_find.

One fit loop (`Learner._fit`) and one `train_step`. The loop calls the callbacks at
before_fit, before_epoch, before_batch, after_batch, after_epoch and after_fit with a plain
`logs` dict. A run is stopped or paused by `threading.Event`s checked every batch.
"""
from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import models
from engine.data import DataLoaders
from engine.lr_suggest import Suggestion, suggest_all
from engine.schedule import Schedule, lr_range, one_cycle_lr, one_cycle_mom, sched_exp

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_batch", "after_epoch", "after_fit")
SMOOTH_BETA = 0.98


# ---------------------------------------------------------------- metrics

def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of items whose highest-scoring class is the target."""
    return (preds.argmax(dim=1) == targets).float().mean().item()


def error_rate(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return 1 - accuracy(preds, targets)


# ---------------------------------------------------------------- callbacks

class Callback:
    """Override any of the event methods; each receives the learner and the loop's `logs` dict."""

    def before_fit(self, learn: "Learner", logs: dict) -> None: ...
    def before_epoch(self, learn: "Learner", logs: dict) -> None: ...
    def before_batch(self, learn: "Learner", logs: dict) -> None: ...
    def after_batch(self, learn: "Learner", logs: dict) -> None: ...
    def after_epoch(self, learn: "Learner", logs: dict) -> None: ...
    def after_fit(self, learn: "Learner", logs: dict) -> None: ...


class Recorder(Callback):
    """Per-batch smoothed training loss, LR and momentum; one row per epoch, across every fit of a run."""

    def __init__(self) -> None:
        self.batches: list[dict] = []  # iter, epoch, loss, smooth_loss, lr, mom
        self.epochs: list[dict] = []  # epoch, train_loss, valid_loss, error_rate, accuracy, time, phase
        self._avg, self._count = 0.0, 0
        self.train_seconds, self.train_images = 0.0, 0

    def before_fit(self, learn, logs):
        self._avg, self._count = 0.0, 0  # each fit smooths its own losses, as fastai's recorder does

    def smooth(self, loss: float) -> float:
        """Debiased exponential moving average of the training loss (β = 0.98)."""
        self._count += 1
        self._avg = SMOOTH_BETA * self._avg + (1 - SMOOTH_BETA) * loss
        return self._avg / (1 - SMOOTH_BETA ** self._count)

    def after_batch(self, learn, logs):
        logs["smooth_loss"] = self.smooth(logs["loss"])
        self.train_seconds += logs["batch_seconds"]
        self.train_images += logs["batch_size"]
        self.batches.append({k: logs[k] for k in ("iter", "epoch", "loss", "smooth_loss", "lr", "mom")})

    def after_epoch(self, learn, logs):
        row = {k: logs[k] for k in ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "phase")}
        self.epochs.append(row)

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved by min_delta for `patience` epochs."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta

    def before_fit(self, learn, logs):
        self.best, self.wait = math.inf, 0

    def after_epoch(self, learn, logs):
        if logs["valid_loss"] < self.best - self.min_delta:
            self.best, self.wait = logs["valid_loss"], 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            logs["note"] = f"Early stopping: no better validation loss for {self.patience} epoch(s)."
            learn.stop_training = True


class SaveBest(Callback):
    """Keep the weights of the epoch with the lowest validation loss and restore them when the fit ends."""

    def __init__(self) -> None:
        self.best, self.best_epoch, self.state = math.inf, None, None

    def after_epoch(self, learn, logs):
        if logs["valid_loss"] < self.best:
            self.best, self.best_epoch = logs["valid_loss"], logs["epoch"]
            self.state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}

    def after_fit(self, learn, logs):
        if self.state is not None and logs.get("status") in ("done", "stopped"):
            learn.model.load_state_dict(self.state)
            logs["best_epoch"] = self.best_epoch


class FunctionCallback(Callback):
    """Calls `fn(event, logs)` at every event: how a job or a CLI watches a run."""

    def __init__(self, fn: Callable[[str, dict], None]) -> None:
        self.fn = fn

    def before_fit(self, learn, logs): self.fn("before_fit", logs)
    def before_epoch(self, learn, logs): self.fn("before_epoch", logs)
    def before_batch(self, learn, logs): self.fn("before_batch", logs)
    def after_batch(self, learn, logs): self.fn("after_batch", logs)
    def after_epoch(self, learn, logs): self.fn("after_epoch", logs)
    def after_fit(self, learn, logs): self.fn("after_fit", logs)


# ---------------------------------------------------------------- the learner

@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed, debiased
    suggestions: dict[str, Suggestion] = field(default_factory=dict)
    stopped_early: bool = False


class Learner:
    """A model trained on DataLoaders with Adam (decoupled weight decay), fastai's defaults."""

    def __init__(self, model: nn.Module, dls: DataLoaders, pretrained: bool = False, wd: float = 0.01,
                 callbacks: Sequence[Callback] = (), cpu_threads: int | None = None,
                 mixed_precision: bool | None = None) -> None:
        self.dls, self.pretrained, self.wd = dls, pretrained, wd
        self.device = dls.device
        self.model = model.to(self.device)
        self.loss_func = nn.CrossEntropyLoss()
        self.recorder = Recorder()
        self.callbacks: list[Callback] = [self.recorder, *callbacks]
        self.cpu_threads = cpu_threads
        self.stop_event, self.pause_event = threading.Event(), threading.Event()
        self.stop_training = False
        self.iter = 0  # batches trained over the learner's life, across fits
        self.epoch = 0  # epochs done, across fits
        self.groups = models.param_groups(self.model)
        self.opt = torch.optim.AdamW(
            [{"params": g} for g in self.groups], lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd,
        )
        use_amp = self.device.type == "cuda" if mixed_precision is None else mixed_precision
        self.amp_dtype = None
        if use_amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ---- freezing and hyper-parameters

    def freeze(self) -> None:
        """Train only the head (and BatchNorm layers), as fastai does for a pretrained body."""
        models.freeze(self.model)

    def unfreeze(self) -> None:
        models.unfreeze(self.model)

    def set_hypers(self, lrs: Sequence[float], mom: float) -> None:
        for group, lr in zip(self.opt.param_groups, lrs):
            group["lr"] = lr
            group["betas"] = (mom, group["betas"][1])

    # ---- one step

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Forward, loss, backward, optimizer step; returns the batch loss."""
        with self._autocast():
            loss = self.loss_func(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.item()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and metrics over the whole validation set."""
        self.model.eval()
        outputs, targets = [], []
        for x, y in self.dls.valid():
            with self._autocast():
                outputs.append(self.model(x).float())
            targets.append(y)
        preds, targs = torch.cat(outputs), torch.cat(targets)
        self.model.train()
        return {"valid_loss": F.cross_entropy(preds, targs).item(), "accuracy": accuracy(preds, targs),
                "error_rate": error_rate(preds, targs)}

    # ---- the fit loop

    def _event(self, name: str, logs: dict) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(self, logs)

    def _wait_while_paused(self) -> float:
        """Block while paused (stop still works); returns the seconds spent paused."""
        if not self.pause_event.is_set():
            return 0.0
        start = time.perf_counter()
        while self.pause_event.is_set() and not self.stop_event.is_set():
            time.sleep(0.05)
        return time.perf_counter() - start

    def _fit(self, n_epoch: int, lr_sched: Callable[[float], list[float]], mom_sched: Schedule, phase: str = "") -> dict:
        """Train n_epoch epochs, setting LRs and momentum from the schedules every batch."""
        if self.device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        n_batches = n_epoch * (self.dls.n_train // self.dls.bs or 1)
        self.stop_training = False
        logs: dict = {"n_epoch": n_epoch, "n_batches": n_batches, "phase": phase, "status": "running",
                      "epoch": self.epoch, "iter": self.iter}
        self.model.train()
        self._event("before_fit", logs)
        done = 0  # batches of this fit
        try:
            for _ in range(n_epoch):
                # train one epoch
                logs.update(epoch=self.epoch, epoch_start=time.perf_counter())
                self._event("before_epoch", logs)
                paused = 0.0
                for x, y in self.dls.train():
                    paused += self._wait_while_paused()
                    if self.stop_event.is_set():
                        break
                    # set this batch's learning rates and momentum
                    pos = done / n_batches
                    lrs, mom = lr_sched(pos), mom_sched(pos)
                    self.set_hypers(lrs, mom)
                    logs.update(iter=self.iter, pos=pos, lr=lrs[-1], lrs=lrs, mom=mom, batch_size=len(y))
                    self._event("before_batch", logs)
                    start = time.perf_counter()
                    logs["loss"] = self.train_step(x, y)
                    logs["batch_seconds"] = time.perf_counter() - start
                    self.iter, done = self.iter + 1, done + 1
                    logs["done"] = done
                    self._event("after_batch", logs)
                if self.stop_event.is_set():
                    logs["status"] = "stopped"
                    break
                # validate and report the epoch
                logs.update(self.validate())
                logs.update(train_loss=logs.get("smooth_loss", math.nan),
                            time=time.perf_counter() - logs["epoch_start"] - paused)
                self._event("after_epoch", logs)
                self.epoch += 1
                if self.stop_training:
                    break
            if logs["status"] == "running":
                logs["status"] = "done"
        except BaseException as e:
            logs.update(status="failed", error=f"{type(e).__name__}: {e}")
            self._event("after_fit", logs)
            raise
        self._event("after_fit", logs)
        return logs

    def fit_one_cycle(self, n_epoch: int, lr_max: float | slice | Sequence[float] = 1e-3, div: float = 25.0,
                      div_final: float = 1e5, pct_start: float = 0.25,
                      moms: tuple[float, float, float] = (0.95, 0.85, 0.95), phase: str = "one_cycle") -> dict:
        """fastai's one-cycle policy: LR warms up by a cosine then anneals; momentum does the opposite."""
        maxes = lr_range(lr_max, len(self.groups))
        scheds = [one_cycle_lr(m, div, div_final, pct_start) for m in maxes]
        return self._fit(n_epoch, lambda pos: [s(pos) for s in scheds], one_cycle_mom(moms, pct_start), phase)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5.0) -> dict:
        """fastai's fine_tune: head only for freeze_epochs, then everything with discriminative LRs.

        A from-scratch body has nothing worth keeping frozen (fastai's own from-scratch fine_tune
        stalls), so without pretrained weights this trains every layer with one cycle at base_lr
        for freeze_epochs + epochs epochs.
        """
        if not self.pretrained:
            self.unfreeze()
            return self.fit_one_cycle(freeze_epochs + epochs, base_lr, pct_start=pct_start, phase="from_scratch")
        self.freeze()
        logs = self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, phase="frozen")
        if logs["status"] != "done" or self.stop_training:
            return logs
        base_lr /= 2
        self.unfreeze()
        return self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, phase="unfrozen")

    # ---- the LR finder

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True,
                on_step: Callable[[int, float, float], None] | None = None) -> LRFinderResult:
        """Raise the LR exponentially for num_it batches, recording the smoothed loss; weights are restored after."""
        model_state = copy.deepcopy(self.model.state_dict())
        opt_state = copy.deepcopy(self.opt.state_dict())
        if self.device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        lrs: list[float] = []
        losses: list[float] = []
        avg, best, stopped = 0.0, math.inf, False
        self.model.train()
        try:
            while len(lrs) < num_it and not stopped:
                for x, y in self.dls.train():
                    self._wait_while_paused()
                    if self.stop_event.is_set():
                        stopped = True
                        break
                    i = len(lrs)
                    lr = sched_exp(start_lr, end_lr, i / num_it)
                    self.set_hypers([lr] * len(self.groups), self.opt.param_groups[0]["betas"][0])
                    loss = self.train_step(x, y)
                    avg = SMOOTH_BETA * avg + (1 - SMOOTH_BETA) * loss
                    smooth = avg / (1 - SMOOTH_BETA ** (i + 1))
                    lrs.append(lr)
                    losses.append(smooth)
                    if on_step is not None:
                        on_step(i + 1, lr, smooth)
                    best = min(best, smooth)
                    if stop_div and (smooth > 4 * best or not np.isfinite(smooth)):
                        stopped = True
                        break
                    if len(lrs) >= num_it:
                        break
        finally:
            self.model.load_state_dict(model_state)
            self.opt.load_state_dict(opt_state)
        try:
            suggestions = suggest_all(lrs, losses, num_it)
        except ValueError:
            suggestions = {}
        return LRFinderResult(lrs=lrs, losses=losses, suggestions=suggestions, stopped_early=len(lrs) < num_it)
