"""The ONNX files of a bundle, one model or a fold ensemble (schema 3).

:func:`bundle_onnx_paths` is what every consumer (runtime backends, engine build, Triton,
services) uses to find a precision's files: ``{"model": bundle/model.onnx}`` for a one-model
bundle, ``{fold: bundle/fold_<k>/model.onnx, ...}`` in the manifest's fold order for an
ensemble, every file checked against the sha256 the manifest records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medseg.bundle.entries import (
    MANIFEST_NAME,
    ONNX_FILES,
    file_sha256,
    fold_dir,
)
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError

__all__ = ["SINGLE_MODEL", "bundle_onnx_paths", "fold_bundles", "fold_manifest"]

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


def fold_manifest(manifest: Manifest, fold: str) -> Manifest:
    """One fold of an ensemble as a one-model manifest whose folder is ``bundle/fold_<k>``.

    Its precision entries name the fold's files (``model.onnx``, ``model.fp16.onnx``, ...)
    with their own sha256 and size, so everything written for one-model bundles (engine
    build into ``fold_<k>/engines/<key>/``, the engine checks, the backends) runs a fold
    unchanged: pass ``bundle / fold_dir(fold)`` as its bundle folder.

    Raises:
        ConfigError: the manifest has no such fold.
    """
    if manifest.folds is None or fold not in manifest.folds:
        raise ConfigError(f"fold {fold!r} is not in this bundle; its folds: {manifest.folds}")
    precisions = {}
    for precision, entry in manifest.precisions.items():
        item = (entry.folds or {})[fold]
        precisions[precision] = dataclasses.replace(
            entry,
            file=ONNX_FILES[precision],
            sha256=item.sha256,
            size_bytes=item.size_bytes,
            folds=None,
        )
    return dataclasses.replace(manifest, precisions=precisions, folds=None)


def fold_bundles(manifest: Manifest, bundle: Path) -> dict[str, tuple[Path, Manifest]]:
    """``{fold: (bundle/fold_<k>, its one-model manifest)}``; ``{"model": (bundle, manifest)}``
    for a bundle without folds."""
    if manifest.folds is None:
        return {SINGLE_MODEL: (Path(bundle), manifest)}
    return {f: (Path(bundle) / fold_dir(f), fold_manifest(manifest, f)) for f in manifest.folds}
