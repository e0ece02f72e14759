"""The ONNX files of a bundle, one model or a fold ensemble (schema 3).

:func:`bundle_onnx_paths` is what every consumer (runtime backends, engine build, Triton,
services) uses to find a precision's files: ``{"model": bundle/model.onnx}`` for a one-model
bundle, ``{fold: bundle/fold_<k>/model.onnx, ...}`` in the manifest's fold order for an
ensemble, every file checked against the sha256 the manifest records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medseg.bundle.manifest import (
    MANIFEST_NAME,
    NNUNET_SCHEMA_VERSION,
    ONNX_FILES,
    Manifest,
    file_sha256,
    fold_dir,
)
from medseg.errors import ConfigError

__all__ = ["SINGLE_MODEL", "bundle_onnx_paths", "check_schema3", "fold_bundles", "fold_manifest"]

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


def check_schema3(manifest: Manifest) -> None:
    """Manifest rules of nnU-Net recipes, 3D inputs and fold ensembles (schema 3)."""
    recipe = manifest.preprocessing
    uses = recipe.pipeline_kind == "nnunet" or manifest.folds is not None
    if (
        uses or manifest.input.depth is not None
    ) and manifest.schema_version < NNUNET_SCHEMA_VERSION:
        raise ConfigError(
            f"nnU-Net preprocessing, folds and input.depth need schema_version "
            f"{NNUNET_SCHEMA_VERSION}, got {manifest.schema_version}"
        )
    if manifest.folds is not None:
        if not manifest.folds or len(set(manifest.folds)) != len(manifest.folds):
            raise ConfigError(f"folds {list(manifest.folds)} must be distinct names, at least one")
        for precision, entry in manifest.precisions.items():
            if entry.folds is None or list(entry.folds) != list(manifest.folds):
                raise ConfigError(
                    f"precisions.{precision}.folds must list the folds {list(manifest.folds)}, "
                    f"got {None if entry.folds is None else list(entry.folds)}"
                )
            for fold, item in entry.folds.items():
                if item.file != f"{fold_dir(fold)}/{ONNX_FILES[precision]}":
                    raise ConfigError(
                        f"precisions.{precision}.folds.{fold}.file is {item.file!r}; "
                        f"expected {fold_dir(fold)}/{ONNX_FILES[precision]!r}"
                    )
    else:
        with_folds = sorted(p for p, e in manifest.precisions.items() if e.folds is not None)
        if with_folds:
            raise ConfigError(f"precisions {with_folds} list folds but the manifest has none")
    if recipe.pipeline_kind != "nnunet":
        return
    recipe = manifest.nnunet_recipe("check_schema3")
    if manifest.input.patch != recipe.patch_size:
        raise ConfigError(
            f"input patch {manifest.input.patch} must be the nnU-Net patch_size "
            f"{recipe.patch_size} (static; 2d: height x width, 3d: depth, height, width)"
        )
    if manifest.input.channels != recipe.num_input_channels:
        raise ConfigError(
            f"input.channels {manifest.input.channels} must equal the recipe's "
            f"num_input_channels {recipe.num_input_channels}"
        )
    if dict(manifest.classes) != dict(recipe.labels):
        raise ConfigError(
            f"classes {dict(manifest.classes)} must equal the nnU-Net labels {dict(recipe.labels)}"
        )
