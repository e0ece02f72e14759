"""The ONNX files of a bundle, one model or a fold ensemble (schema 3).

:func:`bundle_onnx_paths` is what every consumer (runtime backends, engine build, Triton,
services) uses to find a precision's files: ``{"model": bundle/model.onnx}`` for a one-model
bundle, ``{fold: bundle/fold_<k>/model.onnx, ...}`` in the manifest's fold order for an
ensemble, every file checked against the sha256 the manifest records.
"""

from __future__ import annotations

from pathlib import Path

from medseg.bundle.manifest import MANIFEST_NAME, Manifest, file_sha256
from medseg.errors import ConfigError

__all__ = ["SINGLE_MODEL", "bundle_onnx_paths"]

#: The key of the one model of a bundle without folds.
SINGLE_MODEL = "model"


def _checked(path: Path, sha256: str, verify: bool) -> Path:
    if not path.is_file():
        raise ConfigError(f"bundle file {path} is missing")
    if verify and file_sha256(path) != sha256:
        raise ConfigError(
            f"{path} does not match the sha256 in {MANIFEST_NAME} (truncated or tampered); "
            "re-export the bundle"
        )
    return path


def bundle_onnx_paths(
    manifest: Manifest, bundle: Path, precision: str, verify: bool = True
) -> dict[str, Path]:
    """The ONNX file(s) of ``precision``: ``{fold: path}`` (``{"model": path}`` without folds).

    Args:
        manifest: the bundle's manifest.
        bundle: the bundle directory.
        precision: ``fp32``, ``fp16`` or ``int8``.
        verify: check every file's sha256 against the manifest.

    Raises:
        ConfigError: the precision is absent, a file is missing or does not match.
    """
    if precision not in manifest.precisions:
        raise ConfigError(
            f"bundle {bundle} has no {precision} model; it has {sorted(manifest.precisions)}"
        )
    entry = manifest.precisions[precision]
    if manifest.folds is None or entry.folds is None:
        return {SINGLE_MODEL: _checked(Path(bundle) / entry.file, entry.sha256, verify)}
    return {
        fold: _checked(Path(bundle) / item.file, item.sha256, verify)
        for fold, item in entry.folds.items()
    }
