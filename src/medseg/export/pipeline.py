"""``export_bundle``: a trained checkpoint -> a deployable bundle directory.

Steps: rebuild the model from its checkpoint; export FP32 ONNX and check it against
PyTorch on real validation slices (fail on parity); FP16 via AutoCast; INT8 via Q/DQ
post-training quantisation on calibration slices drawn from the training split; score every
precision on the validation split with ONNX Runtime; with a Dice-drop budget, run the INT8
accuracy guard; write ``medseg.json``. All of it goes into a temporary folder that replaces
the output only when complete, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir, check_output_dir
from medseg.bundle import ONNX_FILES, Manifest, PrecisionEntry, file_sha256
from medseg.bundle.cpu_files import CPU_FILE_KEY
from medseg.data.nifti import quiet_nibabel
from medseg.data.nnunet import NnUNetDataset
from medseg.data.orientation import axis_codes
from medseg.data.preprocessing import Recipe
from medseg.data.samples import TrainingData, load_training_data
from medseg.errors import ConfigError, ExportError
from medseg.events import Event, EventSink, file_done
from medseg.export.accuracy import (
    Accuracy,
    accuracy_per_backend,
    evaluate_onnx,
    installed_cpu_backends,
)
from medseg.export.cpu_int8 import cpu_int8_file
from medseg.export.onnx_export import OUTPUT_NAME, export_onnx
from medseg.export.options import (
    CALIBRATION_NAME,
    PARITY_MAX_ABS_DIFF,
    PARITY_MIN_ARGMAX,
    ExportOptions,
    check_dataset_matches_model,
    input_spec,
    precision_entry,
    tool_versions,
)
from medseg.export.ort import compare_logits, run_onnx

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

    check_output_dir(out, force)
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
    if Recipe.from_dict(meta["recipe"]).size_policy == "window":  # a planned run (issue 12)
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
    precisions: dict[str, PrecisionEntry] = {}
    calibration_info: dict[str, Any] | None = None
    metadata = {
        "medseg.input": {"name": spec.name, "layout": "NCHW", "channels": spec.channels},
        "medseg.output": {"name": OUTPUT_NAME, "classes": meta["classes"]},
        "medseg.model": loaded.record["arch"],
        "medseg.recipe": meta["recipe"],
    }
    with atomic_dir(out) as tmp:
        on_event(Event("onnx.fp32", "start", "exporting FP32 ONNX, parity vs PyTorch..."))
        t = time.perf_counter()
        fp32 = export_onnx(loaded.model, tmp / ONNX_FILES["fp32"], spec, metadata)
        import torch

        # spread over the whole validation split, not its first (often empty) slices
        picks = np.unique(np.linspace(0, len(data.val) - 1, min(16, len(data.val))).astype(int))
        sample = data.val.images[picks]
        with torch.no_grad():
            reference = loaded.model(torch.from_numpy(sample)).numpy()
        fp32_sample = run_onnx(fp32, sample)  # the reference of the FP16 and INT8 parity too
        parity = compare_logits(reference, fp32_sample)
        if parity.max_abs_diff > PARITY_MAX_ABS_DIFF or parity.argmax_agreement < PARITY_MIN_ARGMAX:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch on {len(sample)} real slices: max |logit "
                f"diff| {parity.max_abs_diff:.2e} (limit {PARITY_MAX_ABS_DIFF:g}), argmax "
                f"agreement {parity.argmax_agreement:.4%} (limit {PARITY_MIN_ARGMAX:.1%})"
            )
        fp32_acc = evaluate_onnx(fp32, data.val, classes)
        precisions["fp32"] = precision_entry(
            fp32, parity.to_dict(), fp32_acc, {"reference": "pytorch"}
        )
        on_event(
            file_done(
                "onnx.fp32",
                "ONNX FP32",
                fp32,
                t,
                f"parity vs PyTorch max|Δ| {parity.max_abs_diff:.1e}, "
                f"argmax {parity.argmax_agreement:.2%}; val Dice {fp32_acc.dice_mean:.4f}",
                parity=parity.to_dict(),
                dice_mean=fp32_acc.dice_mean,
            )
        )

        def evaluate(path: Path) -> Accuracy:
            return evaluate_onnx(path, data.val, classes, reference=fp32_acc)

        backends = installed_cpu_backends()
        fp32_by_backend = {"onnxruntime": fp32_acc}
        for name in backends:
            if name != "onnxruntime":
                fp32_by_backend[name] = evaluate_onnx(fp32, data.val, classes, backend=name)

        def evaluate_on(backend: str, precision: str = "int8") -> Callable[[Path], Accuracy]:
            def run(path: Path) -> Accuracy:
                reference = fp32_by_backend[backend]
                return evaluate_onnx(
                    path, data.val, classes, reference, backend=backend, precision=precision
                )

            return run

        if options.fp16:
            from medseg.calibration import convert_fp16

            on_event(Event("onnx.fp16", "start", "converting to FP16 (AutoCast)..."))
            t = time.perf_counter()
            result = convert_fp16(fp32, tmp / ONNX_FILES["fp16"], reference_inputs=sample[:8])
            acc = evaluate(tmp / ONNX_FILES["fp16"])
            fp16_parity = compare_logits(fp32_sample, run_onnx(tmp / ONNX_FILES["fp16"], sample))
            precisions["fp16"] = precision_entry(
                tmp / ONNX_FILES["fp16"],
                fp16_parity.to_dict(),
                acc,
                result.to_manifest(),
            )
            on_event(
                file_done(
                    "onnx.fp16",
                    "ONNX FP16",
                    tmp / ONNX_FILES["fp16"],
                    t,
                    f"AutoCast, I/O FP32, {result.fp16_nodes} nodes FP16, "
                    f"{len(result.fp32_nodes)} kept FP32 (overflow-prone op types); "
                    f"val Dice {acc.dice_mean:.4f} (drop {acc.dice_drop_pts:+.3f} pts)",
                    dice_mean=acc.dice_mean,
                    dice_drop_pts=acc.dice_drop_pts,
                )
            )

        if options.int8:
            from medseg.calibration import select_calibration_slices
            from medseg.export.guard import guard_int8

            assert options.calib_data is not None  # checked in ExportOptions
            on_event(Event("calibration", "start", "drawing calibration slices..."))
            t = time.perf_counter()
            same = options.calib_data.resolve() == data_path.resolve()
            calib_data = data if same else _load_data(options.calib_data, meta, train_config)
            with warnings.catch_warnings(record=True) as caught:  # sent as warning events
                warnings.simplefilter("always")
                calib = select_calibration_slices(
                    calib_data.train, classes, options.calib_slices, seed=0
                )
            for warning in caught:
                on_event(Event("calibration", "warning", str(warning.message)))
            calib.save_npz(tmp / CALIBRATION_NAME)
            calibration_info = {
                "dataset": str(options.calib_data),
                "fingerprint": calib_data.fingerprint,
                "file": CALIBRATION_NAME,
                **calib.to_manifest(),
            }
            on_event(
                file_done(
                    "calibration",
                    "calibration slices",
                    tmp / CALIBRATION_NAME,
                    t,
                    f"{len(calib.refs)} slices from the training split, every class covered",
                    slices=len(calib.refs),
                )
            )
            on_event(Event("int8", "start", "quantising to INT8 (Q/DQ), accuracy guard..."))
            t = time.perf_counter()
            budget = options.max_dice_drop if options.max_dice_drop is not None else float("inf")
            guard_backend = options.int8_backend
            outcome = guard_int8(
                fp32,
                tmp / ONNX_FILES["int8"],
                calib.images,
                options.calib_method,
                budget,
                evaluate_on(guard_backend),
                on_event,
                backend=guard_backend,
            )
            int8_acc = (  # the entry's accuracy is ONNX Runtime's, like every precision's
                outcome.accuracy
                if guard_backend == "onnxruntime"
                else evaluate(tmp / ONNX_FILES["int8"])
            )
            int8_parity = compare_logits(fp32_sample, run_onnx(tmp / ONNX_FILES["int8"], sample))
            details: dict[str, Any] = {
                "calibration_method": options.calib_method,
                "quantized_nodes": list(outcome.result.quantized_nodes),
                "kept_in_higher_precision": list(outcome.result.excluded_nodes),
                "max_dice_drop_pts": options.max_dice_drop,
                "guard_backend": guard_backend,
                "guard_attempts": [a.to_dict() for a in outcome.attempts],
            }
            evaluators = {b: evaluate_on(b) for b in backends}
            cpu_file = cpu_int8_file(tmp, fp32, calib.images, evaluators, budget, on_event)
            if cpu_file is not None:
                details[CPU_FILE_KEY] = cpu_file
            precisions["int8"] = precision_entry(
                tmp / ONNX_FILES["int8"], int8_parity.to_dict(), int8_acc, details
            )
            on_event(
                file_done(
                    "int8",
                    "ONNX INT8",
                    tmp / ONNX_FILES["int8"],
                    t,
                    f"Q/DQ on {len(outcome.result.quantized_nodes)} layers, "
                    f"{len(outcome.result.excluded_nodes)} kept in FP32 (guard on "
                    f"{guard_backend}); val Dice {outcome.accuracy.dice_mean:.4f} "
                    f"(drop {outcome.accuracy.dice_drop_pts:+.3f} pts on {guard_backend})",
                    dice_mean=outcome.accuracy.dice_mean,
                    dice_drop_pts=outcome.accuracy.dice_drop_pts,
                    guard_backend=guard_backend,
                )
            )

        on_event(Event("backend_accuracy", "start", "accuracy per CPU backend..."))
        t = time.perf_counter()
        backend_accuracy = accuracy_per_backend(
            backends, precisions, fp32_by_backend, tmp, evaluate_on
        )
        drops = "; ".join(
            f"{b}: " + ", ".join(f"{p} {a['dice_drop_pts']:+.3f} pts" for p, a in by.items())
            for b, by in backend_accuracy.items()
        )
        seconds = time.perf_counter() - t
        on_event(
            Event(
                "backend_accuracy",
                "done",
                f"accuracy per CPU backend ({drops}; {seconds:.1f} s)",
                {"backend_accuracy": backend_accuracy, "seconds": round(seconds, 3)},
            )
        )
        manifest = Manifest(
            model={**loaded.record, "name": f"{data.spec.name}-{loaded.record['arch']}"},
            classes=dict(meta["classes"]),
            input=spec,
            output_name=OUTPUT_NAME,
            preprocessing=data.recipe,
            precisions=precisions,
            calibration=calibration_info,
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
            backend_accuracy=backend_accuracy,
        )
        if options.check_tensorrt:
            from medseg.build import check_onnx_builds

            check_onnx_builds(tmp, manifest, on_event)
        manifest.save(tmp)
    on_event(_bundle_done(out, started))
    return manifest


def _bundle_done(out: Path, started: float) -> Event:
    seconds = time.perf_counter() - started
    return Event("bundle", "done", f"bundle {out} ({seconds:.0f} s)", {"bundle": str(out)})
