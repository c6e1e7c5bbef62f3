"""What machine the local rates are measured on, and whether it was too busy to trust them.

A calibration is timed in CPU seconds per thread, which busy loops elsewhere do not inflate, but
processes that compete for the same caches and memory bandwidth (another training run, a test
suite) do: a calibration measured beside them read 2.37 s per 1,000 training tokens where a quiet
machine read 0.55. Such a measurement is still stored, so workers that started together price
with one set of numbers, but marked busy, and the first process that finds the machine quiet
measures again and replaces it (`harness.backends.local._calibration.Pricing.rates`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch

# The 1-minute load average per core above which a measurement is marked busy. A user whose
# machine is always this busy can raise it (a very large value keeps every measurement).
MAX_LOAD_ENV = "HARNESS_CALIBRATION_MAX_LOAD"
MAX_LOAD = 1.0


# CPUs with AMX tiles (Intel Xeon from Sapphire Rapids on) train and predict under bf16
# autocast: oneDNN's AMX kernels multiply bf16 at 5-7x the fp32 peak (2,098-2,681 against
# 380-418 GFLOP/s on this project's machine), and the demo's best configuration trained 1.6x
# faster and scored 2x faster, at the same accuracy within noise (3 seeds). Elsewhere bf16 is
# emulated and slower, so CPUs without AMX stay in fp32. `HARNESS_CPU_BF16=0` keeps every CPU in
# fp32 (to compare with runs on machines without AMX).
CPU_BF16_ENV = "HARNESS_CPU_BF16"


@functools.cache  # the CPU does not change under a process; the environment is read once
def cpu_bf16() -> bool:
    """Whether this CPU trains and predicts under bf16 autocast (see `CPU_BF16_ENV`)."""
    if os.environ.get(CPU_BF16_ENV, "").strip() == "0":
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: absent, no AMX assumed
    return bool(amx is not None and amx())


def load_per_core() -> float | None:
    """The 1-minute load average per core (None where the platform has none, e.g. Windows)."""
    with contextlib.suppress(AttributeError, OSError):
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    return None


def busy(device: torch.device) -> bool:
    """Whether a CPU measurement now would be inflated by other work (see the module)."""
    if device.type != "cpu":
        return False  # a GPU is timed by wall clock after synchronising, and not shared here
    load = load_per_core()
    try:
        limit = float(os.environ.get(MAX_LOAD_ENV) or MAX_LOAD)
    except ValueError:
        limit = MAX_LOAD
    return load is not None and load > limit


def hardware(device: torch.device) -> dict[str, Any]:
    """The device as the rates' key names it (with the torch version)."""
    if device.type == "cuda":
        found: dict[str, Any] = {"gpu": torch.cuda.get_device_name(device)}
    elif device.type == "mps":
        found = {"chip": platform.processor() or platform.machine()}
    else:
        precision = "bf16 autocast" if cpu_bf16() else "fp32"
        found = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "precision": precision}
    return {**found, "torch": torch.__version__}


@functools.cache  # read for every `predict`'s key; the CPU does not change under a process
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(device: torch.device) -> str:
    """Host and hardware, and how busy the machine was: best-of-N cannot undo load that lasts
    the whole measurement, so a reader can see why a calibration is high."""
    parts = ", ".join(f"{k} {v}" for k, v in hardware(device).items())
    with contextlib.suppress(AttributeError, OSError):  # no load average on Windows
        parts += f"; load average {os.getloadavg()[0]:.1f} while measuring"
    return f"{platform.node() or 'unknown host'}: {parts}"
