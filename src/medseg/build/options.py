"""What ``medseg build`` was asked for: :class:`BuildOptions`, validated before any work.

Options of one runtime given to the other are errors, not ignored: ``--compute-capability``
is TensorRT-RTX's; ``--dla-core``, ``--version-compatible``, ``--hardware-compat`` and
``--timing-cache`` are the standard TensorRT's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.bundle.engines import HARDWARE_COMPAT, RUNTIMES
from medseg.bundle.entries import PRECISIONS
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.runtime.engines_rtx import ACCEPTED_CAPABILITIES, DEFAULT_CAPABILITIES

__all__ = ["BuildOptions", "parse_size"]

#: Size suffixes: K/M/G and KiB/MiB/GiB are binary (as in trtexec), KB/MB/GB decimal.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
}


#: The largest size accepted (1 TiB: far beyond any GPU's memory).
_MAX_SIZE = 1 << 40


def parse_size(text: str, option: str = "size") -> int:
    """Bytes in ``"4GiB"``, ``"512MiB"``, ``"1G"`` (binary), ``"2GB"`` (decimal), ``"1048576"``.

    Raises:
        ConfigError: not a positive size (the message lists the accepted units).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match and match.group(2) and unit is None:
        raise ConfigError(
            f"{option} {text!r}: unknown unit {match.group(2)!r}; accepted: K, M, G, KiB, MiB, GiB "
            "(binary) or KB, MB, GB (decimal), e.g. 4GiB"
        )
    value = int(float(match.group(1)) * unit) if match and unit else 0
    if value > _MAX_SIZE:
        raise ConfigError(
            f"{option} {text!r} is {value / 2**40:.0f} TiB; accepted: at most 1 TiB (a GPU "
            "workspace "
            "is bounded by the GPU memory, e.g. 4GiB)"
        )
    if value < 1:
        raise ConfigError(
            f"{option} {text!r} is not a positive size: use bytes or a number with K, M, G, KiB, "
            "MiB, GiB (binary) or KB, MB, GB (decimal), e.g. 4GiB"
        )
    return value


@dataclass(frozen=True)
class BuildOptions:
    """What ``medseg build`` was asked for.

    Attributes:
        precisions: ``("all",)`` (every precision of the bundle) or some of fp32, fp16, int8.
        workspace_bytes: cap on TensorRT's workspace memory pool; None: TensorRT's default
            (the device memory).
        timing_cache: file of kernel timings read before and written after each build (makes
            rebuilds fast); None: no persistent cache.
        opt_level: ``builder_optimization_level`` 0-5 (higher: longer build, faster engine).
        version_compatible: the plan embeds a lean runtime and runs on later TensorRT versions
            (may be slower).
        hardware_compat: ``"none"`` (this GPU model) or ``"ampere+"`` (any sm >= 8.0 GPU; not
            on Jetson).
        dla_core: run on this DLA core of a Jetson, layers DLA cannot run falling back to GPU.
        runtime: ``"tensorrt"`` (this device's GPU) or ``"tensorrt-rtx"`` (any machine; plans
            for RTX GPUs); version/hardware compatibility, DLA and the timing cache are
            options of standard TensorRT only.
        compute_capabilities: TensorRT-RTX targets, ``"major.minor"``; None: its defaults
            8.6, 8.9, 12.0 (see :attr:`capabilities`).
    """

    precisions: tuple[str, ...] = ("all",)
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    opt_level: int = 3
    version_compatible: bool = False
    hardware_compat: str = "none"
    dla_core: int | None = None
    runtime: str = "tensorrt"
    compute_capabilities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        accepted = ("all", *PRECISIONS)
        bad = [p for p in self.precisions if p not in accepted]
        if not self.precisions or bad or len(set(self.precisions)) != len(self.precisions):
            raise ConfigError(
                f"--precision {','.join(self.precisions)!r} must be 'all' or a comma list of "
                f"{', '.join(PRECISIONS)} without repeats"
            )
        if "all" in self.precisions and len(self.precisions) > 1:
            raise ConfigError("--precision all cannot be combined with named precisions")
        if self.workspace_bytes is not None and self.workspace_bytes < 1:
            raise ConfigError(f"--workspace {self.workspace_bytes} must be a positive size")
        if isinstance(self.opt_level, bool) or self.opt_level not in range(6):
            raise ConfigError(f"--opt-level {self.opt_level} must be an integer from 0 to 5")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(
                f"--hardware-compat {self.hardware_compat!r} must be one of "
                f"{', '.join(HARDWARE_COMPAT)}"
            )
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core {self.dla_core} must be >= 0")
        if self.dla_core is not None and self.hardware_compat != "none":
            raise ConfigError(
                "--dla-core and --hardware-compat ampere+ exclude each other: DLA exists on "
                "Jetson, where TensorRT has no hardware compatibility"
            )
        self._check_runtime()

    def _check_runtime(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime {self.runtime!r} must be one of {', '.join(RUNTIMES)}")
        if self.runtime == "tensorrt":
            if self.compute_capabilities is not None:
                raise ConfigError(
                    "--compute-capability is a TensorRT-RTX option (standard TensorRT builds for "
                    "the GPU it runs on): add --runtime tensorrt-rtx, or drop it"
                )
            return
        others = [
            name
            for name, given in (
                ("--dla-core", self.dla_core is not None),
                ("--version-compatible", self.version_compatible),
                ("--hardware-compat", self.hardware_compat != "none"),
                ("--timing-cache", self.timing_cache is not None),
            )
            if given
        ]
        if others:
            raise ConfigError(
                f"{', '.join(others)}: option(s) of the standard TensorRT runtime, not of "
                "--runtime tensorrt-rtx (TensorRT-RTX has no DLA, no version or hardware "
                "compatibility, and no timing cache: its plans target a --compute-capability "
                "list and run on that exact TensorRT-RTX version)"
            )
        caps = self.compute_capabilities
        if caps is not None:
            bad = [c for c in caps if c not in ACCEPTED_CAPABILITIES]
            if not caps or bad or len(set(caps)) != len(caps):
                raise ConfigError(
                    f"--compute-capability {','.join(caps)!r} must be a comma list without "
                    f"repeats of {', '.join(c.replace('.', '') for c in ACCEPTED_CAPABILITIES)}"
                )

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The TensorRT-RTX targets, sorted; () for standard TensorRT."""
        if self.runtime != "tensorrt-rtx":
            return ()
        caps = self.compute_capabilities or DEFAULT_CAPABILITIES
        return tuple(sorted(caps, key=lambda c: tuple(int(v) for v in c.split("."))))

    def resolve(self, manifest: Manifest, bundle: Path) -> list[str]:
        """The precisions to build, in fp32, fp16, int8 order; ConfigError if one is missing."""
        if self.precisions == ("all",):
            return [p for p in PRECISIONS if p in manifest.precisions]
        missing = [p for p in self.precisions if p not in manifest.precisions]
        if missing:
            raise ConfigError(
                f"bundle {bundle} has no {', '.join(missing)} model (it has "
                f"{', '.join(sorted(manifest.precisions))}); re-export it with --fp16 / --int8"
            )
        return [p for p in PRECISIONS if p in self.precisions]

    def flags(self) -> dict[str, Any]:
        """The sidecar's record of these options."""
        return {
            "opt_level": self.opt_level,
            "workspace_bytes": self.workspace_bytes,
            "version_compatible": self.version_compatible,
            "hardware_compat": self.hardware_compat,
            "dla_core": self.dla_core,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "strongly_typed": True,
        }
