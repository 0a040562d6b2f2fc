"""Device and dtype, resolved once at the edge (loading, training), with the reason logged.

:func:`bf16_supported` is the one bf16 decision: model loading (``dtype="auto"``), the training loop
(``precision="auto"``) and the benchmarks all ask it.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` → ``mps`` → ``cpu`` when ``device`` is None or ``auto``; else exactly the device asked for."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 runs ~5x faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def machine_info() -> dict:
    """The machine a benchmark ran on, for its ``machine.json``: speed and bf16 rounding depend on it (the same
    CPU benchmark runs ~3x slower in fp32 on a host without native bf16). Read once per process: benchmarks
    rewrite their results after every chunk."""
    device = resolve_device()
    fast, why = bf16_supported(device)
    info = {"device": str(device), "cpu": cpu_name(), "threads": torch.get_num_threads(), "bf16": fast,
            "bf16_why": why, "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def bf16_supported(device: torch.device) -> tuple[bool, str]:
    """(whether bf16 is fast on ``device``, why) — the one place that decides it."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA device " + ("with" if ok else "without") + " bf16"
    if device.type == "cpu" and cpu_has_bf16():
        return True, "CPU has native bf16 (avx512_bf16/amx)"
    return False, f"no fast bf16 on {device.type}"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype to load weights in: as asked, or for ``auto`` bf16 where it is fast (fp16 on older CUDA), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        return DTYPES[dtype]
    fast, why = bf16_supported(device)
    chosen = torch.bfloat16 if fast else torch.float16 if device.type == "cuda" else torch.float32
    log.info("dtype %s chosen: %s", chosen, why)
    return chosen
