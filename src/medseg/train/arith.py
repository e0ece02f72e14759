"""The arithmetic a training run uses on its device: precision, memory format, compile.

* CUDA: automatic mixed precision, BF16 where the GPU has it (Ampere and newer: no loss
  scaling needed), FP16 with a gradient scaler otherwise.
* CPU: BF16 autocast only where the CPU computes BF16 natively (``avx512_bf16`` or
  ``amx_bf16`` in ``/proc/cpuinfo``); FP32 elsewhere (emulated BF16 is slower than FP32).
* Channels-last (NHWC) memory format: on by default. Measured on an AVX2 AMD EPYC (2 cores,
  attention-fusion, one optimisation step): 1.27x faster than NCHW (issue 23); on CUDA with
  mixed precision NHWC is what the tensor-core convolution kernels use.
* ``torch.compile`` is not used: on a CPU its first compilation of this network takes longer
  than the steps of a short run save (see ``docs/notes/i23.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError

if TYPE_CHECKING:
    from medseg.train.config import TrainConfig

__all__ = ["Arithmetic", "cpu_has_native_bf16", "resolve_arithmetic", "run_arithmetic"]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU flags list AVX512_BF16 or AMX-BF16 (Linux; False elsewhere)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False


@dataclass(frozen=True)
class Arithmetic:
    """How the steps compute.

    Attributes:
        dtype: autocast dtype name, ``"bf16"``, ``"fp16"``, or ``None`` (FP32).
        channels_last: NHWC memory format for the model and its inputs.
        scaler: FP16 needs a gradient scaler (BF16 and FP32 do not).
        reason: one line saying why (printed at the start of a run).
    """

    dtype: str | None
    channels_last: bool
    scaler: bool
    reason: str

    def autocast_dtype(self) -> Any:
        """The torch dtype for ``torch.autocast`` (``None`` when FP32)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[self.dtype]

    def memory_format(self) -> Any:
        """``torch.channels_last`` or ``torch.contiguous_format``."""
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve_arithmetic(
    device_type: str,
    precision: str = "auto",
    channels_last: bool | None = None,
    cuda_bf16: bool | None = None,
    cpu_bf16: bool | None = None,
) -> Arithmetic:
    """Choose the arithmetic of a run.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``fp16``: CUDA only).
        channels_last: ``None``: on (see the module docstring).
        cuda_bf16: the GPU supports BF16 (``None``: ask torch).
        cpu_bf16: the CPU computes BF16 natively (``None``: read ``/proc/cpuinfo``).

    Raises:
        ConfigError: ``fp16`` asked for on a CPU; ``bf16`` on a GPU without it.
    """
    nhwc = True if channels_last is None else channels_last
    layout = "channels-last" if nhwc else "NCHW"
    if device_type == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        if precision == "bf16" and not cuda_bf16:
            raise ConfigError("--precision bf16: this GPU has no BF16; use fp16 or auto")
        if precision == "fp32":
            return Arithmetic(None, nhwc, False, f"CUDA: FP32 (--precision fp32), {layout}")
        if precision == "bf16" or (precision == "auto" and cuda_bf16):
            return Arithmetic("bf16", nhwc, False, f"CUDA: BF16 mixed precision, {layout}")
        return Arithmetic(
            "fp16", nhwc, True, f"CUDA: FP16 mixed precision + loss scaling, {layout}"
        )
    if precision == "fp16":
        raise ConfigError("--precision fp16 needs CUDA; on a CPU use auto, bf16 or fp32")
    native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    if precision == "bf16" or (precision == "auto" and native):
        why = "native BF16 (AVX512_BF16/AMX)" if native else "asked for; emulated, slow"
        return Arithmetic("bf16", nhwc, False, f"CPU: BF16 autocast ({why}), {layout}")
    why = "--precision fp32" if precision == "fp32" else "no AVX512_BF16/AMX in the CPU flags"
    return Arithmetic(None, nhwc, False, f"CPU: FP32 ({why}), {layout}")


def run_arithmetic(config: TrainConfig, device_type: str) -> Arithmetic:
    """The arithmetic of a run with ``config`` on ``device_type`` (``amp=False`` forces FP32):
    the training steps and anything that re-scores the run's checkpoint the way it validated."""
    precision = "fp32" if config.amp is False else config.precision
    return resolve_arithmetic(device_type, precision, config.channels_last)
