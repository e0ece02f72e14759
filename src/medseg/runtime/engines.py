"""TensorRT engine files of a bundle: where they live, their sidecar, and whether one may run here.

``medseg build`` writes ``bundle/engines/<device-key>/<precision>.plan`` and, beside it,
``<precision>.json`` (:class:`EngineSidecar`): what the engine was built from, with which
TensorRT, on which GPU and with which flags. Before the runtime deserialises a plan,
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
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from medseg.bundle.manifest import Manifest, file_sha256
from medseg.errors import ConfigError, EngineBuildError, MedsegError, MissingDependencyError
from medseg.runtime.cuda import GpuInfo, device_key
from medseg.runtime.network_report import NetworkReport
from medseg.schema import FORBID_EXTRA, StrictFloat, StrictInt, StrictStr, parse, save_json

__all__ = [
    "ENGINES_DIR",
    "HARDWARE_COMPAT",
    "RTX_KEY_PREFIX",
    "RUNTIMES",
    "SIDECAR_SCHEMA_VERSION",
    "EngineChoice",
    "EngineSidecar",
    "check_engine",
    "check_plan_files",
    "engine_path",
    "find_engine",
    "key_flags",
    "rebuild_command",
    "resolve_engine",
    "select_engine",
    "sidecar_path",
    "tensorrt_module",
    "version_tuple",
]

ENGINES_DIR = "engines"
#: 2 added ``runtime``, ``compute_capabilities`` and ``network``; version 1 sidecars (standard
#: TensorRT, no network report) are still read.
SIDECAR_SCHEMA_VERSION = 2
#: What can build and run a plan: the standard TensorRT, or TensorRT for RTX.
RUNTIMES = ("tensorrt", "tensorrt-rtx")
#: ``engines/`` folders of TensorRT-RTX plans start with this (``rtx-sm86-sm89-sm120``); the
#: standard TensorRT runtime never looks into them.
RTX_KEY_PREFIX = "rtx-"
#: Accepted hardware-compatibility levels: this GPU model only, or any GPU with sm >= 8.0.
HARDWARE_COMPAT = ("none", "ampere+")
FLAG_KEYS = (
    "opt_level",
    "workspace_bytes",
    "version_compatible",
    "hardware_compat",
    "dla_core",
    "timing_cache",
    "strongly_typed",
)

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


def version_tuple(text: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; ConfigError if it has no leading number."""
    parts = re.findall(r"\d+", text.split("+")[0])
    if not parts:
        raise ConfigError(f"{text!r} is not a TensorRT version")
    return tuple(int(p) for p in parts)


def engine_path(bundle: Path, key: str, precision: str) -> Path:
    """``bundle/engines/<device-key>/<precision>.plan``."""
    return Path(bundle) / ENGINES_DIR / key / f"{precision}.plan"


def sidecar_path(plan: Path) -> Path:
    """The sidecar JSON beside a plan: ``<precision>.json``."""
    return Path(plan).with_suffix(".json")


def rebuild_command(bundle: Path, precision: str, flags: dict[str, Any] | None = None) -> str:
    """``medseg build BUNDLE --precision P`` plus the non-default flags an engine was built with."""
    words = ["medseg", "build", str(bundle), "--precision", precision]
    flags = flags or {}
    if flags.get("runtime", "tensorrt") != "tensorrt":
        words += ["--runtime", str(flags["runtime"])]
    if flags.get("compute_capabilities"):
        caps = ",".join(c.replace(".", "") for c in flags["compute_capabilities"])
        words += ["--compute-capability", caps]
    if flags.get("opt_level", 3) != 3:
        words += ["--opt-level", str(flags["opt_level"])]
    if flags.get("workspace_bytes"):
        words += ["--workspace", str(flags["workspace_bytes"])]
    if flags.get("timing_cache"):
        words += ["--timing-cache", str(flags["timing_cache"])]
    if flags.get("version_compatible"):
        words.append("--version-compatible")
    if flags.get("hardware_compat", "none") != "none":
        words += ["--hardware-compat", str(flags["hardware_compat"])]
    if flags.get("dla_core") is not None:
        words += ["--dla-core", str(flags["dla_core"])]
    return " ".join(words)


def key_flags(key: str) -> dict[str, Any]:
    """Rebuild flags implied by an ``engines/`` folder name: ``rtx-sm86-sm120`` is TensorRT-RTX
    for 8.6 and 12.0; any other folder is the standard TensorRT (no flags)."""
    if not key.startswith(RTX_KEY_PREFIX):
        return {}
    sms = re.findall(r"sm(\d+)", key)
    return {
        "runtime": "tensorrt-rtx",
        "compute_capabilities": [f"{int(v) // 10}.{int(v) % 10}" for v in sms],
    }


