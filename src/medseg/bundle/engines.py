"""Engine files of a bundle: where they live, their sidecar, and the command that rebuilds them.

``medseg build`` writes ``bundle/engines/<device-key>/<precision>.plan`` and, beside it,
``<precision>.json`` (:class:`EngineSidecar`): what the engine was built from, with which
TensorRT, on which GPU and with which flags (plus the network report,
:class:`~medseg.bundle.network_report.NetworkReport`). Build writes these files; the runtime
(:mod:`medseg.runtime.engines`), deploy, bench and export read them. Nothing here imports
TensorRT.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medseg.bundle.network_report import NetworkReport
from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, StrictFloat, StrictInt, StrictStr, parse, save_json

__all__ = [
    "ENGINES_DIR",
    "FLAG_KEYS",
    "HARDWARE_COMPAT",
    "RTX_KEY_PREFIX",
    "RUNTIMES",
    "SIDECAR_SCHEMA_VERSION",
    "EngineSidecar",
    "engine_path",
    "key_flags",
    "rebuild_command",
    "sidecar_path",
    "version_tuple",
]

#: The bundle folder that holds the engines: ``engines/<device-key>/<precision>.plan``.
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
