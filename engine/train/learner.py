"""The Learner: a model, its data and an optimizer, with fastai's fit_one_cycle, fine_tune and lr_find.

One fit loop (`Learner._fit`) and one `train_step`. The loop calls the callbacks at
before_fit, before_epoch, before_batch, after_batch, after_epoch and after_fit with a plain
`logs` dict, in the order of their `order` (lowest first; fastai's Callback.order). Everything else
is a callback on that loop: one-cycle's schedule (`ParamScheduler`), the LR finder (`LRFinder`),
early stopping, keeping the best epoch. A callback ends the fit with `learn.end_fit(note)` (or by
setting `learn.stop_training`), checked after every batch and every epoch; an epoch cut short is
still validated, as in Keras. Whether a fit validates its epochs (and reports them at after_epoch)
is the learner's `validating`, which the loop sets: not with a callback that declares
`fit_without_validation` (the LR finder), nor when the learner's owner set `validate_epochs` False.
A run is stopped, paused or interrupted through its `RunControl` (`learn.control`), checked every
batch; a pause waits on its condition.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.train import models
from engine.data.loaders import DataLoaders
from engine.store.jobs import RunControl
from engine.train.distributed import Dist
from engine.errors import plain_reason
from engine.train.lr_suggest import LRFinderError, Suggestion, diverged, smooth_step, suggest_all
from engine.train.precision import AMP_DTYPES, autocast, resolve_precision, uses_loss_scaling
from engine.train.schedule import Schedule, lr_range, one_cycle_lr, one_cycle_mom, sched_exp

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_batch", "after_epoch", "after_fit")


# ---------------------------------------------------------------- metrics

def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of items whose highest-scoring class is the target."""
    return (preds.argmax(dim=1) == targets).float().mean().item()


def error_rate(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return 1 - accuracy(preds, targets)


def batches_per_epoch(n_train: int, bs: int) -> int:
    """Training steps in an epoch: full batches only (the last partial one is dropped, as fastai's), at least one."""
    return max(1, n_train // bs)


# ---------------------------------------------------------------- callbacks

class Callback:
    """Override any of the event methods; each receives the learner and the loop's `logs` dict.

    The loop calls callbacks by `order`, lowest first (equal orders: as listed, this fit's own before the learner's).
    A callback whose fit must not validate (the LR finder) says so with `fit_without_validation`.
    """

    order = 0
    fit_without_validation = False

    def before_fit(self, learn: "Learner", logs: dict) -> None: ...
    def before_epoch(self, learn: "Learner", logs: dict) -> None: ...
    def before_batch(self, learn: "Learner", logs: dict) -> None: ...
    def after_batch(self, learn: "Learner", logs: dict) -> None: ...
    def after_epoch(self, learn: "Learner", logs: dict) -> None: ...
    def after_fit(self, learn: "Learner", logs: dict) -> None: ...


class Recorder(Callback):
    """Per-batch loss, smoothed loss, LR and momentum; one row per epoch, across every fit of a run."""

    order = -10  # after the hypers are set, before anyone who reads the record

    def __init__(self) -> None:
        self.batches: list[dict] = []  # iter, epoch, loss, smooth_loss, lr, mom
        self.epochs: list[dict] = []  # epoch, train_loss, valid_loss, error_rate, accuracy, time, phase
        self.train_seconds, self.train_images = 0.0, 0

    def after_batch(self, learn, logs):
        self.train_seconds += logs["batch_seconds"]
        self.train_images += logs["batch_size"]
        self.batches.append({k: logs[k] for k in ("iter", "epoch", "loss", "smooth_loss", "lr", "mom")})

    def after_epoch(self, learn, logs):
        row = {k: logs[k] for k in ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "phase")}
        self.epochs.append(row)

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


class ParamScheduler(Callback):
    """Sets every batch's LR (one schedule per layer group) and momentum from the fit's progress, as fastai's."""

    order = -20  # first: every other callback sees the batch's hypers

    def __init__(self, lr_scheds: Sequence[Schedule], mom_sched: Schedule) -> None:
        self.lr_scheds, self.mom_sched = list(lr_scheds), mom_sched

    def before_batch(self, learn, logs):
        pos = logs["pos"]
        learn.set_hypers([s(pos) for s in self.lr_scheds], self.mom_sched(pos))
        logs.update(learn.hypers())


class LRFinder(Callback):
    """fastai's LR finder: the LR grows exponentially every batch, no validation, everything restored after.

    The record (`lrs`, `losses`: smoothed) ends at num_it batches, at divergence (stop_div), or at the
    first NaN: fastai runs on past a NaN (it never counts as diverging) but every later smoothed loss
    is NaN too, so stopping there loses nothing (`lr_suggest.trim` treats the record as fastai's).
    Its fit does not validate.
    """

    order = -20  # first: sets the batch's LR, and at after_fit restores the weights before anyone looks at them
    fit_without_validation = True

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True) -> None:
        self.start_lr, self.end_lr, self.stop_div = start_lr, end_lr, stop_div
        self.num_it = max(num_it, 6)  # as fastai: with fewer, dropping the last 5 points leaves nothing
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.stopped_early = False  # set at the end: the fit ended before num_it batches

    def before_fit(self, learn, logs):
        self.saved = copy.deepcopy(learn.model.state_dict()), copy.deepcopy(learn.opt.state_dict())
        rec = learn.recorder
        self.counters = learn.iter, learn.epoch, len(rec.batches), rec.train_seconds, rec.train_images
        self.lrs, self.losses, self.best = [], [], math.inf

    def before_batch(self, learn, logs):
        lr = sched_exp(self.start_lr, self.end_lr, len(self.lrs) / self.num_it)
        learn.set_hypers([lr] * len(learn.groups), learn.hypers()["mom"])
        logs.update(learn.hypers())

    def after_batch(self, learn, logs):
        smooth = logs["smooth_loss"]
        self.lrs.append(logs["lr"])
        self.losses.append(smooth)
        if smooth < self.best:
            self.best = smooth
        if (self.stop_div and diverged(smooth, self.best)) or math.isnan(smooth) or len(self.lrs) >= self.num_it:
            learn.stop_training = True

    def after_fit(self, learn, logs):
        model_state, opt_state = self.saved
        learn.model.load_state_dict(model_state)
        learn.opt.load_state_dict(opt_state)
        rec = learn.recorder
        learn.iter, learn.epoch, n_batches, rec.train_seconds, rec.train_images = self.counters
        del rec.batches[n_batches:]
        self.stopped_early = len(self.lrs) < self.num_it


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
            learn.end_fit(f"Early stopping: no better validation loss for {self.patience} epoch(s).")


