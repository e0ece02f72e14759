"""The machine a benchmark ran on: CPU, its BF16/INT8 capability, cores, GPU, driver, library
versions, load.

Every result carries it, so a number is never quoted without its machine, and a baseline
from another machine is recognised (its relative latency gates are then skipped).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["describe_machine"]

#: Distributions whose versions go into every result.
LIBRARIES = (
    "medseg-edge",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "tensorrt-lean",
    "cuda-python",
    "torch",
    "nibabel",
    "pydicom",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _gpu() -> dict[str, Any]:
    """GPU name, compute capability and driver when a GPU is usable, else ``{}``."""
    try:
        from medseg.runtime.cuda import gpu_available, gpu_info

        if not gpu_available():
            return {}
        info = gpu_info()
    except Exception:  # no cuda-python, no driver: a CPU machine
        return {}
    return {
        "gpu": info.name,
        "compute_capability": ".".join(map(str, info.compute_capability)),
        "gpu_memory_gb": round(info.total_memory_bytes / 2**30, 1),
        "driver": str(info.driver_version),
    }


def _cpu_features() -> dict[str, Any]:
    """Native BF16 / INT8 instruction sets and where they were read (see medseg.runtime.cpu)."""
    from medseg.runtime.cpu import cpu_features

    return cpu_features().to_dict()


def describe_machine() -> dict[str, Any]:
    """JSON-ready description of this machine (``cpu`` and ``gpu`` identify it)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "gpu": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "cpu_features": _cpu_features(),
        "libraries": _versions(),
        "load_1min": load,
    }
    info.update(_gpu())
    return info
