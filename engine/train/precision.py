"""Arithmetic precision: the number format a run's forward and backward passes use, and what `auto` picks.

    precision = resolve_precision("auto", torch.device("cpu"))   # "fp32" on a CPU, "bf16" or "fp16" on CUDA
    with autocast(device, precision): loss = loss_func(model(x), y)

bf16 and fp16 are mixed precision, as fastai's `to_fp16()`: the weights and the optimizer stay float32
(master weights) and `torch.autocast` runs the matrix arithmetic in the smaller format. Only fp16 on CUDA
scales the loss (a GradScaler), because fp16's small range loses tiny gradients there.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch

from engine.errors import UserError
from engine.spec import PRECISIONS

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and ARM's Features line in /proc/cpuinfo

# What `auto` uses on a CPU. Measured by bench/precision_cpu.py on a 2-core Xeon with AVX-512 BF16 and FP16
# (no AMX), torch 2.14.1, the built-in digits, bs 64; raw train_step, 5 interleaved rounds on an idle machine
# (each round within 6% of the median):
#   resnet18 from scratch, 64 px:  fp32 188 images/s, bf16 156 (0.83×); channels-last fp32 177, bf16 148
#   small convnet, 28 px:          fp32 3,744 images/s, bf16 3,177 (0.85×); fp16 under 0.1× of fp32
#   accuracy (train_run, kept model):  small, fine_tune 3, seeds 0 and 1: fp32 98.33% and 98.89%, bf16 97.21%
#                                      and 98.89%; resnet18, one_cycle 3, seed 0: fp32 97.49%, bf16 97.49%
# bf16 is slower on both jobs, and 1.1 points worse on one seed, so auto stays fp32 on every CPU. Change this to
# "bf16" only with a measurement on a CPU where bf16 is faster at the same accuracy (one with AMX was not measured).
CPU_AUTO = "fp32"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX-512 BF16, AMX or ARM's BF16)."""
    flags = _cpu_flags()
    if flags:
        return bool(flags & CPU_BF16_FLAGS)
    # no /proc/cpuinfo (macOS, Windows): oneDNN's own check, which also accepts plain AVX-512 (emulated bf16)
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


@functools.cache
def autocast_computes_in(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this torch's autocast on `device_type` really runs a matrix product in `dtype` (a tiny probe on the CPU)."""
    if not torch.amp.is_autocast_available(device_type):
        return False
    if device_type != "cpu":
        return True  # probing would need the device; torch refuses unsupported dtypes there when autocast starts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unsupported dtype only warns, and autocast turns itself off
        with torch.autocast("cpu", dtype=dtype):
            return torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == dtype


def cuda_has_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(asked: str, device: torch.device) -> str:
    """The precision a run on `device` uses ("fp32", "bf16" or "fp16") for the one asked for; UserError if it cannot."""
    if asked not in PRECISIONS:
        raise UserError(f"device.precision must be one of {', '.join(PRECISIONS)} (got “{asked}”).")
    kind = device.type
    if asked == "auto":
        if kind == "cuda":  # mixed precision, as fastai's to_fp16(): bf16 where the GPU has it
            return "bf16" if cuda_has_bf16() else "fp16"
        if kind == "cpu":
            return "bf16" if CPU_AUTO == "bf16" and cpu_has_bf16() else "fp32"
        return "fp32"
    if asked == "fp32":
        return asked
    if kind == "cpu" and asked == "bf16" and not cpu_has_bf16():
        raise UserError("This CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX), so bf16 would be emulated and "
                        "slower than fp32. Choose fp32, or auto.")
    if kind == "cuda" and asked == "bf16" and not cuda_has_bf16():
        raise UserError("This GPU has no bfloat16 arithmetic. Choose fp16 (mixed precision with loss scaling), "
                        "fp32, or auto.")
    if not autocast_computes_in(kind, AMP_DTYPES[asked]):
        raise UserError(f"This version of PyTorch ({torch.__version__}) cannot compute in {asked} on the "
                        f"{kind.upper() if kind != 'cpu' else 'CPU'}. Choose fp32, or auto.")
    return asked


def uses_loss_scaling(precision: str, device: torch.device) -> bool:
    """fp16 on CUDA scales the loss (GradScaler); bf16 has float32's range and needs none, nor does the CPU here."""
    return precision == "fp16" and device.type == "cuda"


def autocast(device: torch.device, precision: str):
    """A context that runs the arithmetic in `precision` on `device` (nothing for fp32)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
