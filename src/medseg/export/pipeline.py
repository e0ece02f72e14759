"""``export_bundle``: a trained checkpoint -> a deployable bundle directory.

Steps: rebuild the model from its checkpoint; export FP32 ONNX and check it against
PyTorch on real validation slices (fail on parity); then the precision steps both exports
share (:mod:`medseg.export.precision_steps`: FP16, INT8 with its guard, the CPU INT8 file,
accuracy per CPU backend), each file scored on whole validation slices; write
``medseg.json``. All of it goes into a temporary folder that replaces
the output only when complete, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir
from medseg.bundle import ONNX_FILES, Manifest, file_sha256
from medseg.data.nifti import quiet_nibabel
from medseg.data.nnunet import NnUNetDataset
from medseg.data.samples import TrainingData, load_training_data
from medseg.errors import ConfigError
from medseg.events import Event, EventSink, file_done
from medseg.export.accuracy import (
    Accuracy,
    evaluate_onnx,
)
from medseg.export.onnx_export import OUTPUT_NAME
from medseg.export.options import (
    CALIBRATION_NAME,
    ExportOptions,
    check_dataset_matches_model,
    input_spec,
    tool_versions,
)
from medseg.export.precision_steps import export_fp32, run_precision_steps
from medseg.export.summary import summary_event
from medseg.outputs import Input, Output, guard
from medseg.transforms.orientation import axis_codes
from medseg.transforms.preprocessing import Recipe

__all__ = ["ExportOptions", "export_bundle"]


def _load_data(path: Path, meta: dict[str, Any], train_config: dict[str, Any]) -> TrainingData:
    """The dataset's slices, preprocessed with the model's own training recipe."""
    recipe = Recipe.from_dict(meta["recipe"])
    data = load_training_data(
        path,
        train_config["slice_axis"],
        train_config["val_fraction"],
        train_config["seed"],
        recipe=recipe,
    )
    check_dataset_matches_model(path, data.spec, meta)
    return data


def _training_orientation(root: Path, on_event: EventSink) -> str | None:
    """Axis codes (e.g. ``"RAS"``) of the first training case's image; ``None`` without cases.

    Only headers are read. Training cases in several orientations: the first case's codes,
    with one warning line.
    """
    from medseg.deps import require

    nib = require("nibabel", "reading NIfTI files")
    cases = NnUNetDataset.open(root).cases("train")
    with quiet_nibabel():
        codes = {c.case_id: axis_codes(nib.load(str(c.images[0])).affine) for c in cases}
    if not codes:
        return None
    first = codes[cases[0].case_id]
    others = sorted({v for v in codes.values() if v != first})
    if others:
        on_event(
            Event(
                "orientation",
                "warning",
                f"{root} training cases are in several orientations ({first}, "
                f"{', '.join(others)}): recording the first case's {first} in medseg.json",
                {"orientations": [first, *others]},
            )
        )
    return first


def export_bundle(
    checkpoint: Path,
    out: Path,
    options: ExportOptions,
    on_event: EventSink,
    force: bool = False,
) -> Manifest:
    """Export a ``medseg train`` run (or its ``model.pt``) to a bundle directory ``out``.

    Args:
        checkpoint: run directory or checkpoint file.
        out: bundle directory to write (replaced atomically with ``force``).
        options: precisions, calibration, budget and shapes.
        on_event: receives one :class:`~medseg.events.Event` per step (``start`` before each
            heavy step, ``done`` with its numbers in ``data``, ``info``/``warning`` lines).
        force: replace an existing non-empty ``out``.
    """
    from medseg.train.checkpoint import CONFIG_NAME, load_checkpoint, resolve_checkpoint

    inputs = [Input("checkpoint", checkpoint), Input("options.data", options.data)]
    inputs.append(Input("options.calib_data", options.calib_data))
    guard([Output("out", out, "bundle")], inputs, force=force)
    if options.check_tensorrt:  # missing TensorRT-RTX is said before any export work
        from medseg.runtime.engines_rtx import tensorrt_rtx_module

        tensorrt_rtx_module()
    started = time.perf_counter()
    loaded = load_checkpoint(checkpoint)
    ckpt_path = resolve_checkpoint(checkpoint)
    run_config_path = ckpt_path.parent / CONFIG_NAME
    if not run_config_path.is_file():
        raise ConfigError(f"{ckpt_path.parent} has no {CONFIG_NAME} next to the checkpoint")
    try:
        train_config = json.loads(run_config_path.read_text())["train"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_config_path} is not a medseg train config.json: {exc}") from exc
    out_abs = Path(out).resolve()
    if out_abs == ckpt_path.parent.resolve() or out_abs in ckpt_path.resolve().parents:
        raise ConfigError(f"--out {out} would replace the run directory being exported")
    meta = loaded.meta
    data_path = options.data or options.calib_data or Path(meta["dataset"]["path"])
    if not data_path.is_dir():
        raise ConfigError(
            f"no dataset at {data_path} for the parity and accuracy checks; pass --data DATASET"
        )
    if Recipe.from_dict(meta["recipe"]).pipeline_kind == "window":  # a planned run (issue 12)
        from medseg.export.windowed import export_windowed

        return export_windowed(loaded, ckpt_path, out, options, data_path, on_event, started)
    data = _load_data(data_path, meta, train_config)
    if data.fingerprint != meta["dataset"]["fingerprint"]:
        on_event(
            Event(
                "dataset",
                "warning",
                f"{data_path} is not the dataset the model was trained on (fingerprint "
                "differs): validation numbers are on its split, not the training one",
            )
        )
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    spec = input_spec(options, meta["in_channels"], tuple(meta["network_input_hw"]))
    if not (
        spec.height.contains(data.val.images.shape[2])
        and spec.width.contains(data.val.images.shape[3])
    ):
        raise ConfigError(
            f"validation slices are {data.val.images.shape[2]}x{data.val.images.shape[3]}, outside "
            f"the requested input size {spec.height}x{spec.width}"
        )
    with atomic_dir(out, scratch=True) as tmp:
        on_event(Event("onnx.fp32", "start", "exporting FP32 ONNX, parity vs PyTorch..."))
        t = time.perf_counter()
        # spread over the whole validation split, not its first (often empty) slices
        picks = np.unique(np.linspace(0, len(data.val) - 1, min(16, len(data.val))).astype(int))
        fp32 = export_fp32(loaded, tmp / ONNX_FILES["fp32"], spec, data.val.images[picks])
        parity = fp32.parity
        fp32_acc = evaluate_onnx(fp32.path, data.val, classes)
        on_event(
            file_done(
                "onnx.fp32",
                "ONNX FP32",
                fp32.path,
                t,
                f"parity vs PyTorch max|Δ| {parity.max_abs_diff:.1e}, "
                f"argmax {parity.argmax_agreement:.2%}; val Dice {fp32_acc.dice_mean:.4f}",
                parity=parity.to_dict(),
                dice_mean=fp32_acc.dice_mean,
            )
        )

        def score(path: Path, backend: str, precision: str, reference: Accuracy | None) -> Accuracy:
            return evaluate_onnx(
                path, data.val, classes, reference, backend=backend, precision=precision
            )

        def calibrate(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
            return _calibration_slices(
                folder, data, data_path, meta, train_config, options, on_event
            )

        steps = run_precision_steps(tmp, fp32, fp32_acc, options, score, calibrate, on_event)
        manifest = Manifest(
            model={**loaded.record, "name": f"{data.spec.name}-{loaded.record['arch']}"},
            classes=dict(meta["classes"]),
            input=spec,
            output_name=OUTPUT_NAME,
            preprocessing=data.recipe,
            precisions=steps.precisions,
            calibration=steps.calibration,
            source={
                "checkpoint": str(ckpt_path),
                "checkpoint_sha256": file_sha256(ckpt_path),
                "dataset": meta["dataset"],
                "validation": {
                    "dataset": str(data_path),
                    "slices": len(data.val),
                    "split": data.split.description,
                    "slice_ids": [str(r) for r in data.val.refs],
                },
            },
            tool_versions=tool_versions(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            orientation=_training_orientation(data.spec.root, on_event),
            backend_accuracy=steps.backend_accuracy,
        )
        if options.check_tensorrt:
            from medseg.build import check_onnx_builds

            check_onnx_builds(tmp, manifest, on_event)
        manifest.save(tmp)
        summary_event(manifest, tmp, on_event)
    on_event(_bundle_done(out, started))
    return manifest


def _calibration_slices(
    folder: Path,
    data: TrainingData,
    data_path: Path,
    meta: dict[str, Any],
    train_config: dict[str, Any],
    options: ExportOptions,
    on_event: EventSink,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Calibration slices of the training split (every class covered), written to ``folder``.

    Returns the ``(N, C, H, W)`` float32 slices and the manifest's calibration record.
    """
    from medseg.calibration import select_calibration_slices

    assert options.calib_data is not None  # checked in ExportOptions
    on_event(Event("calibration", "start", "drawing calibration slices..."))
    t = time.perf_counter()
    same = options.calib_data.resolve() == data_path.resolve()
    calib_data = data if same else _load_data(options.calib_data, meta, train_config)
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    with warnings.catch_warnings(record=True) as caught:  # sent as warning events
        warnings.simplefilter("always")
        calib = select_calibration_slices(calib_data.train, classes, options.calib_slices, seed=0)
    for warning in caught:
        on_event(Event("calibration", "warning", str(warning.message)))
    calib.save_npz(folder / CALIBRATION_NAME)
    on_event(
        file_done(
            "calibration",
            "calibration slices",
            folder / CALIBRATION_NAME,
            t,
            f"{len(calib.refs)} slices from the training split, every class covered",
            slices=len(calib.refs),
        )
    )
    info = {
        "dataset": str(options.calib_data),
        "fingerprint": calib_data.fingerprint,
        "file": CALIBRATION_NAME,
        **calib.to_manifest(),
    }
    return calib.images, info


def _bundle_done(out: Path, started: float) -> Event:
    seconds = time.perf_counter() - started
    return Event("bundle", "done", f"bundle {out} ({seconds:.0f} s)", {"bundle": str(out)})
