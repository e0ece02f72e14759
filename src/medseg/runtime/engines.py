"""Whether a bundle's TensorRT engine may run here, and which one to run.

The files (``engines/<device-key>/<precision>.plan``, the sidecar beside it, the rebuild
command) are described in :mod:`medseg.bundle.engines`. Before the runtime deserialises a plan,
:func:`check_engine` compares the sidecar with this machine and the bundle, and refuses with
one line naming the engine, what it was built for, what this machine is, and the command that
rebuilds it. Nothing here imports TensorRT at module level.

Compatibility rules (TensorRT documentation, "Engine Compatibility" / "Version Compatibility"):

- GPU: an engine runs on the GPU model it was built on, unless it was built with hardware
  compatibility ``ampere+`` (``HardwareCompatibilityLevel.AMPERE_PLUS``): then any GPU of
  compute capability 8.0 or newer.
- TensorRT: the exact version it was built with, unless it was built version-compatible
  (``BuilderFlag.VERSION_COMPATIBLE``, the plan embeds a lean runtime): then this version or
  any later one (TensorRT 10 version-compatible plans also load in TensorRT 11).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from medseg.bundle.engines import (
    ENGINES_DIR,
    RTX_KEY_PREFIX,
    EngineSidecar,
    engine_path,
    key_flags,
    rebuild_command,
    sidecar_path,
    version_tuple,
)
from medseg.bundle.entries import file_sha256
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError, EngineBuildError, MedsegError, MissingDependencyError
from medseg.runtime.cuda import GpuInfo, device_key

__all__ = [
    "EngineChoice",
    "check_engine",
    "check_plan_files",
    "find_engine",
    "resolve_engine",
    "select_engine",
    "tensorrt_module",
]

_INSTALL_HINT = (
    "install it on the target device: JetPack ships TensorRT; on an x86 workstation with an "
    "NVIDIA driver run pip install 'medseg-edge[trt]'"
)


def tensorrt_module(builder: bool = False) -> ModuleType:
    """``tensorrt``, or (to run engines only) the lean runtime ``tensorrt_lean``.

    Args:
        builder: the full TensorRT (builder + ONNX parser) is needed, not only a runtime.

    Raises:
        MissingDependencyError: one line saying what is missing and how to get it.
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        pass
    try:
        lean = importlib.import_module("tensorrt_lean")
    except ImportError:
        raise MissingDependencyError(f"TensorRT is not installed: {_INSTALL_HINT}") from None
    if builder:
        raise MissingDependencyError(
            "only the TensorRT lean runtime (tensorrt_lean) is installed: it runs engines but "
            f"cannot build them; building needs the full TensorRT: {_INSTALL_HINT}"
        )
    return lean


def check_plan_files(plan: Path, bundle: Path, manifest: Manifest, precision: str) -> EngineSidecar:
    """The sidecar of ``plan`` once the files agree: it exists, names ``precision``, matches the
    plan's sha256, and was built from the ONNX file the bundle holds now.

    Raises:
        EngineBuildError: one line naming the plan, the problem and the rebuild command.
    """
    fresh = rebuild_command(bundle, precision, key_flags(Path(plan).parent.name))
    side = sidecar_path(plan)
    if not side.is_file():
        raise EngineBuildError(
            f"engine {plan} has no sidecar {side.name} (interrupted or foreign build): "
            f"rebuild it on this device with `{fresh}`"
        )
    try:
        sidecar = EngineSidecar.load(side)
    except ConfigError as exc:
        raise EngineBuildError(f"{exc}: rebuild the engine with `{fresh}`") from exc
    again = rebuild_command(bundle, precision, sidecar.rebuild_flags())
    if sidecar.precision != precision:
        raise EngineBuildError(
            f"engine {plan} says it is {sidecar.precision}, not {precision}: rebuild with `{again}`"
        )
    if file_sha256(plan) != sidecar.engine_sha256:
        raise EngineBuildError(
            f"engine {plan} does not match the sha256 in {side.name} (truncated or tampered): "
            f"rebuild it with `{again}`"
        )
    if sidecar.source_onnx_sha256 != manifest.precisions[precision].sha256:
        raise EngineBuildError(
            f"engine {plan} is stale: it was built from another {sidecar.source_onnx} than the "
            f"bundle holds now (the bundle was re-exported): rebuild it with `{again}`"
        )
    return sidecar


