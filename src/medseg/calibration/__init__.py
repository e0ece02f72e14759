"""Calibration and precision: calibration slices, FP16 AutoCast, INT8 Q/DQ, layer sensitivity.

Precision lives in the ONNX file (TensorRT builds strongly typed networks): this package
turns the exported FP32 ``model.onnx`` into ``model.fp16.onnx`` and ``model.int8.onnx``
with nvidia-modelopt, on the dev box or CI, CPU only::

    calib = select_calibration_slices(data.train, data.spec.labels, num_slices=64)
    convert_precision(onnx, bundle / "model.fp16.onnx", "fp16", calibration=calib.images)
    convert_precision(onnx, bundle / "model.int8.onnx", "int8", calibration=calib.images)
    ranking = layer_sensitivity(onnx, bundle / "model.int8.onnx", calib.images[:4])

Importing this package costs numpy only: onnx, onnxruntime and modelopt are imported
when a conversion runs.
"""

from __future__ import annotations

from medseg.calibration.convert import Precision, convert_precision
from medseg.calibration.fp16 import FP16_KEEP_FP32_OP_TYPES, Fp16Result, convert_fp16
from medseg.calibration.int8 import (
    QUANTIZABLE_OP_TYPES,
    CalibrationMethod,
    Int8Config,
    Int8Result,
    quantize_int8,
    quantized_nodes,
)
from medseg.calibration.sensitivity import LayerSensitivity, layer_sensitivity
from medseg.calibration.slices import (
    MIN_CALIBRATION_SLICES,
    CalibrationSet,
    select_calibration_patches,
    select_calibration_slices,
)

__all__ = [
    "FP16_KEEP_FP32_OP_TYPES",
    "MIN_CALIBRATION_SLICES",
    "QUANTIZABLE_OP_TYPES",
    "CalibrationMethod",
    "CalibrationSet",
    "Fp16Result",
    "Int8Config",
    "Int8Result",
    "LayerSensitivity",
    "Precision",
    "convert_fp16",
    "convert_precision",
    "layer_sensitivity",
    "quantize_int8",
    "quantized_nodes",
    "select_calibration_patches",
    "select_calibration_slices",
]
