"""Fixtures shared by the engine tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.data.augment import AugSettings
from engine.data.builtin import BUILTINS, DIGIT_WORDS, digit_images, ensure_builtin
from engine.data.loaders import DataLoaders, label_items
from engine.data.decode_pool import presize_all
from engine.data.sources import scan_folder


def _write_digits(root: Path, count: int | None = None, per_class: int | None = None) -> Path:
    """Real digits as Pets-style files (`seven_12.png`): the first `count`, or the first `per_class` of each digit."""
    images, targets = digit_images()
    seen = dict.fromkeys(range(10), 0)
    for i, (im, t) in enumerate(zip(images[:count], targets[:count])):
        if per_class is None or seen[t] < per_class:
            Image.fromarray(im, "L").save(root / f"{DIGIT_WORDS[t]}_{i}.png")
            seen[t] += 1
    return root


@pytest.fixture(scope="session")
def write_digits():
    """The function that writes real digits into a folder (see _write_digits)."""
    return _write_digits


@pytest.fixture(scope="module")
def one_thread():
    """Small models train several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_dls(tmp_path_factory) -> DataLoaders:
    """The built-in digits by file name, presized to 32, batches of 28 px, no augmentation."""
    root = ensure_builtin("digits-names", root=tmp_path_factory.getbasetemp() / "loupe-builtin")
    spec = BUILTINS["digits-names"]
    items = label_items(scan_folder(root), spec.label_rule, spec.split_rule)
    return DataLoaders(items, presize_all(items.scanned_paths, 32), size=28, bs=64, aug=AugSettings.off(), seed=0)


def _quick_train(dls: DataLoaders, steps: int = 60, seed: int = 0) -> torch.nn.Module:
    """create_model('small') after `steps` steps of Adam (lr 3e-3) on dls's training batches: quick on a CPU."""
    import torch.nn.functional as F

    from engine.train.models import create_model

    torch.manual_seed(seed)
    model, _ = create_model("small", len(dls.classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    done = 0
    while done < steps:
        for x, y in dls.train():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model


@pytest.fixture(scope="session")
def quick_train():
    """The function that trains a small model for a few steps (see _quick_train)."""
    return _quick_train
