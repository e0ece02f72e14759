"""Accuracy of an exported precision on the validation split, on a CPU backend (ONNX Runtime
by default; OpenVINO, whose INT8 and BF16 numerics differ, when asked).

Dice per class on whole validation slices at their original size (padding removed),
pooled over the split; the Dice drop against FP32 in points (x100); argmax agreement
with FP32 over every validation pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.cpu_files import CPU_FILE_KEY
from medseg.data.samples import SliceSet
from medseg.names import RUNTIME_PRECISIONS
from medseg.runtime.backends import CPU_BACKENDS, installed_cpu_backends
from medseg.runtime.backends.runners import runner_from_path
from medseg.runtime.backends.session import run_batches

__all__ = [
    "CPU_BACKENDS",
    "Accuracy",
    "accuracy_per_backend",
    "backend_predictor",
    "evaluate_onnx",
    "installed_cpu_backends",
    "run_backend",
    "scored",
]


def backend_predictor(
    path: Path, backend: str, precision: str = "fp32"
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``(N, C, H, W)`` float32 batch -> ``(N, K, H, W)`` float32 logits of one
    ONNX file on a CPU backend (the file is loaded once, here: a manifest-less runner,
    :func:`medseg.runtime.backends.runners.runner_from_path`).

    ``precision`` matters to OpenVINO only (its inference-precision hint: ``bf16`` runs the
    FP32 file with BF16 arithmetic; everything else with ``f32``).
    """
    return runner_from_path(path, backend, precision)


def run_backend(
    path: Path, images: np.ndarray, backend: str, precision: str = "fp32", batch_size: int = 8
) -> np.ndarray:
    """Logits ``(N, K, H, W)`` of an ONNX file on a CPU backend, ``(N, C, H, W)`` slices in
    (``precision``: see :func:`backend_predictor`)."""
    return run_batches(backend_predictor(path, backend, precision), images, batch_size)


@dataclass(frozen=True)
class Accuracy:
    """Validation accuracy of one precision.

    Attributes:
        dice_per_class: class name -> Dice in [0, 1].
        dice_mean: mean over the classes.
        dice_drop_pts: FP32 mean Dice minus this one, in points (x100); 0 for FP32 itself.
        argmax_agreement: share of validation pixels whose class equals FP32's.
        predictions: ``(N, H, W)`` uint8 network-size labels (not serialised).
        worst_class_drop_pts: the largest per-class Dice drop against FP32, in points (0 for
            FP32 itself): a thin class cannot vanish inside a good mean.
        ms_per_slice: milliseconds per slice inside the backend during this validation run
            (batch of the validation, this machine, its load); ``None``: not timed.
    """

    dice_per_class: dict[str, float]
    dice_mean: float
    dice_drop_pts: float
    argmax_agreement: float
    predictions: np.ndarray
    worst_class_drop_pts: float = 0.0
    ms_per_slice: float | None = None

    def to_dict(self) -> dict[str, Any]:
        found = {
            "dice_mean": self.dice_mean,
            "dice_per_class": self.dice_per_class,
            "dice_drop_pts": self.dice_drop_pts,
            "worst_class_drop_pts": self.worst_class_drop_pts,
            "argmax_agreement": self.argmax_agreement,
        }
        if self.ms_per_slice is not None:
            found["ms_per_slice"] = round(self.ms_per_slice, 2)
        return found


def scored(
    dice: dict[str, float],
    predictions: np.ndarray,
    reference: Accuracy | None,
    ms_per_slice: float | None = None,
) -> Accuracy:
    """An :class:`Accuracy` from per-class Dice and labels, its drops against ``reference``
    (the FP32 file's accuracy on the same backend; ``None``: this is it). Classes with no
    Dice (NaN: absent from the split) count in neither the mean nor the worst class."""
    values = [v for v in dice.values() if not np.isnan(v)]
    mean = float(np.mean(values)) if values else float("nan")
    if reference is None:
        return Accuracy(dice, mean, 0.0, 1.0, predictions, 0.0, ms_per_slice)
    drops = [
        100.0 * (reference.dice_per_class[k] - v)
        for k, v in dice.items()
        if k in reference.dice_per_class
        and not (np.isnan(v) or np.isnan(reference.dice_per_class[k]))
    ]
    agreement = float(np.mean(predictions == reference.predictions))
    drop = 100.0 * (reference.dice_mean - mean)
    worst = max(drops, default=0.0)
    return Accuracy(dice, mean, drop, agreement, predictions, worst, ms_per_slice)