class SaveBest(Callback):
    """Keep the weights of the epoch with the lowest validation loss and restore them when the fit ends."""

    order = 10  # last at after_fit: the weights it restores are the ones the fit ends with

    def __init__(self) -> None:
        self.best, self.best_epoch, self.state = math.inf, None, None

    def after_epoch(self, learn, logs):
        if logs["valid_loss"] < self.best:
            self.best, self.best_epoch = logs["valid_loss"], logs["epoch"]
            self.state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}

    def after_fit(self, learn, logs):
        if not learn.validating:  # a fit without epochs to choose from, such as the LR finder's
            return
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
                 callbacks: Sequence[Callback] = (), cpu_threads: int | None = None, precision: str = "auto",
                 control: RunControl | None = None) -> None:
        self.dls, self.pretrained, self.wd = dls, pretrained, wd
        self.device = dls.device
        self.model = model.to(self.device)
        self.loss_func = nn.CrossEntropyLoss()
        self.recorder = Recorder()
        self.callbacks: list[Callback] = [self.recorder, *callbacks]
        self.cpu_threads = cpu_threads
        self.control = control if control is not None else RunControl()  # stop, pause, interrupt: from outside
        self.stop_training = False  # set by a callback (`end_fit`): the loop ends the fit after this batch
        self.fit_note: str | None = None  # why a callback ended the fit, in words (for the user)
        self.validate_epochs = True  # the owner's choice: validate (and report) every epoch of every fit
        self.validating = True  # whether the fit running now validates its epochs (the loop sets it)
        self.iter = 0  # batches trained over the learner's life, across fits
        self.epoch = 0  # epochs done, across fits
        self.groups = models.param_groups(self.model)  # layer groups: early body, late body, head
        self.opt = torch.optim.AdamW(self._opt_groups(wd), lr=1e-3, betas=(0.9, 0.99), eps=1e-5)
        self.precision = resolve_precision(precision, self.device)  # the one used: fp32, bf16 or fp16
        self.amp_dtype = AMP_DTYPES[self.precision]  # None: plain fp32
        self.scaler = torch.amp.GradScaler("cuda", enabled=uses_loss_scaling(self.precision, self.device))
        self.dist: Dist | None = None  # set under torchrun: the data is sharded, gradients and metrics are shared
        self._ddp: nn.Module | None = None  # the model in DistributedDataParallel, made again by every fit

    def _opt_groups(self, wd: float) -> list[dict]:
        """Optimizer groups per layer group × (decayed, not): fastai's wd_bn_bias=False spares norm layers and biases."""
        no_wd = {id(p) for p in models.norm_bias_params(self.model)}
        groups = []
        for i, params in enumerate(self.groups):
            for decay in (True, False):
                chosen = [p for p in params if (id(p) not in no_wd) == decay]
                if chosen:
                    groups.append({"params": chosen, "weight_decay": wd if decay else 0.0, "layer_group": i})
        return groups

    def end_fit(self, note: str | None = None) -> None:
        """What a callback calls to end the fit after this batch or epoch; `note` says why, to the user."""
        self.stop_training = True
        if note:
            self.fit_note = note

    # ---- freezing and hyper-parameters

    def freeze(self) -> None:
        """Train only the head (and BatchNorm layers), as fastai does for a pretrained body."""
        models.freeze(self.model)

    def unfreeze(self) -> None:
        models.unfreeze(self.model)

    def set_hypers(self, lrs: Sequence[float], mom: float) -> None:
        """Set one LR per layer group (early body, late body, head) and the momentum (Adam's β1)."""
        for group in self.opt.param_groups:
            group["lr"] = lrs[group["layer_group"]]
            group["betas"] = (mom, group["betas"][1])

    def hypers(self) -> dict:
        """The optimizer's LR per layer group (`lrs`), the head's (`lr`) and the momentum (`mom`)."""
        lrs = [0.0] * len(self.groups)
        for group in self.opt.param_groups:
            lrs[group["layer_group"]] = group["lr"]
        return {"lrs": lrs, "lr": lrs[-1], "mom": self.opt.param_groups[0]["betas"][0]}

    # ---- one step

    @property
    def train_model(self) -> nn.Module:
        """What a training step calls: the model, or under torchrun its DistributedDataParallel wrapper."""
        return self.model if self._ddp is None else self._ddp

    def _autocast(self):
        """The run's precision for a forward pass (weights stay float32: autocast casts copies)."""
        return autocast(self.device, self.precision)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Forward, loss, backward, optimizer step; returns the batch loss."""
        with self._autocast():
            loss = self.loss_func(self.train_model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.item()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and metrics over the whole validation set."""
        self.model.eval()
        if self.dist is not None:  # every rank validates the model rank 0 saves
            self.dist.sync_buffers(self.model)
        outputs, targets = [], []
        for x, y in self.dls.valid():
            with self._autocast():
                outputs.append(self.model(x).float())
            targets.append(y)
        preds, targs = torch.cat(outputs), torch.cat(targets)
        self.model.train()
        if self.dist is not None:  # this rank's part of the validation set: add up over the ranks
            loss, hits, n = self.dist.sum([F.cross_entropy(preds, targs, reduction="sum").item(),
                                           (preds.argmax(dim=1) == targs).sum().item(), len(targs)])
            return {"valid_loss": loss / n, "accuracy": hits / n, "error_rate": 1 - hits / n}
        return {"valid_loss": F.cross_entropy(preds, targs).item(), "accuracy": accuracy(preds, targs),
                "error_rate": error_rate(preds, targs)}

    # ---- the fit loop

    def _wait_while_paused(self) -> float:
        """Block while paused (a stop still ends it); returns the seconds spent paused."""
        if not self.control.paused:
            return 0.0
        start = time.perf_counter()
        self.control.wait_while_paused()
        return time.perf_counter() - start

    def _stop_requested(self) -> bool:
        """Whether to stop now; under torchrun, whether any rank was asked to (and any interrupted), so that every
        rank stops at the same batch for the same reason."""
        control = self.control
        if self.dist is None:
            return control.stopped
        stopped, interrupted = self.dist.sum([float(control.stopped), float(control.interrupted)])  # every rank's
        if interrupted:
            control.interrupt()
        elif stopped:
            control.stop()
        return stopped > 0

    def _fit(self, n_epoch: int, cbs: Sequence[Callback] = (), phase: str = "") -> dict:
        """The training loop: n_epoch epochs of train_step, each then validated (see `validating`), callbacks (this
        fit's `cbs` and the learner's) by their order at every event."""
        if self.device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        callbacks = sorted([*cbs, *self.callbacks], key=lambda cb: cb.order)  # stable: equal orders keep this order

        def event(name: str) -> None:
            for cb in callbacks:
                getattr(cb, name)(self, logs)

        n_batches = n_epoch * batches_per_epoch(self.dls.n_train, self.dls.bs)
        self.stop_training, self.fit_note = False, None
        self.validating = self.validate_epochs and not any(cb.fit_without_validation for cb in callbacks)
        logs: dict = {"n_epoch": n_epoch, "n_batches": n_batches, "phase": phase, "status": "running",
                      "epoch": self.epoch, "iter": self.iter}
        self.model.train()
        if self.dist is not None:  # DDP reduces the parameters that train now: wrapped again after freeze/unfreeze
            self._ddp = None
            self._ddp = self.dist.wrap(self.model)
        event("before_fit")
        done, avg = 0, 0.0  # batches of this fit; running average of their losses
        try:
            for _ in range(n_epoch):
                # train one epoch
                logs.update(epoch=self.epoch, epoch_start=time.perf_counter())
                event("before_epoch")
                paused = 0.0
                for x, y in self.dls.train():
                    paused += self._wait_while_paused()
                    if self._stop_requested():
                        break
                    # the batch's hypers: as they are, unless a scheduler sets them at before_batch
                    logs.update(iter=self.iter, pos=done / n_batches, batch_size=len(y), **self.hypers())
                    event("before_batch")
                    start = time.perf_counter()
                    logs["loss"] = self.train_step(x, y)
                    logs["batch_seconds"] = time.perf_counter() - start
                    if self.dist is not None:  # the whole batch's loss, as one process would record it
                        logs["loss"] = self.dist.mean(logs["loss"])
                    self.iter, done = self.iter + 1, done + 1
                    avg, logs["smooth_loss"] = smooth_step(avg, logs["loss"], done)
                    logs["done"] = done
                    event("after_batch")
                    if self.stop_training:
                        break
                if self._stop_requested():
                    logs["status"] = "stopped"
                    break
                # validate and report the epoch
                if self.validating:
                    logs.update(self.validate())
                    logs.update(train_loss=logs.get("smooth_loss", math.nan),
                                time=time.perf_counter() - logs["epoch_start"] - paused)
                    event("after_epoch")
                self.epoch += 1
                if self.stop_training:
                    break
            if logs["status"] == "running":
                logs["status"] = "done"
        except BaseException as e:
            logs.update(status="failed", error=plain_reason(e))
            event("after_fit")
            raise
        event("after_fit")
        return logs

    def fit(self, n_epoch: int, cbs: Sequence[Callback] = (), phase: str = "fit") -> dict:
        """Train n_epoch epochs with the learner's callbacks, plus `cbs` for this fit only; returns the final logs."""
        return self._fit(n_epoch, cbs, phase)

    def fit_one_cycle(self, n_epoch: int, lr_max: float | slice | Sequence[float] = 1e-3, div: float = 25.0,
                      div_final: float = 1e5, pct_start: float = 0.25,
                      moms: tuple[float, float, float] = (0.95, 0.85, 0.95), phase: str = "one_cycle") -> dict:
        """fastai's one-cycle policy: LR warms up by a cosine then anneals; momentum does the opposite."""
        maxes = lr_range(lr_max, len(self.groups))
        scheduler = ParamScheduler([one_cycle_lr(m, div, div_final, pct_start) for m in maxes],
                                   one_cycle_mom(moms, pct_start))
        return self._fit(n_epoch, [scheduler], phase)

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

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True,
                on_step: Callable[[int, float, float], None] | None = None) -> LRFinderResult:
        """fastai's lr_find: the fit loop with an `LRFinder`, then its suggestions; the weights are left as they were."""
        finder = LRFinder(start_lr, end_lr, num_it, stop_div)
        cbs: list[Callback] = [finder]
        if on_step is not None:
            cbs.append(FunctionCallback(lambda event, logs: on_step(logs["done"], logs["lr"], logs["smooth_loss"])
                                        if event == "after_batch" else None))
        self._fit(finder.num_it // batches_per_epoch(self.dls.n_train, self.dls.bs) + 1, cbs, phase="lr_find")
        try:
            suggestions = suggest_all(finder.lrs, finder.losses, finder.num_it)
        except LRFinderError:
            suggestions = {}
        return LRFinderResult(lrs=finder.lrs, losses=finder.losses, suggestions=suggestions,
                              stopped_early=finder.stopped_early)
