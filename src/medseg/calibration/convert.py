"""One entry point for precision conversion, dispatching to one module per precision.

``model.onnx`` (FP32) comes from the export; this turns it into ``model.fp16.onnx``
(:mod:`medseg.calibration.fp16`) or ``model.int8.onnx`` (:mod:`medseg.calibration.int8`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np

from medseg.calibration.fp16 import FP16_KEEP_FP32_OP_TYPES, Fp16Result, convert_fp16
from medseg.calibration.int8 import Int8Config, Int8Result, quantize_int8
from medseg.errors import ConfigError

__all__ = ["Precision", "convert_precision"]


class Precision(str, Enum):
    """Numeric precision of a model file (and of the TensorRT engine built from it)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def convert_precision(
    onnx_in: Path,
    onnx_out: Path,
    precision: Precision | str,
    *,
    calibration: np.ndarray | None = None,
    int8: Int8Config | None = None,
    verbose: bool = False,
) -> Fp16Result | Int8Result:
    """Write ``onnx_in`` (FP32) at ``precision`` to ``onnx_out``.

    Args:
        onnx_in: the exported FP32 model.
        onnx_out: the output ``.onnx`` (written atomically).
        precision: ``"fp16"`` or ``"int8"`` (``"fp32"`` is ``onnx_in`` itself).
        calibration: ``(N, C, H, W)`` float32 slices: required for INT8; for FP16 the
            reference inputs of AutoCast's range check.
        int8: INT8 options (calibration method, nodes to exclude); INT8 only.
        verbose: let modelopt print its logs.

    Raises:
        ConfigError: an unknown precision, ``fp32``, INT8 without calibration data, or
            INT8 options given for FP16; plus what the converters raise.
    """
    try:
        target = Precision(precision)
    except ValueError:
        accepted = ", ".join(p.value for p in Precision if p is not Precision.FP32)
        raise ConfigError(f"unknown precision {precision!r}; accepted: {accepted}") from None
    if target is Precision.FP32:
        raise ConfigError(
            "precision 'fp32' needs no conversion: the exported model.onnx is the FP32 "
            "model; accepted: fp16, int8"
        )
    if target is Precision.FP16:
        if int8 is not None:
            raise ConfigError("INT8 options were given for an FP16 conversion; drop them")
        return convert_fp16(
            onnx_in,
            onnx_out,
            FP16_KEEP_FP32_OP_TYPES,
            reference_inputs=calibration,
            verbose=verbose,
        )
    if calibration is None:
        raise ConfigError(
            "INT8 quantisation needs calibration slices (N, C, H, W); select them with "
            "select_calibration_slices or load them with CalibrationSet.load_npz"
        )
    return quantize_int8(onnx_in, onnx_out, calibration, int8, verbose=verbose)
