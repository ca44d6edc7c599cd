"""Pick the compute device: CUDA, then MPS, then CPU."""
import os

import torch


def default_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def background_threads() -> int:
    """Threads a background torch worker should use on CPU so the UI keeps a core: cores - 1."""
    return max(1, (os.cpu_count() or 1) - 1)
