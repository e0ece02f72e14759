"""The ONNX files of a bundle, one model or a fold ensemble (schema 3).

:func:`bundle_onnx_paths` is what every consumer (runtime backends, engine build, Triton,
services) uses to find a precision's files: ``{"model": bundle/model.onnx}`` for a one-model
bundle, ``{fold: bundle/fold_<k>/model.onnx, ...}`` in the manifest's fold order for an
ensemble, every file checked against the sha256 the manifest records.
"""

from __future__ import annotations

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

__all__ = ["SINGLE_MODEL", "bundle_onnx_paths", "check_schema3"]

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
