"""How learning works, after the fastai book's chapter 4 ("Under the hood: training a digit classifier"): a picture as
a grid of numbers, the simplest baseline (the average picture of each class, and "closest average" as a classifier),
and gradient descent by hand on the chapter's toy problem (a quadratic fitted to noisy speed-over-time points)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.images import PresizedImages
from engine.data.loaders import LabelledItems, usable
from engine.errors import UserError
from engine.spec import DataSpec

GRID = 28  # MNIST's side: pictures become 28 × 28 numbers (per colour) for the baseline
SAMPLES = 4  # pixels sampled a side per cell, at least, when the baseline shrinks large pictures
CHUNK_VALUES = 2**24  # pixel values shrunk at a time (64 MB as floats, whatever the pictures' size)
LUMA = (0.299, 0.587, 0.114)  # brightness of red, green and blue, as PIL's "L" mode weighs them


# ---------------------------------------------------------------- a picture is numbers

def shrink(pixels: torch.Tensor, size: int = GRID) -> torch.Tensor:
    """Pictures [N, 3, H, W] uint8 as [N, 3, size, size] float32 in [0, 1], each cell the average of the pixels it covers."""
    return F.adaptive_avg_pool2d(pixels.float() / 255, size)


def picture_numbers(pixels: torch.Tensor, size: int = GRID) -> np.ndarray:
    """One picture [3, H, W] uint8 as a [size, size] grid of its brightness, 0 (black) to 255 (white), as integers."""
    small = shrink(pixels[None], size)[0]
    grey = sum(w * small[c] for c, w in enumerate(LUMA))
    return np.rint(grey.numpy() * 255).astype(np.int64)


# ---------------------------------------------------------------- the simplest baseline

@dataclass
class Baseline:
    """Closest average: each validation picture gets the class whose average training picture it is nearest to."""

    classes: list[str]
    averages: np.ndarray  # [C, 3, size, size] float32 in [0, 1]: the average training picture of each class
    n_train: list[int]  # training pictures averaged, per class
    n_valid: int  # validation pictures judged
    accuracy_l1: float  # nearest by mean absolute difference (the book's L1 norm)
    accuracy_l2: float  # nearest by root-mean-square difference (the L2 norm)
    majority: float  # accuracy of always guessing the largest training class, for comparison
    size: int = GRID

    @property
    def missing(self) -> list[str]:
        """Classes with no readable training picture: no average, so their validation pictures always count wrong."""
        return [c for c, n in zip(self.classes, self.n_train) if n == 0]

    def to_dict(self) -> dict:
        return {"classes": self.classes, "n_train": self.n_train, "n_valid": self.n_valid, "size": self.size,
                "accuracy_l1": self.accuracy_l1, "accuracy_l2": self.accuracy_l2, "majority": self.majority,
                "missing": self.missing}


def closest_average(train_x: torch.Tensor, train_y: torch.Tensor, valid_x: torch.Tensor, valid_y: torch.Tensor,
                    classes: list[str]) -> Baseline:
    """The baseline from shrunk pictures ([N, 3, s, s] floats) and their class indices."""
    if len(valid_y) == 0:
        raise UserError("There are no readable validation pictures, so the baseline cannot be measured.")
    n_classes, size = len(classes), train_x.shape[-1]
    counts = torch.bincount(train_y, minlength=n_classes)
    sums = torch.zeros(n_classes, *train_x.shape[1:], dtype=torch.float64).index_add_(0, train_y, train_x.double())
    averages = (sums / counts.clamp(min=1).view(-1, 1, 1, 1)).float()
    has = counts > 0
    x, means = valid_x.flatten(1).double(), averages[has].flatten(1).double()
    known = torch.nonzero(has).flatten()
    mode = "donot_use_mm_for_euclid_dist"  # exact differences, not the faster matrix-product shortcut
    l1 = known[torch.cdist(x, means, p=1, compute_mode=mode).argmin(1)]
    l2 = known[torch.cdist(x, means, p=2, compute_mode=mode).argmin(1)]
    return Baseline(classes=list(classes), averages=averages.numpy(), n_train=counts.tolist(), n_valid=len(valid_y),
                    accuracy_l1=float((l1 == valid_y).double().mean()), accuracy_l2=float((l2 == valid_y).double().mean()),
                    majority=float((valid_y == counts.argmax()).double().mean()), size=size)


def _shrunk_rows(images: PresizedImages, rows: np.ndarray, size: int) -> torch.Tensor:
    # large pictures (460 px for 224 px models) are sampled every k-th pixel first, still 4 or more a side per cell:
    # converting every pixel to a float costs far more than it changes an average
    k = max(1, images.size // (SAMPLES * size))
    chunk = max(1, CHUNK_VALUES // (3 * images.size ** 2))
    parts = [shrink(torch.as_tensor(images.pixels[rows[i:i + chunk]])[..., ::k, ::k], size)
             for i in range(0, len(rows), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 3, size, size)


def baseline(items: LabelledItems, images: PresizedImages, size: int = GRID) -> Baseline:
    """Class averages of a data set's readable training pictures, judged on its readable validation pictures."""
    ok, targets = usable(items, images), torch.as_tensor(items.targets)
    split = {s: np.flatnonzero((items.split == s) & ok) for s in ("train", "valid")}
    train_x = _shrunk_rows(images, items.image_index[split["train"]], size)
    valid_x = _shrunk_rows(images, items.image_index[split["valid"]], size)
    return closest_average(train_x, targets[split["train"]], valid_x, targets[split["valid"]], items.classes)


