"""One way to run a model over items for predictions: eval mode, no gradients, fixed-size batches on its device.

Interpretation, run reviews, `export.predict` and Grad-CAM all prepare inputs and switch modes here, so
they cannot drift apart: an item of a data set becomes a model input by `item_inputs` (the validation
path: resized, never augmented, normalised), an image file by `export.preprocess`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from engine.data.augment import normalize, resize_batch
from engine.data.loaders import DataLoaders

EVAL_BS = 128  # items per forward pass when scoring


def model_device(model: nn.Module) -> torch.device:
    """The device the model's parameters are on (the CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block; every module's own train/eval mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]  # a frozen body may sit in eval inside a training model
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def item_inputs(dls: DataLoaders, pos: torch.Tensor) -> torch.Tensor:
    """Model inputs [n, 3, size, size] of the items at dls positions `pos`: resized, never augmented, normalised."""
    return normalize(resize_batch(dls._pixels(pos), dls.size))


def score(model: nn.Module, items: Sequence[Any] | torch.Tensor, prepare: Callable[[Any], torch.Tensor],
          bs: int = EVAL_BS) -> torch.Tensor:
    """Logits [N, C] (float32, on the CPU) of `model` on `items`, each slice of `bs` turned into a batch by `prepare`.

    Runs in eval mode without gradients on the model's device; the model's modes are left as found.
    No items give a [0, 0] tensor.
    """
    device = model_device(model)
    outputs = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(items), bs):
            x = prepare(items[start:start + bs]).to(device)
            outputs.append(model(x).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)
