"""The precision steps both exports share: the FP32 file checked against PyTorch
(:func:`export_fp32`), then (:func:`run_precision_steps`) FP16, INT8 with its accuracy guard
on the guard backend, the CPU INT8 file, and the accuracy of every precision on every
installed CPU backend.

The fixed-size export (:mod:`medseg.export.pipeline`) and the sliding-window export
(:mod:`medseg.export.windowed`) differ only in how a file is scored on validation (whole
validation slices at network size, or the runtime's sliding window over each validation
case on its own grid) and in how calibration inputs are drawn (training slices, or training
patches). Each passes those two as functions; everything else — which files are made, what
the guard measures on, what the manifest records — is decided here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle import ONNX_FILES, InputSpec, PrecisionEntry
from medseg.bundle.cpu_files import CPU_FILE_KEY
from medseg.errors import ExportError
from medseg.events import Event, EventSink, file_done
from medseg.export.accuracy import Accuracy, accuracy_per_backend, installed_cpu_backends
from medseg.export.onnx_export import OUTPUT_NAME, export_onnx
from medseg.export.options import (
    PARITY_MAX_ABS_DIFF,
    PARITY_MIN_ARGMAX,
    ExportOptions,
    precision_entry,
)
from medseg.export.ort import Parity, compare_logits, run_onnx
from medseg.runtime.cpu import cpu_features

__all__ = ["Calibrate", "Fp32File", "PrecisionSteps", "Score", "export_fp32", "run_precision_steps"]

#: ``score(path, backend, precision, reference)``: the validation accuracy of one ONNX file
#: on a CPU backend (``"onnxruntime"`` or ``"openvino"``; ``precision`` is OpenVINO's
#: inference-precision hint, see :func:`medseg.export.accuracy.backend_predictor`); drop and
#: agreement against ``reference``, the FP32 file's accuracy on the same backend (``None``:
#: this is that FP32 accuracy).
Score = Callable[[Path, str, str, Accuracy | None], Accuracy]

#: ``calibrate(folder)``: draws the INT8 calibration inputs, writes the calibration file into
#: ``folder`` and returns ``((N, C, h, w) float32 inputs, the manifest's calibration record)``.
Calibrate = Callable[[Path], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Fp32File:
    """The FP32 ONNX file and its check against PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        sample: ``(N, C, h, w)`` float32 real network inputs (FP16/INT8 parity is on them too).
        logits: ``(N, K, h, w)`` float32 logits of ``path`` on ``sample`` (ONNX Runtime).
        parity: ``logits`` against PyTorch's.
    """

    path: Path
    sample: np.ndarray
    logits: np.ndarray
    parity: Parity


def export_fp32(loaded: Any, path: Path, spec: InputSpec, sample: np.ndarray) -> Fp32File:
    """Export a loaded checkpoint's model to FP32 ONNX at ``path`` (input ``spec``; the model,
    classes and recipe in the file's metadata) and check it against PyTorch on ``sample``.

    Raises:
        ExportError: max |logit difference| over ``PARITY_MAX_ABS_DIFF`` or argmax agreement
            under ``PARITY_MIN_ARGMAX``.
    """
    import torch

    meta = loaded.meta
    metadata = {
        "medseg.input": {"name": spec.name, "layout": "NCHW", "channels": spec.channels},
        "medseg.output": {"name": OUTPUT_NAME, "classes": meta["classes"]},
        "medseg.model": loaded.record["arch"],
        "medseg.recipe": meta["recipe"],
    }
    export_onnx(loaded.model, path, spec, metadata)
    with torch.no_grad():
        reference = loaded.model(torch.from_numpy(sample)).numpy()
    logits = run_onnx(path, sample)
    parity = compare_logits(reference, logits)
    if parity.max_abs_diff > PARITY_MAX_ABS_DIFF or parity.argmax_agreement < PARITY_MIN_ARGMAX:
        h, w = sample.shape[2:]
        raise ExportError(
            f"ONNX Runtime disagrees with PyTorch on {len(sample)} real {h}x{w} inputs: max "
            f"|logit diff| {parity.max_abs_diff:.2e} (limit {PARITY_MAX_ABS_DIFF:g}), argmax "
            f"agreement {parity.argmax_agreement:.4%} (limit {PARITY_MIN_ARGMAX:.1%})"
        )
    return Fp32File(path, sample, logits, parity)


@dataclass(frozen=True)
class PrecisionSteps:
    """What the steps added: precision entries, calibration record, accuracy per backend."""

    precisions: dict[str, PrecisionEntry]
    calibration: dict[str, Any] | None
    backend_accuracy: dict[str, dict[str, dict[str, Any]]]


def run_precision_steps(
    folder: Path,
    fp32_file: Fp32File,
    fp32_accuracy: Accuracy,
    options: ExportOptions,
    score: Score,
    calibrate: Calibrate,
    on_event: EventSink,
) -> PrecisionSteps:
    """FP16 and INT8 files next to ``fp32`` in ``folder``, each scored on every CPU backend.

    Args:
        folder: the export's temporary bundle folder (holds ``fp32``).
        fp32_file: the FP32 file of :func:`export_fp32` (in ``folder``).
        fp32_accuracy: its validation accuracy on ONNX Runtime (the reference of the other
            precisions' entries).
        options: the :class:`~medseg.export.options.ExportOptions` (``fp16``, ``int8``,
            ``max_dice_drop``, ``calib_method``, ``int8_backend``).
        score: scores a file on validation (see :data:`Score`).
        calibrate: draws and writes the calibration inputs (see :data:`Calibrate`); called
            only with ``options.int8``.
        on_event: progress events.

    Returns:
        The entries of every precision (``fp32`` first), the calibration record (``None``
        without INT8) and ``backend -> precision -> accuracy record`` for the manifest's
        ``backend_accuracy``.
    """
    fp32, sample, fp32_sample = fp32_file.path, fp32_file.sample, fp32_file.logits
    backends = installed_cpu_backends()
    fp32_by_backend = {"onnxruntime": fp32_accuracy}
    for backend in backends:
        if backend != "onnxruntime":
            fp32_by_backend[backend] = score(fp32, backend, "fp32", None)

    def evaluate_on(backend: str, precision: str = "int8") -> Callable[[Path], Accuracy]:
        def run(path: Path) -> Accuracy:
            return score(path, backend, precision, fp32_by_backend[backend])

        return run

    evaluate = evaluate_on("onnxruntime")
    parity = fp32_file.parity.to_dict()
    precisions = {"fp32": precision_entry(fp32, parity, fp32_accuracy, {"reference": "pytorch"})}
    calibration: dict[str, Any] | None = None
    if options.fp16:
        precisions["fp16"] = _fp16(folder, fp32, sample, fp32_sample, evaluate, on_event)
    if options.int8:
        images, calibration = calibrate(folder)
        evaluators = {b: evaluate_on(b) for b in backends}
        precisions["int8"] = _int8(
            folder, fp32, images, sample, fp32_sample, options, evaluators, on_event
        )
    on_event(Event("backend_accuracy", "start", "accuracy per CPU backend..."))
    t = time.perf_counter()
    backend_accuracy = accuracy_per_backend(
        backends, precisions, fp32_by_backend, folder, evaluate_on, options.budget
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
    return PrecisionSteps(precisions, calibration, backend_accuracy)


def _fp16(
    folder: Path,
    fp32: Path,
    sample: np.ndarray,
    fp32_sample: np.ndarray,
    evaluate: Callable[[Path], Accuracy],
    on_event: EventSink,
) -> PrecisionEntry:
    """FP16 by AutoCast (I/O FP32), scored on ONNX Runtime."""
    from medseg.calibration import convert_fp16

    on_event(Event("onnx.fp16", "start", "converting to FP16 (AutoCast)..."))
    t = time.perf_counter()
    path = folder / ONNX_FILES["fp16"]
    result = convert_fp16(fp32, path, reference_inputs=sample[:8])
    accuracy = evaluate(path)
    parity = compare_logits(fp32_sample, run_onnx(path, sample))
    on_event(
        file_done(
            "onnx.fp16",
            "ONNX FP16",
            path,
            t,
            f"AutoCast, I/O FP32, {result.fp16_nodes} nodes FP16, "
            f"{len(result.fp32_nodes)} kept FP32 (overflow-prone op types); "
            f"val Dice {accuracy.dice_mean:.4f} (drop {accuracy.dice_drop_pts:+.3f} pts)",
            dice_mean=accuracy.dice_mean,
            dice_drop_pts=accuracy.dice_drop_pts,
        )
    )
    return precision_entry(path, parity.to_dict(), accuracy, result.to_manifest())


def _int8(
    folder: Path,
    fp32: Path,
    calibration: np.ndarray,
    sample: np.ndarray,
    fp32_sample: np.ndarray,
    options: ExportOptions,
    evaluators: dict[str, Callable[[Path], Accuracy]],
    on_event: EventSink,
) -> PrecisionEntry:
    """Q/DQ INT8 guarded on ``options.int8_backend``, then the CPU INT8 file.

    ``evaluators``: backend -> scorer (drop vs that backend's FP32), ``onnxruntime`` first.
    The entry's accuracy is ONNX Runtime's, like every precision entry's; the guard
    backend's is in its ``guard_attempts``.
    """
    from medseg.export.cpu_int8 import cpu_int8_file
    from medseg.export.guard import guard_int8

    on_event(Event("int8", "start", "quantising to INT8 (Q/DQ), accuracy guard..."))
    t = time.perf_counter()
    budget = options.budget
    guard_backend = options.int8_backend
    path = folder / ONNX_FILES["int8"]
    outcome = guard_int8(
        fp32,
        path,
        calibration,
        options.calib_method,
        budget,
        evaluators[guard_backend],
        on_event,
        backend=guard_backend,
        label=ONNX_FILES["int8"],
    )
    accuracy = (
        outcome.accuracy if guard_backend == "onnxruntime" else evaluators["onnxruntime"](path)
    )
    parity = compare_logits(fp32_sample, run_onnx(path, sample))
    details: dict[str, Any] = {
        "calibration_method": options.calib_method,
        "quantized_nodes": list(outcome.result.quantized_nodes),
        "kept_in_higher_precision": list(outcome.result.excluded_nodes),
        "max_dice_drop_pts": options.max_dice_drop,
        "max_class_drop_pts": options.max_class_drop,
        "guard_backend": guard_backend,
        "guard_attempts": [a.to_dict() for a in outcome.attempts],
        "cpu_class": cpu_features().cpu_class,
    }

    def rank(_: Path) -> tuple[str, ...]:  # the Q/DQ file's leave-one-out ranking
        from medseg.calibration import layer_sensitivity

        if outcome.ranking:
            return outcome.ranking
        return tuple(s.node for s in layer_sensitivity(fp32, path, calibration))

    cpu_file = cpu_int8_file(folder, fp32, calibration, evaluators, budget, on_event, rank)
    if cpu_file is not None:
        details[CPU_FILE_KEY] = cpu_file
    on_event(
        file_done(
            "int8",
            "ONNX INT8",
            path,
            t,
            f"Q/DQ on {len(outcome.result.quantized_nodes)} layers, "
            f"{len(outcome.result.excluded_nodes)} kept in FP32 (guard on {guard_backend}, "
            f"{budget.describe()}); val Dice {outcome.accuracy.dice_mean:.4f} "
            f"(drop {outcome.accuracy.dice_drop_pts:+.3f} pts on {guard_backend})",
            dice_mean=outcome.accuracy.dice_mean,
            dice_drop_pts=outcome.accuracy.dice_drop_pts,
            guard_backend=guard_backend,
        )
    )
    return precision_entry(path, parity.to_dict(), accuracy, details)
