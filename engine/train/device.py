"""Pick the compute device: CUDA, then MPS, then CPU."""
import os
import platform
from pathlib import Path

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


def describe_device(device: torch.device | str | None = None, threads: int | None = None) -> str:
    """The device in plain words: 'CPU, 1 of 2 cores' or 'GPU: NVIDIA H100 80GB HBM3'."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    cores = os.cpu_count() or 1
    used = threads or torch.get_num_threads()
    return f"CPU, {used} of {cores} core{'s' if cores != 1 else ''}"


def cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
