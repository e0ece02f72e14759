"""The deployable bundle: ``medseg.json`` and the ONNX files it describes (stdlib + numpy)."""

from __future__ import annotations

from medseg.bundle.entries import (
    MANIFEST_NAME,
    ONNX_FILES,
    PRECISIONS,
    RUNTIME_PRECISIONS,
    SCHEMA_VERSION,
    DimRange,
    FoldFile,
    InputSpec,
    PrecisionEntry,
    ensemble_sha256,
    file_sha256,
)
from medseg.bundle.folds import SINGLE_MODEL, bundle_onnx_paths
from medseg.bundle.manifest import Manifest
from medseg.names import file_precision

__all__ = [
    "MANIFEST_NAME",
    "ONNX_FILES",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "SCHEMA_VERSION",
    "SINGLE_MODEL",
    "DimRange",
    "FoldFile",
    "InputSpec",
    "Manifest",
    "PrecisionEntry",
    "bundle_onnx_paths",
    "ensemble_sha256",
    "file_precision",
    "file_sha256",
]
