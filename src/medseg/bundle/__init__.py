"""The deployable bundle: ``medseg.json`` and the files it describes (stdlib + numpy).

Written by export, read by build, deploy, bench and the runtime: the manifest
(:mod:`~medseg.bundle.manifest`, its parts in :mod:`~medseg.bundle.entries`), the ONNX files of
one model or a fold ensemble (:mod:`~medseg.bundle.folds`), and the TensorRT engine files with
their sidecar, paths and rebuild command (:mod:`~medseg.bundle.engines`, the network report in
:mod:`~medseg.bundle.network_report`).
"""

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