def _next_major(major: int) -> int:
    """The TensorRT major a version-compatible engine may also run on (there was no 9.x GA)."""
    return 10 if major == 8 else major + 1


def _check_one(
    plan: Path,
    bundle: Path,
    manifest: Manifest,
    precision: str,
    gpu: GpuInfo,
    trt_version: str,
    lean: bool = False,
) -> EngineSidecar:
    """The sidecar of ``plan``; a one-line EngineBuildError if it may not run here."""
    sidecar = check_plan_files(plan, bundle, manifest, precision)
    fresh = rebuild_command(bundle, precision)
    again = rebuild_command(bundle, precision, sidecar.rebuild_flags())
    if sidecar.runtime != "tensorrt":
        raise EngineBuildError(
            f"engine {plan} was built by {sidecar.runtime} {sidecar.tensorrt_version}, which the "
            f"standard TensorRT cannot run: use --backend {sidecar.runtime}, or build a TensorRT "
            f"engine on this device with `{fresh}`"
        )
    built_for = f"{sidecar.gpu_name} (sm{sidecar.compute_capability.replace('.', '')})"
    here = f"{gpu.name} ({gpu.sm})"
    if lean and not sidecar.flags["version_compatible"]:
        compatible = rebuild_command(
            bundle, precision, {**sidecar.flags, "version_compatible": True}
        )
        raise EngineBuildError(
            f"engine {plan} is not version-compatible, and only the TensorRT lean runtime "
            f"(tensorrt_lean) is installed here, which runs version-compatible engines only: "
            f"rebuild it with `{compatible}`, or install the full TensorRT"
        )
    if sidecar.flags["hardware_compat"] == "ampere+":
        if gpu.integrated:
            raise EngineBuildError(
                f"engine {plan} was built hardware-compatible (ampere+), which TensorRT does not "
                f"support on Jetson ({here}): build one on this device with `{fresh}`"
            )
        if gpu.compute_capability < (8, 0):
            raise EngineBuildError(
                f"engine {plan} was built for Ampere or newer GPUs (sm >= 80); this machine has "
                f"{here}: build one on this device with `{fresh}`"
            )
    elif sidecar.capability != gpu.compute_capability or sidecar.gpu_name != gpu.name:
        raise EngineBuildError(
            f"engine {plan} was built for {built_for}; this machine has {here}: build one on "
            f"this device with `{fresh}`"
        )
    built, runs = version_tuple(sidecar.tensorrt_version), version_tuple(trt_version)
    if sidecar.flags["version_compatible"]:
        if runs < built or runs[0] > _next_major(built[0]):
            raise EngineBuildError(
                f"engine {plan} was built version-compatible with TensorRT "
                f"{sidecar.tensorrt_version}, which runs on that version, later ones of the same "
                f"major and the next major ({_next_major(built[0])}.x); this machine has "
                f"TensorRT {trt_version}: rebuild it here with `{again}`"
            )
    else:
        n = min(len(built), len(runs), 4)
        if built[:n] != runs[:n]:
            raise EngineBuildError(
                f"engine {plan} was built with TensorRT {sidecar.tensorrt_version}; this machine "
                f"has TensorRT {trt_version} (engines run only on the TensorRT version that "
                f"built them unless built with --version-compatible): rebuild it with `{again}`"
            )
    return sidecar


def check_engine(
    bundle: Path,
    manifest: Manifest,
    precision: str,
    gpu: GpuInfo,
    trt_version: str,
    lean: bool = False,
) -> Path:
    """The plan that may run ``precision`` of ``bundle`` here (see :func:`resolve_engine`)."""
    return resolve_engine(bundle, manifest, precision, gpu, trt_version, lean)[0]


