"""``export_bundle``: a trained checkpoint -> a deployable bundle directory.

Steps: rebuild the model from its checkpoint; export FP32 ONNX and check it against
PyTorch on real validation slices (fail on parity); FP16 via AutoCast; INT8 via Q/DQ
post-training quantisation on calibration slices drawn from the training split; score every
precision on the validation split with ONNX Runtime; with a Dice-drop budget, run the INT8
accuracy guard; write ``medseg.json``. All of it goes into a temporary folder that replaces
the output only when complete, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.atomic import atomic_dir, check_output_dir
from medseg.bundle import ONNX_FILES, DimRange, InputSpec, Manifest, PrecisionEntry, file_sha256
from medseg.bundle.cpu_files import CPU_FILE_KEY
from medseg.data.nifti import quiet_nibabel
from medseg.data.nnunet import NnUNetDataset
from medseg.data.orientation import axis_codes
from medseg.data.preprocessing import Recipe
from medseg.data.samples import TrainingData, load_training_data
from medseg.deps import EXTRA_OF
from medseg.errors import (
    ChannelMismatchError,
    ConfigError,
    DatasetError,
    ExportError,
    MissingDependencyError,
)
from medseg.export.accuracy import (
    CPU_BACKENDS,
    Accuracy,
    evaluate_onnx,
    installed_cpu_backends,
)
from medseg.export.onnx_export import OUTPUT_NAME, export_onnx
from medseg.export.ort import compare_logits, run_onnx

__all__ = ["ExportOptions", "export_bundle"]

INPUT_NAME = "image"
#: FP32 ONNX vs PyTorch on real slices: largest accepted |logit difference| and the least
#: accepted argmax agreement. Float reordering in ONNX Runtime gives ~1e-5 here.
PARITY_MAX_ABS_DIFF = 1e-3
PARITY_MIN_ARGMAX = 0.999
CALIBRATION_NAME = "calibration.npz"


@dataclass(frozen=True)
class ExportOptions:
    """What ``medseg export`` was asked for.

    Attributes:
        fp16: also write ``model.fp16.onnx`` (AutoCast, I/O in FP32).
        int8: also write ``model.int8.onnx`` (Q/DQ, calibrated on ``calib_data``).
        calib_data: dataset folder to draw calibration slices from (its training split).
        calib_slices: number of calibration slices.
        calib_method: ``"max"`` or ``"entropy"``.
        max_dice_drop: INT8 Dice-drop budget in points; ``None``: measure and record only.
        batch: allowed batch sizes (min, opt, max).
        height, width: fixed input size; ``None``: the size the model was trained at.
        dynamic_hw: accept any H, W (multiples of 16) from 16 to 4x the training size.
        data: dataset for parity and validation accuracy; ``None``: ``calib_data``, else
            the dataset recorded in the checkpoint.
        check_tensorrt: before the bundle is written, build every ONNX file with TensorRT-RTX
            (in memory, no GPU needed): a node TensorRT refuses fails the export, and the
            network report (and any partial-Q/DQ warning) is logged.
        guard_backend: the CPU backend the INT8 budget is met on (``"onnxruntime"`` or
            ``"openvino"``); ``None``: OpenVINO when installed, else ONNX Runtime.
    """

    fp16: bool = False
    int8: bool = False
    calib_data: Path | None = None
    calib_slices: int = 64
    calib_method: str = "max"
    max_dice_drop: float | None = None
    batch: tuple[int, int, int] = (1, 8, 32)
    height: int | None = None
    width: int | None = None
    dynamic_hw: bool = False
    data: Path | None = None
    check_tensorrt: bool = False
    guard_backend: str | None = None

    def __post_init__(self) -> None:
        if self.guard_backend is not None:
            if self.guard_backend not in CPU_BACKENDS:
                raise ConfigError(
                    f"--guard-backend {self.guard_backend!r}: accepted {', '.join(CPU_BACKENDS)}"
                )
            if not self.int8:
                raise ConfigError(
                    "--guard-backend is the INT8 accuracy guard's: use it with --int8"
                )
            if self.guard_backend not in installed_cpu_backends():
                raise MissingDependencyError(
                    f"--guard-backend {self.guard_backend}: {self.guard_backend} is not installed; "
                    f"install it with: pip install 'medseg-edge[{EXTRA_OF[self.guard_backend]}]'"
                )
        if self.int8 and self.calib_data is None:
            raise ConfigError("--int8 needs calibration data: pass --calib-data DATASET")
        if self.calib_method not in ("max", "entropy"):
            raise ConfigError(f"--calib-method {self.calib_method!r} must be 'max' or 'entropy'")
        if self.max_dice_drop is not None and not self.int8:
            raise ConfigError("--max-dice-drop is the INT8 accuracy budget: use it with --int8")
        if self.max_dice_drop is not None and self.max_dice_drop < 0:
            raise ConfigError(f"--max-dice-drop {self.max_dice_drop} must be >= 0 points")
        if self.dynamic_hw and (self.height is not None or self.width is not None):
            raise ConfigError("--dynamic-hw and --height/--width are exclusive: choose one")
        if (self.height is None) != (self.width is None):
            raise ConfigError("--height and --width go together")
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and (value <= 0 or value % 16):
                raise ConfigError(f"--{name} {value} must be a positive multiple of 16")
        if self.calib_slices < 1:
            raise ConfigError(
                f"--calib-slices {self.calib_slices} must be >= 1 (slices drawn from --calib-data)"
            )
        try:
            DimRange(*self.batch)  # validates min <= opt <= max
        except ConfigError:
            text = ":".join(map(str, self.batch))
            raise ConfigError(
                f"--batch {text} must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:32"
            ) from None
        for option, path in (("--calib-data", self.calib_data), ("--data", self.data)):
            if path is not None and not Path(path).is_dir():
                raise ConfigError(f"{option} {path}: no such dataset folder")

    @property
    def int8_backend(self) -> str:
        """The backend the INT8 guard measures on (see ``guard_backend``)."""
        if self.guard_backend is not None:
            return self.guard_backend
        return "openvino" if "openvino" in installed_cpu_backends() else "onnxruntime"


def _input_spec(options: ExportOptions, channels: int, trained_hw: tuple[int, int]) -> InputSpec:
    h, w = (options.height, options.width) if options.height is not None else trained_hw
    assert h is not None and w is not None  # both or neither (ExportOptions)
    if options.dynamic_hw:
        height, width = DimRange(16, h, 4 * h), DimRange(16, w, 4 * w)
    else:
        height, width = DimRange(h, h, h), DimRange(w, w, w)
    return InputSpec(INPUT_NAME, channels, DimRange(*options.batch), height, width)


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


def check_dataset_matches_model(path: Path, spec: Any, meta: dict[str, Any]) -> None:
    """A dataset's labels and channel count must be the trained model's (``meta``: checkpoint)."""
    if dict(spec.labels) != dict(meta["classes"]):
        raise DatasetError(
            f"{path} has labels {dict(spec.labels)} but the model was trained on {meta['classes']}"
        )
    if spec.num_channels != meta["in_channels"]:
        raise ChannelMismatchError(
            f"{path} has {spec.num_channels} channel(s) but the model takes {meta['in_channels']}"
        )


def _training_orientation(root: Path, log: Callable[[str], None]) -> str | None:
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
        log(
            f"warning: {root} training cases are in several orientations ({first}, "
            f"{', '.join(others)}): recording the first case's {first} in medseg.json"
        )
    return first


def _tool_versions() -> dict[str, str]:
    versions = {"medseg-edge": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxsim", "onnxruntime", "nvidia-modelopt", "monai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def export_bundle(
    checkpoint: Path,
    out: Path,
    options: ExportOptions,
    log: Callable[[str], None],
    force: bool = False,
) -> Manifest:
    """Export a ``medseg train`` run (or its ``model.pt``) to a bundle directory ``out``.

    Args:
        checkpoint: run directory or checkpoint file.
        out: bundle directory to write (replaced atomically with ``force``).
        options: precisions, calibration, budget and shapes.
        log: receives one human-readable line per step.
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

        return export_windowed(loaded, ckpt_path, out, options, data_path, log, started)
    data = _load_data(data_path, meta, train_config)
    if data.fingerprint != meta["dataset"]["fingerprint"]:
        log(
            f"warning: {data_path} is not the dataset the model was trained on "
            "(fingerprint differs): validation numbers are on its split, not the training one"
        )
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    spec = _input_spec(options, meta["in_channels"], tuple(meta["network_input_hw"]))
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
        precisions["fp32"] = _entry(fp32, parity.to_dict(), fp32_acc, {"reference": "pytorch"})
        log(
            _step(
                "ONNX FP32",
                fp32,
                t,
                f"parity vs PyTorch max|Δ| {parity.max_abs_diff:.1e}, "
                f"argmax {parity.argmax_agreement:.2%}; val Dice {fp32_acc.dice_mean:.4f}",
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

            t = time.perf_counter()
            result = convert_fp16(fp32, tmp / ONNX_FILES["fp16"], reference_inputs=sample[:8])
            acc = evaluate(tmp / ONNX_FILES["fp16"])
            fp16_parity = compare_logits(fp32_sample, run_onnx(tmp / ONNX_FILES["fp16"], sample))
            precisions["fp16"] = _entry(
                tmp / ONNX_FILES["fp16"],
                fp16_parity.to_dict(),
                acc,
                result.to_manifest(),
            )
            log(
                _step(
                    "ONNX FP16",
                    tmp / ONNX_FILES["fp16"],
                    t,
                    f"AutoCast, I/O FP32, {result.fp16_nodes} nodes FP16, "
                    f"{len(result.fp32_nodes)} kept FP32 (overflow-prone op types); "
                    f"val Dice {acc.dice_mean:.4f} (drop {acc.dice_drop_pts:+.3f} pts)",
                )
            )

        if options.int8:
            from medseg.calibration import select_calibration_slices
            from medseg.export.guard import guard_int8

            assert options.calib_data is not None  # checked in ExportOptions
            t = time.perf_counter()
            same = options.calib_data.resolve() == data_path.resolve()
            calib_data = data if same else _load_data(options.calib_data, meta, train_config)
            with warnings.catch_warnings(record=True) as caught:  # shown as log lines
                warnings.simplefilter("always")
                calib = select_calibration_slices(
                    calib_data.train, classes, options.calib_slices, seed=0
                )
            for warning in caught:
                log(f"warning: {warning.message}")
            calib.save_npz(tmp / CALIBRATION_NAME)
            calibration_info = {
                "dataset": str(options.calib_data),
                "fingerprint": calib_data.fingerprint,
                "file": CALIBRATION_NAME,
                **calib.to_manifest(),
            }
            log(
                _step(
                    "calibration slices",
                    tmp / CALIBRATION_NAME,
                    t,
                    f"{len(calib.refs)} slices from the training split, every class covered",
                )
            )
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
                log,
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
            cpu_file = _cpu_int8(tmp, fp32, calib.images, evaluators, budget, log)
            if cpu_file is not None:
                details[CPU_FILE_KEY] = cpu_file
            precisions["int8"] = _entry(
                tmp / ONNX_FILES["int8"], int8_parity.to_dict(), int8_acc, details
            )
            log(
                _step(
                    "ONNX INT8",
                    tmp / ONNX_FILES["int8"],
                    t,
                    f"Q/DQ on {len(outcome.result.quantized_nodes)} layers, "
                    f"{len(outcome.result.excluded_nodes)} kept in FP32 (guard on "
                    f"{guard_backend}); val Dice {outcome.accuracy.dice_mean:.4f} "
                    f"(drop {outcome.accuracy.dice_drop_pts:+.3f} pts on {guard_backend})",
                )
            )

        t = time.perf_counter()
        backend_accuracy = _backend_accuracy(
            backends, precisions, fp32_by_backend, tmp, evaluate_on
        )
        log(
            "✓ accuracy per CPU backend ("
            + "; ".join(
                f"{b}: " + ", ".join(f"{p} {a['dice_drop_pts']:+.3f} pts" for p, a in by.items())
                for b, by in backend_accuracy.items()
            )
            + f"; {time.perf_counter() - t:.1f} s)"
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
            tool_versions=_tool_versions(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            orientation=_training_orientation(data.spec.root, log),
            backend_accuracy=backend_accuracy,
        )
        if options.check_tensorrt:
            from medseg.build import check_onnx_builds

            check_onnx_builds(tmp, manifest, log)
        manifest.save(tmp)
    log(f"✓ bundle {out} ({time.perf_counter() - started:.0f} s)")
    return manifest


def _backend_accuracy(
    backends: tuple[str, ...],
    precisions: dict[str, PrecisionEntry],
    fp32_by_backend: dict[str, Accuracy],
    folder: Path,
    evaluate_on: Callable[[str, str], Callable[[Path], Accuracy]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy of every precision on every installed CPU backend (drop vs its own FP32)."""
    from medseg.runtime.cpu import cpu_features

    found: dict[str, dict[str, dict[str, Any]]] = {}
    for backend in backends:
        runs = [p for p in ("fp32", "fp16", "bf16", "int8") if p in precisions or p == "bf16"]
        if backend != "openvino" or cpu_features().bf16 is None:
            runs.remove("bf16")  # bf16: the FP32 file on OpenVINO, with native BF16 only
        by_precision: dict[str, dict[str, Any]] = {}
        for precision in runs:
            if precision == "fp32":
                accuracy = fp32_by_backend[backend]
            elif precision == "int8" and CPU_FILE_KEY in precisions["int8"].details:
                cpu_file = precisions["int8"].details[CPU_FILE_KEY]  # what both CPU backends run
                measured = cpu_file["accuracy_by_backend"][backend]
                by_precision[precision] = {**measured, "reference": f"{backend} fp32"}
                by_precision[precision]["file"] = cpu_file["file"]
                continue
            elif backend == "onnxruntime":
                accuracy = None  # already measured: the precision entry's own accuracy
            else:
                file = precisions["fp32" if precision == "bf16" else precision].file
                accuracy = evaluate_on(backend, precision)(folder / file)
            record = accuracy.to_dict() if accuracy else dict(precisions[precision].accuracy)
            by_precision[precision] = {**record, "reference": f"{backend} fp32"}
        found[backend] = by_precision
    return found


def _cpu_int8(
    folder: Path,
    fp32: Path,
    calibration: np.ndarray,
    evaluators: dict[str, Callable[[Path], Accuracy]],
    budget_pts: float,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """``model.int8.cpu.onnx`` (ONNX Runtime's QDQ form) and its entry, measured on every
    CPU backend of ``evaluators`` (``onnxruntime`` first); ``None`` (file removed, the CPU
    backends keep the TensorRT-form file) when it misses the INT8 budget on one of them."""
    from medseg.export.cpu_int8 import make_cpu_int8

    t = time.perf_counter()
    entry = make_cpu_int8(folder, fp32, calibration, evaluators["onnxruntime"])
    path = folder / entry["file"]
    by_backend = {"onnxruntime": entry["accuracy"]}
    for backend, evaluate in evaluators.items():
        if backend != "onnxruntime":
            by_backend[backend] = evaluate(path).to_dict()
    entry["accuracy_by_backend"] = by_backend
    drops = ", ".join(f"{b} {a['dice_drop_pts']:+.3f}" for b, a in by_backend.items())
    details = entry["details"]
    over = [b for b, a in by_backend.items() if a["dice_drop_pts"] > budget_pts]
    if over:
        log(
            f"! {entry['file']}: Dice drop ({drops} pts) over the {budget_pts:g} pt budget on "
            f"{', '.join(over)}: not kept; CPU backends run model.int8.onnx"
        )
        path.unlink()
        return None
    log(
        _step(
            "ONNX INT8 for CPUs",
            path,
            t,
            f"ONNX Runtime QDQ (u8 activations, s8 per-channel weights), "
            f"{details['ort_integer_convs']}/{details['total_convs']} convolutions in integer "
            f"kernels; val Dice drop {drops} pts",
        )
    )
    return entry


def _entry(
    path: Path, parity: dict[str, float], accuracy: Accuracy, details: dict[str, Any]
) -> PrecisionEntry:
    return PrecisionEntry(
        path.name, file_sha256(path), path.stat().st_size, parity, accuracy.to_dict(), details
    )


def _step(what: str, path: Path, started: float, detail: str) -> str:
    size = path.stat().st_size / 1e6
    seconds = time.perf_counter() - started
    return f"✓ {what}: {path.name} ({size:.1f} MB, {seconds:.1f} s); {detail}"