def evaluate_onnx(
    path: Path,
    val: SliceSet,
    classes: dict[str, int],
    reference: Accuracy | None = None,
    batch_size: int = 8,
    backend: str = "onnxruntime",
    precision: str = "fp32",
) -> Accuracy:
    """Run ``path`` on the validation slices with ``backend`` and score it.

    ``reference``: the FP32 result of the same backend (drop and agreement are against it).
    """
    from medseg.metrics.slices import validation_dice

    logits = run_backend(path, val.images, backend, precision, batch_size)
    predictions = logits.argmax(axis=1).astype(np.uint8)
    dice = validation_dice(predictions, val, classes)
    return scored(dice, predictions, reference)


def accuracy_per_backend(
    backends: tuple[str, ...],
    precisions: dict[str, Any],
    fp32_by_backend: dict[str, Accuracy],
    folder: Path,
    evaluate_on: Callable[[str, str], Callable[[Path], Accuracy]],
    budget: Any = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy of every precision on every installed CPU backend (drop vs its own FP32).

    INT8 with a CPU file (``model.int8.cpu.onnx``): ONNX Runtime runs it (its form of INT8);
    every other backend runs whichever of the two INT8 files loses less Dice on it (both
    measured; the other's drop is kept in ``files_compared``), and the record's ``file``
    names it: the runtime loads that file
    (:func:`medseg.bundle.cpu_files.int8_file_for`).

    Every record carries ``cpu_class``, the class of this CPU
    (:attr:`medseg.runtime.cpu.CpuFeatures.cpu_class`): INT8 and BF16 numerics depend on
    it. With a ``budget`` (:class:`medseg.export.guard.Budget`), INT8 records also say
    whether they are ``within_budget``: the runtime's ``auto`` does not pick a backend whose
    INT8 is not.
    """
    from medseg.runtime.cpu import cpu_features

    cpu_class = cpu_features().cpu_class
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for backend in backends:
        runs = [p for p in RUNTIME_PRECISIONS if p in precisions or p == "bf16"]
        if backend != "openvino" or cpu_features().bf16 is None:
            runs.remove("bf16")  # bf16: the FP32 file on OpenVINO, with native BF16 only
        by_precision: dict[str, dict[str, Any]] = {}
        for precision in runs:
            if precision == "int8":
                record = _int8_record(backend, precisions["int8"], folder, evaluate_on)
                if budget is not None and budget.active:
                    met = (
                        budget.mean_pts is None or record["dice_drop_pts"] <= budget.mean_pts
                    ) and (
                        budget.class_pts is None
                        or record.get("worst_class_drop_pts", 0.0) <= budget.class_pts
                    )
                    record["within_budget"] = bool(met)
                by_precision["int8"] = {**record, "cpu_class": cpu_class}
                continue
            if precision == "fp32":
                accuracy = fp32_by_backend[backend]
            elif backend == "onnxruntime":
                accuracy = None  # already measured: the precision entry's own accuracy
            else:
                file = precisions["fp32" if precision == "bf16" else precision].file
                accuracy = evaluate_on(backend, precision)(folder / file)
            record = accuracy.to_dict() if accuracy else dict(precisions[precision].accuracy)
            by_precision[precision] = {
                **record,
                "reference": f"{backend} fp32",
                "cpu_class": cpu_class,
            }
        found[backend] = by_precision
    return found


def _int8_record(
    backend: str,
    entry: Any,
    folder: Path,
    evaluate_on: Callable[[str, str], Callable[[Path], Accuracy]],
) -> dict[str, Any]:
    """The INT8 record of one backend: the file it runs and that file's accuracy on it."""
    reference = f"{backend} fp32"
    cpu_file = entry.details.get(CPU_FILE_KEY)
    if backend == "onnxruntime":
        if cpu_file is not None:
            return {**cpu_file["accuracy"], "reference": reference, "file": cpu_file["file"]}
        return {**entry.accuracy, "reference": reference, "file": entry.file}
    measured = {entry.file: evaluate_on(backend, "int8")(folder / entry.file).to_dict()}
    if cpu_file is not None and backend in cpu_file.get("accuracy_by_backend", {}):
        measured[cpu_file["file"]] = cpu_file["accuracy_by_backend"][backend]
    file = min(measured, key=lambda f: measured[f]["dice_drop_pts"])  # ties: the Q/DQ file
    record = {**measured[file], "reference": reference, "file": file}
    if len(measured) > 1:
        record["files_compared"] = {f: a["dice_drop_pts"] for f, a in measured.items()}
    return record
