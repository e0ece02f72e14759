"""TensorRT-RTX engine files of a bundle: target GPUs, folder names, and whether one may run here.

TensorRT for RTX builds on any machine, without a GPU (ahead-of-time build), for a list of
compute capabilities set on the builder config; its plans go to
``bundle/engines/rtx-<sm list>/<precision>.plan`` (e.g. ``rtx-sm86-sm89-sm120``) with the same
sidecar as standard TensorRT plans (``runtime: "tensorrt-rtx"``, ``compute_capabilities``).
A plan runs only on a GPU whose compute capability is in that list, and only with the exact
TensorRT-RTX version that built it (NVIDIA, TensorRT-RTX "Engine Compatibility": no version
compatibility). :func:`check_rtx_engine` refuses anything else with the rebuild command.
Nothing here imports TensorRT-RTX at module level.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

from medseg.bundle.engines import (
    ENGINES_DIR,
    RTX_KEY_PREFIX,
    engine_path,
    rebuild_command,
    version_tuple,
)
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError, EngineBuildError, MissingDependencyError
from medseg.runtime.cuda import GpuInfo
from medseg.runtime.engines import check_plan_files

__all__ = [
    "ACCEPTED_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "check_rtx_engine",
    "find_rtx_engine",
    "own_engine_path",
    "parse_capabilities",
    "rtx_key",
    "runtime_cache_path",
    "tensorrt_rtx_module",
]

#: Compute capabilities TensorRT-RTX 1.7 builds for (its ``ComputeCapability`` enum, less
#: NONE/CURRENT: CURRENT queries the GPU of the build machine): Turing, Ampere A100, Ampere
#: RTX, Ada, Blackwell RTX, GB10.
ACCEPTED_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
#: TensorRT-RTX's own default targets (RTX 30xx/A-series, 40xx/Ada, 50xx/Blackwell).
DEFAULT_CAPABILITIES = ("8.6", "8.9", "12.0")

_INSTALL_HINT = "pip install 'medseg-edge[rtx]' (tensorrt-rtx-cu12, builds on any machine)"


def tensorrt_rtx_module() -> ModuleType:
    """``tensorrt_rtx``; MissingDependencyError naming the extra when it is not installed."""
    try:
        return importlib.import_module("tensorrt_rtx")
    except ImportError:
        raise MissingDependencyError(f"TensorRT-RTX is not installed: {_INSTALL_HINT}") from None


def _sort_key(cap: str) -> tuple[int, int]:
    major, minor = cap.split(".")
    return int(major), int(minor)


def parse_capabilities(text: str) -> tuple[str, ...]:
    """``"86,89,120"`` (also ``"8.6"``, ``"sm86"``) -> ``("8.6", "8.9", "12.0")``, sorted.

    Raises:
        ConfigError: empty, repeated or unknown capability (the message lists the accepted).
    """
    accepted = ", ".join(c.replace(".", "") for c in ACCEPTED_CAPABILITIES)
    caps = []
    for word in (w.strip().lower() for w in str(text).split(",")):
        match = re.fullmatch(r"(?:sm_?)?(\d{1,2})\.?(\d)", word)
        cap = f"{int(match.group(1))}.{match.group(2)}" if match else word
        if cap not in ACCEPTED_CAPABILITIES:
            raise ConfigError(
                f"--compute-capability {text!r}: {word or '(empty)'!r} is not a compute "
                f"capability TensorRT-RTX builds for; accepted: {accepted} (e.g. 86,89,120)"
            )
        caps.append(cap)
    if len(set(caps)) != len(caps):
        raise ConfigError(f"--compute-capability {text!r} repeats a capability")
    return tuple(sorted(caps, key=_sort_key))


def rtx_key(capabilities: tuple[str, ...]) -> str:
    """Folder of plans for these GPUs: ``("8.6", "12.0")`` -> ``"rtx-sm86-sm120"``."""
    return RTX_KEY_PREFIX + "-".join(f"sm{c.replace('.', '')}" for c in capabilities)


def runtime_cache_path(plan: Path, gpu: GpuInfo) -> Path:
    """The runtime (JIT kernel) cache of a plan on one GPU model: ``int8.sm89.runtime-cache``.

    Beside the plan, one per compute capability: TensorRT-RTX rejects a cache from another
    GPU, and one bundle folder may serve several RTX generations.
    """
    return Path(plan).with_suffix(f".{gpu.sm}.runtime-cache")


def check_rtx_engine(
    bundle: Path, manifest: Manifest, precision: str, gpu: GpuInfo, rtx_version: str
) -> Path:
    """The TensorRT-RTX plan that may run ``precision`` of ``bundle`` on this GPU.

    Every ``engines/rtx-*/<precision>.plan`` is tried, those listing this GPU first.

    Raises:
        ConfigError: the bundle has no such precision.
        EngineBuildError: one line: no plan, or why the plan may not run here (its files, the
            TensorRT-RTX version, this GPU's compute capability), with the rebuild command.
    """
    bundle = Path(bundle)
    if precision not in manifest.precisions:
        raise ConfigError(
            f"bundle {bundle} has no {precision} model; it has {sorted(manifest.precisions)}"
        )
    here = f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
    plans = sorted((bundle / ENGINES_DIR).glob(f"{RTX_KEY_PREFIX}*/{precision}.plan"))
    plans.sort(key=lambda p: f"sm{here.replace('.', '')}" not in p.parent.name.split("-"))
    extra = here in ACCEPTED_CAPABILITIES and here not in DEFAULT_CAPABILITIES
    fresh_caps = (*DEFAULT_CAPABILITIES, here) if extra else ()
    fresh = rebuild_command(
        bundle,
        precision,
        {"runtime": "tensorrt-rtx", "compute_capabilities": sorted(fresh_caps, key=_sort_key)},
    )
    if not plans:
        raise EngineBuildError(
            f"bundle {bundle} has no {precision} TensorRT-RTX engine: build it (on any machine) "
            f"with `{fresh}`"
        )
    errors = []
    for plan in plans:
        try:
            _check_one(plan, bundle, manifest, precision, gpu, rtx_version)
        except EngineBuildError as exc:
            errors.append(exc)
        else:
            return plan
    raise errors[0]


def _check_one(
    plan: Path, bundle: Path, manifest: Manifest, precision: str, gpu: GpuInfo, rtx_version: str
) -> None:
    sidecar = check_plan_files(plan, bundle, manifest, precision)
    again = rebuild_command(bundle, precision, sidecar.rebuild_flags())
    if sidecar.runtime != "tensorrt-rtx":
        raise EngineBuildError(
            f"engine {plan} was built by {sidecar.runtime} {sidecar.tensorrt_version}, not "
            f"TensorRT-RTX: rebuild it with `{again}`"
        )
    if version_tuple(sidecar.tensorrt_version) != version_tuple(rtx_version):
        raise EngineBuildError(
            f"engine {plan} was built with TensorRT-RTX {sidecar.tensorrt_version}; this machine "
            f"has TensorRT-RTX {rtx_version} (a TensorRT-RTX engine runs only on the exact "
            f"version that built it): rebuild it with `{again}`"
        )
    here = f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
    if here not in sidecar.compute_capabilities:
        caps = (*sidecar.compute_capabilities, here)
        wider = rebuild_command(
            bundle,
            precision,
            {**sidecar.rebuild_flags(), "compute_capabilities": sorted(caps, key=_sort_key)},
        )
        hint = (
            f"rebuild it with `{wider}`"
            if here in ACCEPTED_CAPABILITIES
            else "TensorRT-RTX does not target this GPU (use --backend tensorrt with an engine "
            f"built here by `{rebuild_command(bundle, precision)}`)"
        )
        built_for = ", ".join(f"sm{c.replace('.', '')}" for c in sidecar.compute_capabilities)
        raise EngineBuildError(
            f"engine {plan} was built for {built_for}; this machine has {gpu.name} ({gpu.sm}): "
            f"{hint}"
        )


def own_engine_path(bundle: Path, capabilities: tuple[str, ...], precision: str) -> Path:
    """``bundle/engines/rtx-<sm list>/<precision>.plan``."""
    return engine_path(bundle, rtx_key(capabilities), precision)


def find_rtx_engine(bundle: Path, manifest: Manifest, precision: str) -> Path | None:
    """The TensorRT-RTX plan to use for ``precision`` here, or None (no plan, no GPU, no
    TensorRT-RTX, or no plan that may run here). For backend auto-selection: never raises."""
    from medseg.runtime.cuda import gpu_available, gpu_info

    try:
        if not any((Path(bundle) / ENGINES_DIR).glob(f"{RTX_KEY_PREFIX}*/{precision}.plan")):
            return None
        if not gpu_available():
            return None
        version = str(tensorrt_rtx_module().__version__)
        return check_rtx_engine(bundle, manifest, precision, gpu_info(), version)
    except Exception:  # auto-selection falls back to ONNX Runtime whatever went wrong
        return None