def resolve_engine(
    bundle: Path,
    manifest: Manifest,
    precision: str,
    gpu: GpuInfo,
    trt_version: str,
    lean: bool = False,
) -> tuple[Path, EngineSidecar]:
    """The plan that may run ``precision`` of ``bundle`` on this GPU with this TensorRT, and
    its sidecar (read once: pass it on to the loader).

    This device's own folder is tried first, then hardware-compatible engines built elsewhere.
    ``lean``: only the lean runtime is installed, which runs version-compatible engines only.

    Raises:
        ConfigError: the bundle has no such precision.
        EngineBuildError: one line: no engine, or why the engine found may not run here, with
            the ``medseg build`` command that makes one.
    """
    bundle = Path(bundle)
    if precision not in manifest.precisions:
        raise ConfigError(
            f"bundle {bundle} has no {precision} model; it has {sorted(manifest.precisions)}"
        )
    own = engine_path(bundle, device_key(gpu), precision)
    others = sorted(
        p
        for p in (bundle / ENGINES_DIR).glob(f"*/{precision}.plan")
        if p != own and not p.parent.name.startswith(RTX_KEY_PREFIX)
    )
    candidates = ([own] if own.is_file() else []) + others
    if not candidates:
        raise EngineBuildError(
            f"bundle {bundle} has no {precision} TensorRT engine for this GPU ({gpu.name}, "
            f"{gpu.sm}): build it on this device with `{rebuild_command(bundle, precision)}`"
        )
    errors: list[EngineBuildError] = []
    for plan in candidates:
        try:
            return plan, _check_one(plan, bundle, manifest, precision, gpu, trt_version, lean)
        except EngineBuildError as exc:
            errors.append(exc)
    raise errors[0]


@dataclass(frozen=True)
class EngineChoice:
    """What backend auto-selection found for one precision of a bundle.

    Attributes:
        plan: the engine to run, or ``None`` (ONNX Runtime will run the ONNX file).
        refused: ``None`` when an engine was chosen or the bundle has none for this
            precision; else one line: which engine was refused and why (no GPU, no TensorRT,
            stale, built for another GPU...), for the caller to show.
    """

    plan: Path | None
    refused: str | None = None
    sidecar: EngineSidecar | None = None


def select_engine(bundle: Path, manifest: Manifest, precision: str) -> EngineChoice:
    """The engine auto-selection may use for ``precision`` here, or why none is used.

    Never raises for an unusable engine: the reason is returned in :attr:`EngineChoice.refused`
    (``medseg infer --backend auto`` prints it and keeps going with ONNX Runtime).
    """
    from medseg.runtime.cuda import gpu_available, gpu_info

    plans = sorted((Path(bundle) / ENGINES_DIR).glob(f"*/{precision}.plan"))
    if not plans:
        return EngineChoice(None)
    shown = ", ".join(str(p.relative_to(bundle)) for p in plans[:3])
    if not gpu_available():
        return EngineChoice(None, f"TensorRT engine {shown} not used: this machine has no GPU")
    try:
        trt = tensorrt_module()
        lean = trt.__name__ == "tensorrt_lean"
        plan, sidecar = resolve_engine(
            bundle, manifest, precision, gpu_info(), str(trt.__version__), lean
        )
        return EngineChoice(plan, sidecar=sidecar)
    except (MedsegError, OSError) as exc:  # no TensorRT, a stale or foreign engine: say why
        return EngineChoice(None, f"TensorRT engine {shown} refused: {exc}")


def find_engine(bundle: Path, manifest: Manifest, precision: str) -> Path | None:
    """The engine to use for ``precision`` here, or None (no GPU, no TensorRT, no valid engine).

    For backend auto-selection: never raises for an unusable engine; :func:`select_engine`
    also says why an engine was refused.
    """
    return select_engine(bundle, manifest, precision).plan
