"""The bundle's CPU INT8 file (``model.int8.cpu.onnx``): made at export, or added to a bundle.

:func:`cpu_int8_entry` quantises the FP32 file with ONNX Runtime's quantiser
(:func:`medseg.calibration.int8_cpu.quantize_int8_cpu`) on the calibration slices the
TensorRT INT8 file was calibrated on, and returns the manifest entry that
:mod:`medseg.bundle.cpu_files` reads. :func:`add_cpu_int8` does the same for a bundle that
already exists (the committed demo bundle): the file is written atomically, then
``medseg.json`` is rewritten atomically with the entry; nothing else of the bundle changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.cpu_files import CPU_FILE_KEY, CPU_INT8_FILE, cpu_int8_entry
from medseg.bundle.entries import file_sha256
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.events import Event, EventSink, file_done
from medseg.export.accuracy import Accuracy
from medseg.export.guard import Budget
from medseg.export.ort import compare_logits, run_onnx

__all__ = ["add_cpu_int8", "cpu_int8_file", "make_cpu_int8"]

#: Parity of the CPU file is measured on (at most) this many calibration slices.
PARITY_SLICES = 16


def make_cpu_int8(
    folder: Path,
    fp32_path: Path,
    calibration: np.ndarray,
    evaluate: Callable[[Path], Accuracy] | None = None,
    *,
    result: Any = None,
    accuracy: Accuracy | None = None,
) -> dict[str, Any]:
    """Write ``folder/model.int8.cpu.onnx`` and return its manifest entry.

    Args:
        folder: the bundle (or the export's temporary) folder.
        fp32_path: the FP32 ONNX file.
        calibration: ``(N, C, H, W)`` float32 calibration slices (those of ``model.int8.onnx``).
        evaluate: scores a file on the validation split with ONNX Runtime (drop vs FP32);
            ``None``: the entry has no accuracy (:func:`add_cpu_int8` without data).
        result: the :class:`~medseg.calibration.int8_cpu.CpuInt8Result` of a file already
            written to ``folder`` (by the guard); ``None``: quantise it here, whole.
        accuracy: that file's accuracy on ONNX Runtime, already measured.

    Returns:
        ``{file, sha256, size_bytes, parity, accuracy, details}``; parity is against the FP32
        file on the first :data:`PARITY_SLICES` calibration slices, with ONNX Runtime; the
        accuracy carries the CPU class it was measured on.
    """
    from medseg.calibration.int8_cpu import quantize_int8_cpu
    from medseg.runtime.cpu import cpu_features

    path = Path(folder) / CPU_INT8_FILE
    if result is None:
        result = quantize_int8_cpu(fp32_path, path, calibration)
    sample = np.ascontiguousarray(calibration[:PARITY_SLICES], dtype=np.float32)
    parity = compare_logits(run_onnx(fp32_path, sample), run_onnx(path, sample))
    if accuracy is None and evaluate is not None:
        accuracy = evaluate(path)
    record = (
        {**accuracy.to_dict(), "cpu_class": cpu_features().cpu_class}
        if accuracy is not None
        else {}
    )
    return {
        "file": CPU_INT8_FILE,
        "sha256": file_sha256(path),
        "size_bytes": path.stat().st_size,
        "parity": {**parity.to_dict(), "slices": "calibration"},
        "accuracy": record,
        "details": {**result.to_manifest(), "runs_on": ["onnxruntime"]},
    }


def cpu_int8_file(
    folder: Path,
    fp32: Path,
    calibration: np.ndarray,
    evaluators: dict[str, Callable[[Path], Accuracy]],
    budget: Budget | float,
    on_event: EventSink,
    rank: Callable[[Path], tuple[str, ...]] | None = None,
) -> dict[str, Any] | None:
    """Make the CPU file at export within ``budget`` on ONNX Runtime, measure it everywhere.

    ``evaluators`` maps backend name (``onnxruntime`` first) to a validation scorer. The file
    is ONNX Runtime's form of INT8, so its budget is met on ONNX Runtime, on this machine's
    CPU class: the accuracy guard (:func:`medseg.export.guard.guard_int8`) keeps the layers
    ``rank`` puts first in FP32 until it holds. Its accuracy on the other backends is
    recorded (``accuracy_by_backend``) so that each of them runs the INT8 file that loses
    less on it (:func:`medseg.export.accuracy.accuracy_per_backend`). Returns the entry, or
    ``None`` (no file: ONNX Runtime keeps running ``model.int8.onnx``) when the guard cannot
    meet the budget.

    Args:
        rank: ``rank(first_attempt)`` -> node names of the FP32 model, most sensitive first
            (the export passes the TensorRT-form file's leave-one-out ranking: ONNX Runtime's
            integer kernels cannot be wrapped layer by layer).
    """
    import time

    from medseg.calibration.int8_cpu import quantize_int8_cpu
    from medseg.errors import ExportError
    from medseg.export.guard import guard_int8
    from medseg.runtime.cpu import cpu_features

    t = time.perf_counter()
    path = Path(folder) / CPU_INT8_FILE

    def quantize(out: Path, excluded: tuple[str, ...]) -> Any:
        return quantize_int8_cpu(fp32, out, calibration, excluded)

    def no_ranking(_: Path) -> tuple[str, ...]:
        raise ExportError("no layer ranking for the CPU INT8 file")

    try:
        outcome = guard_int8(
            fp32,
            path,
            calibration,
            "max",
            budget,
            evaluators["onnxruntime"],
            on_event,
            "onnxruntime",
            quantize=quantize,
            rank=rank or no_ranking,
            label=CPU_INT8_FILE,
        )
    except ExportError as exc:
        path.unlink(missing_ok=True)
        on_event(
            Event(
                "int8-cpu",
                "warning",
                f"{CPU_INT8_FILE}: not kept ({exc}); ONNX Runtime runs model.int8.onnx",
            )
        )
        return None
    entry = make_cpu_int8(
        folder, fp32, calibration, result=outcome.result, accuracy=outcome.accuracy
    )
    entry["details"]["guard_attempts"] = [a.to_dict() for a in outcome.attempts]
    cpu_class = cpu_features().cpu_class
    by_backend = {"onnxruntime": entry["accuracy"]}
    for backend, evaluate in evaluators.items():
        if backend != "onnxruntime":
            by_backend[backend] = {**evaluate(path).to_dict(), "cpu_class": cpu_class}
    entry["accuracy_by_backend"] = by_backend
    drops = ", ".join(f"{b} {a['dice_drop_pts']:+.3f}" for b, a in by_backend.items())
    details = entry["details"]
    on_event(
        file_done(
            "int8-cpu",
            "ONNX INT8 for CPUs",
            path,
            t,
            f"ONNX Runtime QDQ ({details['format']}), {len(outcome.result.excluded_nodes)} "
            f"layer(s) kept in FP32, {details['ort_integer_convs']}/{details['total_convs']} "
            f"convolutions in integer kernels; val Dice drop {drops} pts on {cpu_class}",
            accuracy_by_backend=by_backend,
        )
    )
    return entry


def add_cpu_int8(
    bundle: Path,
    *,
    force: bool = False,
    evaluate: Callable[[Path], Accuracy] | None = None,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Add ``model.int8.cpu.onnx`` and its manifest entry to an existing bundle.

    Args:
        bundle: a bundle with an INT8 precision and its ``calibration.npz``.
        force: replace a CPU INT8 file the bundle already records.
        evaluate: optional validation scorer (see :func:`make_cpu_int8`).
        log: receives one line when done.

    Returns:
        The updated manifest (already saved).

    Raises:
        ConfigError: not a bundle, no INT8 precision or no calibration file, the FP32 file
            does not match its sha256, or a CPU INT8 file is recorded already (without
            ``force``). All checked before any quantisation.
    """
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    if "int8" not in manifest.precisions:
        raise ConfigError(
            f"bundle {bundle} has no int8 precision (it has {sorted(manifest.precisions)}); "
            "export it with --int8 first"
        )
    if cpu_int8_entry(manifest) is not None and not force:
        raise ConfigError(
            f"bundle {bundle} already has {CPU_INT8_FILE}; pass force=True to replace it"
        )
    calib_name = (manifest.calibration or {}).get("file", "calibration.npz")
    calib_path = bundle / calib_name
    if not calib_path.is_file():
        raise ConfigError(
            f"bundle {bundle} has no calibration file {calib_name}: the CPU INT8 file is "
            "calibrated on the same slices as model.int8.onnx"
        )
    fp32 = manifest.onnx_path(bundle, "fp32", verify=True)
    with np.load(calib_path) as npz:
        if "images" not in npz:
            raise ConfigError(f"{calib_path} has no 'images' array; keys: {sorted(npz.files)}")
        images = np.asarray(npz["images"], dtype=np.float32)
    entry = make_cpu_int8(bundle, fp32, images, evaluate)
    data = manifest.to_dict()
    data["precisions"]["int8"]["details"][CPU_FILE_KEY] = entry
    updated = Manifest.from_dict(data)
    updated.save(bundle)
    if log is not None:
        details = entry["details"]
        log(
            f"✓ {CPU_INT8_FILE} ({entry['size_bytes'] / 1e6:.1f} MB): "
            f"{details['ort_integer_convs']}/{details['total_convs']} convolutions in ONNX "
            f"Runtime integer kernels; argmax agreement with FP32 "
            f"{entry['parity']['argmax_agreement']:.2%} on {len(images[:PARITY_SLICES])} "
            "calibration slices"
        )
    return updated
