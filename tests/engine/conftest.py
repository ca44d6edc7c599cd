"""Fixtures shared by the engine tests."""
from __future__ import annotations

import pytest
import torch

from engine.augment import AugSettings
from engine.builtin import BUILTINS, ensure_builtin
from engine.data import DataLoaders, label_items
from engine.images import presize_all
from engine.sources import scan_folder


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
