"""The deployable bundle: ``medseg.json`` and the ONNX files it describes (stdlib + numpy)."""

from __future__ import annotations

from medseg.bundle.manifest import (
    MANIFEST_NAME,
    ONNX_FILES,
    PRECISIONS,
    RUNTIME_PRECISIONS,
    SCHEMA_VERSION,
    DimRange,
    InputSpec,
    Manifest,
    PrecisionEntry,
    file_precision,
    file_sha256,
)

__all__ = [
    "MANIFEST_NAME",
    "ONNX_FILES",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "SCHEMA_VERSION",
    "DimRange",
    "InputSpec",
    "Manifest",
    "PrecisionEntry",
    "file_precision",
    "file_sha256",
]
