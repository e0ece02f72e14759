"""The demo bundle through the sliding-window path: a whole-slice run re-exported as schema 2.

The committed demo model (``models/mni152-tissue``) was trained on whole slices (``"pad"``
recipe, before issue 12). It is fully convolutional, so the same weights serve a
``"window"`` recipe: the runtime resamples each slice to ``target_spacing`` (the MNI152
template is already at 1 mm: nothing to resample), covers it with Gaussian-weighted
windows of the static ``patch_size`` and resamples the probabilities back to the scan's
grid. :func:`window_meta` turns the checkpoint's record into a planned run's record (the
same normalisation, the same slice-level validation split) and :func:`export_window_bundle`
exports it with :func:`medseg.export.windowed.export_windowed`, so every precision is scored
on the validation slices of the case's own grid, like any planned bundle.

``medseg demo-bundle`` (``make demo-bundle``) rewrites the committed bundle.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.events import EventSink
from medseg.transforms.preprocessing import Recipe

__all__ = [
    "DEMO_PATCH",
    "DEMO_SPACING_MM",
    "export_window_bundle",
    "window_meta",
]

#: Network patch ``(H, W)``: the 197x233 axial MNI152 slice rounded up to multiples of 32,
#: so one window covers a whole slice (the closest to the whole-slice training input).
DEMO_PATCH = (224, 256)
#: Target in-plane spacing in mm: the template's own (no resampling on the demo data).
DEMO_SPACING_MM = (1.0, 1.0)


def window_meta(
    meta: dict[str, Any],
    patch: tuple[int, int] = DEMO_PATCH,
    spacing: tuple[float, float] = DEMO_SPACING_MM,
    mirror_axes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A whole-slice checkpoint's ``meta`` with a ``"window"`` recipe and a planned-run split.

    Args:
        meta: the checkpoint's meta (``"pad"`` or ``"resize"`` recipe, slice-level split of
            a single case, as ``medseg train --whole-slice`` and the pre-issue-12 trainer wrote).
        patch: network input ``(H, W)``, multiples of 32.
        spacing: target in-plane spacing in mm.
        mirror_axes: slice axes the training flipped (for ``--tta``).

    Raises:
        ConfigError: the run already has a window recipe, or its split is not slice-level
            over one case (a multi-case whole-slice run has no per-case split to carry over).
    """
    recipe = Recipe.from_dict(meta["recipe"])
    if recipe.pipeline_kind == "window":
        raise ConfigError("the run already has a sliding-window recipe: export it directly")
    split = meta.get("split") or {}
    val_ids = list(split.get("val_slices") or [])
    cases = sorted({str(s).rpartition(":")[0] for s in val_ids})
    if split.get("kind") != "slice-level" or len(cases) != 1:
        raise ConfigError(
            "only a slice-level split of one case can be carried over to a window recipe; "
            f"this run's split is {split.get('kind')!r} over {len(cases)} case(s)"
        )
    window = replace(
        recipe,
        size_policy="window",
        target_size=None,
        patch_size=(int(patch[0]), int(patch[1])),
        target_spacing=(float(spacing[0]), float(spacing[1])),
        mirror_axes=tuple(mirror_axes),
    )
    return {
        **meta,
        "recipe": window.to_dict(),
        "split": {
            **split,
            "fold": None,
            "folds": None,
            "seed": meta.get("seed"),
            "train": cases,
            "val": cases,
        },
    }


def export_window_bundle(
    model_dir: Path,
    dataset_dir: Path,
    out: Path,
    on_event: EventSink,
    patch: tuple[int, int] = DEMO_PATCH,
    spacing: tuple[float, float] = DEMO_SPACING_MM,
    force: bool = False,
) -> Any:
    """Export a whole-slice run to a schema-2 ``"window"`` bundle (FP32, FP16, INT8).

    Args:
        model_dir: run directory holding ``model.pt`` and ``config.json``.
        dataset_dir: the dataset the run was trained on (validation and calibration).
        out: bundle directory to write (atomically; ``force`` replaces an existing one).
        on_event: receives the export's progress events (:class:`medseg.events.Event`).
        patch: network input ``(H, W)``.
        spacing: target in-plane spacing in mm.

    Returns:
        The written :class:`~medseg.bundle.Manifest`.
    """
    import json

    from medseg.export.pipeline import ExportOptions
    from medseg.export.windowed import export_windowed
    from medseg.outputs import Input, Output, guard
    from medseg.train.checkpoint import CONFIG_NAME, load_checkpoint, resolve_checkpoint

    inputs = [Input("model_dir", model_dir), Input("dataset_dir", dataset_dir)]
    guard([Output("out", out, "bundle")], inputs, force=force)
    options = ExportOptions(fp16=True, int8=True, calib_data=dataset_dir, data=dataset_dir)
    started = time.perf_counter()
    ckpt = resolve_checkpoint(model_dir)
    config = json.loads((ckpt.parent / CONFIG_NAME).read_text())
    flips = tuple(int(a) for a in (config.get("train", {}).get("flip_axes") or ()))
    loaded = load_checkpoint(ckpt)
    loaded = replace(loaded, meta=window_meta(loaded.meta, patch, spacing, flips))
    return export_windowed(loaded, ckpt, out, options, dataset_dir, on_event, started)