def same_validation(a: DataSpec, b: DataSpec) -> bool:
    """Whether two resolved data specs take the same pictures, labels and validation split (so accuracies compare)."""
    return (a.source, a.label, a.split) == (b.source, b.label, b.split)


# ---------------------------------------------------------------- gradient descent by hand

PHASES = ("initialise", "predict", "loss", "gradient", "step")
START_SEED = 5  # a first guess far from the points (a downward curve), as the book's was: the loss falls a long way


@dataclass(frozen=True)
class SpeedData:
    """The chapter's roller coaster: its speed measured once a second, with noise."""

    time: np.ndarray  # [n] float64, seconds 0, 1, …
    speed: np.ndarray  # [n] float64


def speed_data(seed: int = 42, n: int = 20) -> SpeedData:
    """speed = 0.75·(t − 9.5)² + 1 plus noise of spread 3, at t = 0 … n − 1 (the book's toy), the same for a seed."""
    time = np.arange(n, dtype=np.float64)
    noise = np.random.default_rng(seed).standard_normal(n) * 3
    return SpeedData(time=time, speed=0.75 * (time - 9.5) ** 2 + 1 + noise)


def quadratic(t, params):
    """a·t² + b·t + c, for numpy arrays or torch tensors."""
    a, b, c = params[0], params[1], params[2]
    return a * t ** 2 + b * t + c


@dataclass(frozen=True)
class Descent:
    """Where gradient descent by hand stands: the parameters and what the last phase worked out."""

    params: tuple[float, float, float]  # a, b, c
    done: str = "initialise"  # the last phase done (one of PHASES)
    steps: int = 0  # steps taken
    preds: tuple[float, ...] | None = None  # predicted speeds, after "predict"
    loss: float | None = None  # mean squared error of those predictions, after "loss"
    grad: tuple[float, float, float] | None = None  # d loss / d (a, b, c), after "gradient"
    before: tuple[float, float, float] | None = None  # the parameters before the last step
    lr: float | None = None  # the learning rate of the last step
    losses: tuple[float, ...] = ()  # the loss of each step, in order

    @property
    def next_phase(self) -> str:
        """The phase that comes next: predict after initialise or a step, then loss, gradient, step."""
        return PHASES[PHASES.index(self.done) % 4 + 1]

    @property
    def stuck(self) -> bool:
        """The numbers overflowed (a far too large learning rate): nothing but initialise can follow."""
        values = [*self.params, *(self.grad or ()), *([self.loss] if self.loss is not None else [])]
        return not all(math.isfinite(v) for v in values)


def initialise(seed: int = START_SEED) -> Descent:
    """Random starting parameters, as the book's `torch.randn(3)`, the same for a seed."""
    return Descent(params=tuple(float(p) for p in np.random.default_rng(seed).standard_normal(3)))


def predict(state: Descent, data: SpeedData) -> Descent:
    """The speeds the current parameters predict."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's numbers overflow: they show as inf
        preds = quadratic(data.time, state.params)
    return replace(state, done="predict", preds=tuple(preds.tolist()), loss=None, grad=None)


def mse(preds, targets):
    """Mean squared error: the average of the squared differences."""
    return ((preds - targets) ** 2).mean()


def loss(state: Descent, data: SpeedData) -> Descent:
    """How wrong the predictions are."""
    if state.preds is None:
        state = predict(state, data)
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(mse(np.asarray(state.preds), data.speed))
    return replace(state, done="loss", loss=value, losses=(*state.losses, value))


def gradient(state: Descent, data: SpeedData) -> Descent:
    """How the loss changes with each parameter, by autograd (as the book's `loss.backward()`)."""
    if state.loss is None:
        state = loss(state, data)
    params = torch.tensor(state.params, dtype=torch.float64, requires_grad=True)
    mse(quadratic(torch.from_numpy(data.time), params), torch.from_numpy(data.speed)).backward()
    return replace(state, done="gradient", grad=tuple(params.grad.tolist()))


def step(state: Descent, data: SpeedData, lr: float) -> Descent:
    """Move each parameter a little against its gradient: p ← p − lr · gradient."""
    if state.grad is None:
        state = gradient(state, data)
    new = tuple(p - lr * g for p, g in zip(state.params, state.grad))
    return replace(state, done="step", params=new, before=state.params, lr=lr, steps=state.steps + 1)


def advance(state: Descent, data: SpeedData, lr: float) -> Descent:
    """The next phase (predict → loss → gradient → step → predict …)."""
    phase = state.next_phase
    return step(state, data, lr) if phase == "step" else {"predict": predict, "loss": loss, "gradient": gradient}[phase](
        state, data)


def run_steps(state: Descent, data: SpeedData, lr: float, n: int = 10) -> Descent:
    """Finish the step under way, then take whole steps (predict, loss, gradient, step) until `n` more are done."""
    target = state.steps + n
    while state.steps < target and not state.stuck:
        state = advance(state, data, lr)
    return state


def fit_losses(data: SpeedData, lr: float, n: int = 10, seed: int = START_SEED) -> list[float]:
    """The loss at each of `n` steps from the seeded start (what the loss chart shows after Run n steps)."""
    return list(run_steps(initialise(seed), data, lr, n).losses)
