"""What this CPU runs natively: the instruction sets behind BF16 and INT8 inference.

Read from the ``flags`` line of ``/proc/cpuinfo`` (Linux); where that file does not exist,
from OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of its CPU device (when OpenVINO is installed).
``bf16`` inference is offered only where the CPU has AVX512_BF16 or AMX-BF16: elsewhere
OpenVINO would emulate it, slower than FP32. The bench fingerprint records which capability
and which source were used.

The **CPU class** (:attr:`CpuFeatures.cpu_class`) names the INT8 code path ONNX Runtime and
OpenVINO take, because INT8 (and BF16) accuracy belongs to it: ``amx`` (AMX-INT8 tiles),
``avx512-vnni``, ``avx-vnni`` (VNNI on 256-bit registers), ``avx512`` (AVX-512 without VNNI),
``avx2`` (no VNNI: u8 x s8 products go through ``vpmaddubsw``, whose 16-bit sums saturate),
``sse`` (below AVX2). The export records the class each backend's accuracy was measured on;
the runtime compares this machine's class with the recorded ones
(:func:`medseg.runtime.accuracy_class.class_note`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError

__all__ = ["CPU_CLASSES", "CpuFeatures", "cpu_class_of", "cpu_features", "require_bf16"]

#: Instruction sets that give native BF16 inference, best first (cpuinfo flag names).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: Instruction sets that give fast INT8 dot products, best first.
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
#: Vector widths below VNNI (they decide the class of a CPU without VNNI).
VECTOR_FLAGS = ("avx512f", "avx2")
#: CPU classes, best INT8 path first: (class, the cpuinfo flag that makes it).
CPU_CLASSES = (
    ("amx", "amx_int8"),
    ("avx512-vnni", "avx512_vnni"),
    ("avx-vnni", "avx_vnni"),
    ("avx512", "avx512f"),
    ("avx2", "avx2"),
)
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's inference-relevant instruction sets.

    Attributes:
        flags: the cpuinfo flags among :data:`BF16_FLAGS` and :data:`INT8_FLAGS` (or, from
            OpenVINO, its capability names such as ``"BF16"``).
        source: ``"/proc/cpuinfo"``, ``"openvino OPTIMIZATION_CAPABILITIES"`` or ``"unknown"``.
    """

    flags: frozenset[str]
    source: str

    @property
    def bf16(self) -> str | None:
        """The native BF16 instruction set used (``"amx_bf16"``, ``"avx512_bf16"``), or None."""
        for flag in (*BF16_FLAGS, "BF16"):
            if flag in self.flags:
                return flag
        return None

    @property
    def int8(self) -> str | None:
        """The INT8 dot-product instruction set (``"avx512_vnni"``...), or None."""
        return next((f for f in INT8_FLAGS if f in self.flags), None)

    @property
    def cpu_class(self) -> str:
        """The CPU class (see the module docstring): ``"amx"``, ``"avx512-vnni"``,
        ``"avx-vnni"``, ``"avx512"``, ``"avx2"``, ``"sse"``; ``"unknown"`` when the flags were
        not read from ``/proc/cpuinfo`` (OpenVINO's capability names do not say the ISA)."""
        return cpu_class_of(self.flags) if self.source == str(CPUINFO) else "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bf16": self.bf16,
            "int8": self.int8,
            "cpu_class": self.cpu_class,
            "source": self.source,
        }


def cpu_class_of(flags: frozenset[str] | set[str]) -> str:
    """The CPU class of a set of ``/proc/cpuinfo`` flags (first of :data:`CPU_CLASSES` whose
    flag is present; ``"sse"`` below AVX2)."""
    return next((name for name, flag in CPU_CLASSES if flag in flags), "sse")


def _from_cpuinfo(text: str) -> frozenset[str]:
    for line in text.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return frozenset(flags & {*BF16_FLAGS, *INT8_FLAGS, *VECTOR_FLAGS})
    return frozenset()


def _from_openvino() -> frozenset[str] | None:
    try:
        import openvino as ov

        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # not installed, or no CPU plugin: nothing known
        return None
    return frozenset(str(c) for c in capabilities)


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once per process)."""
    try:
        return CpuFeatures(_from_cpuinfo(CPUINFO.read_text()), str(CPUINFO))
    except OSError:
        pass
    found = _from_openvino()
    if found is not None:
        return CpuFeatures(found, "openvino OPTIMIZATION_CAPABILITIES")
    return CpuFeatures(frozenset(), "unknown")


def require_bf16(features: CpuFeatures | None = None) -> str:
    """The native BF16 instruction set, or a ConfigError naming what is missing."""
    features = features or cpu_features()
    if features.bf16 is None:
        raise ConfigError(
            "--precision bf16 needs native BF16 on the CPU (AVX512_BF16 or AMX-BF16); this "
            f"CPU has neither (checked {features.source}): use --precision fp32 or int8"
        )
    return features.bf16
