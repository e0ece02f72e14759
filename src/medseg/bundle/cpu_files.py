"""CPU-specific ONNX files of a bundle: ``model.int8.cpu.onnx``, INT8 in ONNX Runtime's form.

The INT8 precision's main file (``model.int8.onnx``) is what TensorRT builds: Q/DQ on
convolution inputs only. ONNX Runtime's CPU provider fuses few of those convolutions into
integer kernels, so a bundle may carry a second INT8 file in ONNX Runtime's own QDQ form
(:mod:`medseg.calibration.int8_cpu`), calibrated on the same slices. Its manifest entry sits
inside the INT8 precision entry, ``precisions.int8.details.cpu_file``::

    {"file": "model.int8.cpu.onnx", "sha256": "...", "size_bytes": 8400000,
     "parity": {...}, "accuracy": {...}, "details": {"tool": ..., "ort_integer_convs": 88}}

(an additive key: manifests without it, and medseg versions that do not know it, are
unaffected). Which INT8 file a CPU backend runs is :func:`int8_file_for`: on ONNX Runtime
the CPU file when present (its own form); on OpenVINO the one the manifest's
``backend_accuracy.openvino.int8.file`` names (the export measures both there and records
the one that loses less Dice); bundles that record none: as ONNX Runtime. TensorRT keeps
the Q/DQ file. Standard library only: the runtime imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.bundle.entries import MANIFEST_NAME, file_sha256
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError

__all__ = ["CPU_FILE_KEY", "CPU_INT8_FILE", "cpu_int8_entry", "cpu_int8_path", "int8_file_for"]

CPU_INT8_FILE = "model.int8.cpu.onnx"
#: Key of the CPU file's entry inside ``precisions.int8.details``.
CPU_FILE_KEY = "cpu_file"


def cpu_int8_entry(manifest: Manifest) -> dict[str, Any] | None:
    """The validated ``precisions.int8.details.cpu_file`` entry, or ``None`` when absent.

    Raises:
        ConfigError: the entry exists but is malformed (names the key and what is accepted).
    """
    int8 = manifest.precisions.get("int8")
    if int8 is None or CPU_FILE_KEY not in int8.details:
        return None
    entry = int8.details[CPU_FILE_KEY]
    where = f"{MANIFEST_NAME}: precisions.int8.details.{CPU_FILE_KEY}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with file, sha256, size_bytes")
    if entry.get("file") != CPU_INT8_FILE:
        raise ConfigError(f"{where}.file is {entry.get('file')!r}; accepted: {CPU_INT8_FILE!r}")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ConfigError(f"{where}.sha256 must be a 64-character hex digest, got {sha!r}")
    size = entry.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"{where}.size_bytes must be a positive integer, got {size!r}")
    return entry


def cpu_int8_path(manifest: Manifest, bundle: Path, verify: bool = True) -> Path | None:
    """Path of the bundle's CPU INT8 file, or ``None`` when the manifest records none.

    With ``verify``, the file must exist and match the recorded sha256 (ConfigError saying
    how to restore it otherwise).
    """
    entry = cpu_int8_entry(manifest)
    if entry is None:
        return None
    path = Path(bundle) / CPU_INT8_FILE
    fix = f"re-create it with medseg.export.add_cpu_int8({str(bundle)!r}, force=True)"
    if not path.is_file():
        raise ConfigError(f"bundle file {path} is missing (recorded in {MANIFEST_NAME}); {fix}")
    if verify and file_sha256(path) != entry["sha256"]:
        raise ConfigError(
            f"{path} does not match the sha256 in {MANIFEST_NAME} (truncated or tampered); {fix}"
        )
    return path


def int8_file_for(manifest: Manifest, bundle: Path, backend: str) -> Path:
    """The INT8 file a CPU backend (``"onnxruntime"``, ``"openvino"``) runs, sha256-checked.

    ONNX Runtime: the CPU file when present (its own form of INT8), else ``model.int8.onnx``.
    Another backend: the file its ``backend_accuracy.<backend>.int8.file`` names (the one
    whose accuracy on that backend the bundle records); bundles without that record: as
    ONNX Runtime.

    Raises:
        ConfigError: the record names another file than the bundle's two INT8 files; a file
            missing or not matching its sha256.
    """
    cpu = cpu_int8_path(manifest, bundle)
    named = manifest.backend_accuracy.get(backend, {}).get("int8", {}).get("file")
    if backend == "onnxruntime" or named is None:
        return cpu or manifest.onnx_path(bundle, "int8")
    qdq = manifest.precisions["int8"].file if "int8" in manifest.precisions else None
    if named == CPU_INT8_FILE and cpu is not None:
        return cpu
    if named == qdq:
        return manifest.onnx_path(bundle, "int8")
    accepted = " or ".join(repr(f) for f in (qdq, CPU_INT8_FILE if cpu else None) if f)
    raise ConfigError(
        f"{MANIFEST_NAME}: backend_accuracy.{backend}.int8.file is {named!r}; accepted: "
        f"{accepted or 'none (the bundle has no int8 precision)'}"
    )