@dataclass(frozen=True)
class EngineSidecar:
    """What a plan was built from and for (the ``<precision>.json`` beside it).

    Attributes:
        tensorrt_version: TensorRT that built it, e.g. ``"10.3.0.30"``.
        gpu_name: the build GPU's name; ``compute_capability``: its ``"major.minor"``.
        device_key: the ``engines/`` folder it was written to.
        precision: ``fp32`` / ``fp16`` / ``int8`` (the ONNX file it was compiled from).
        flags: ``opt_level``, ``workspace_bytes``, ``version_compatible``, ``hardware_compat``,
            ``dla_core``, ``timing_cache`` (path or None), ``strongly_typed``.
        source_onnx, source_onnx_sha256: the ONNX file name and its sha256 at build time.
        engine_sha256: sha256 of the plan file.
        profile: the optimisation profile, ``{"batch"|"height"|"width": {min, opt, max}}``.
        build_seconds: build wall time; ``created``: ISO time; ``medseg_version``.
        runtime: ``"tensorrt"`` or ``"tensorrt-rtx"`` (then ``tensorrt_version`` is the
            TensorRT-RTX version, ``gpu_name`` and ``compute_capability`` are empty: no GPU
            was used).
        compute_capabilities: TensorRT-RTX only: the ``"major.minor"`` GPUs the plan runs on.
        network: the network report of the parsed ONNX file (layer count, layer types,
            convolution precisions, FP32 tensors, warnings); None in version 1 sidecars.
    """

    __pydantic_config__ = FORBID_EXTRA

    tensorrt_version: StrictStr
    gpu_name: StrictStr
    compute_capability: StrictStr
    device_key: StrictStr
    precision: StrictStr
    flags: dict[str, Any]
    source_onnx: StrictStr
    source_onnx_sha256: StrictStr
    engine_sha256: StrictStr
    profile: dict[str, dict[str, StrictInt]]
    build_seconds: StrictFloat
    created: StrictStr
    medseg_version: StrictStr
    runtime: StrictStr = "tensorrt"
    compute_capabilities: tuple[StrictStr, ...] = ()
    network: NetworkReport | None = None

    def __post_init__(self) -> None:
        """Cross-field rules (types are checked by :func:`medseg.schema.parse`)."""
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r} must be one of {list(RUNTIMES)}")
        caps = self.compute_capabilities
        if self.runtime == "tensorrt-rtx" and (
            not caps or not all(re.fullmatch(r"\d+\.\d+", c) for c in caps)
        ):
            raise ConfigError(
                f"compute_capabilities {list(caps)!r} must be a non-empty list of "
                "'major.minor', e.g. ['8.6', '8.9']"
            )
        missing = [key for key in FLAG_KEYS if key not in self.flags]
        if missing:
            raise ConfigError(f"flags lack {missing[0]!r}; a sidecar records {list(FLAG_KEYS)}")
        if self.flags["hardware_compat"] not in HARDWARE_COMPAT:
            raise ConfigError(
                f"flags.hardware_compat {self.flags['hardware_compat']!r} must be one of "
                f"{list(HARDWARE_COMPAT)}"
            )
        if self.runtime == "tensorrt" and not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise ConfigError(
                f"compute_capability {self.compute_capability!r} must be 'major.minor', e.g. '8.7'"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capabilities"] = list(self.compute_capabilities)
        data["network"] = self.network.to_dict() if self.network else None
        return {"schema_version": SIDECAR_SCHEMA_VERSION, **data}

    def rebuild_flags(self) -> dict[str, Any]:
        """The flags :func:`rebuild_command` needs to build this plan again."""
        return {
            **self.flags,
            "runtime": self.runtime,
            "compute_capabilities": list(self.compute_capabilities),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> EngineSidecar:
        """Validate and parse; ConfigError naming the sidecar and the first wrong key."""
        label = f"engine sidecar {where}".strip()
        if not isinstance(data, dict):
            raise ConfigError(f"{label} must hold a JSON object")
        if "schema_version" not in data:
            raise ConfigError(f"{label}: missing key schema_version")
        version = data.get("schema_version")
        if version not in (1, SIDECAR_SCHEMA_VERSION) or isinstance(version, bool):
            raise ConfigError(
                f"{label} has schema_version {version!r}; this medseg reads "
                f"1 and {SIDECAR_SCHEMA_VERSION}"
            )
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        return parse(cls, fields, label)

    def save(self, path: Path) -> Path:
        """Write the sidecar JSON atomically."""
        return save_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> EngineSidecar:
        """Read and validate a sidecar; ConfigError naming the file and the wrong key."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read engine sidecar {path}: {exc}") from exc
        return cls.from_dict(data, str(path))

    @property
    def capability(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


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
