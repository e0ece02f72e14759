"""Export of an imported nnU-Net run (``medseg import nnunet``): per-fold ONNX FP32/FP16/INT8.

Per fold: the network rebuilt from the run's plans with the fold's weights, exported to
``fold_<k>/model.onnx`` with the plan's static patch and a dynamic batch (2D ``(B, C, H, W)``
or 3D ``(B, C, D, H, W)``), checked against PyTorch on real patches
(:func:`medseg.export.nnunet_data.fp32_parity`: ``|d| <= atol + rtol |logit|`` as Polygraphy
compares, argmax agreement and softmax difference; else :class:`ExportError`). Patches: from
``--calib-data``, else from the dataset the result folder names when it is on this machine
(:func:`medseg.export.nnunet_data.find_nnunet_dataset`), else standard-normal (said so).
FP16 (``--fp16``): AutoCast with ``InstanceNormalization`` kept in
FP32 besides the usual reductions (its mean/variance over a whole patch is what breaks FP16
InstanceNorm networks); INT8 (``--int8``): modelopt Q/DQ calibrated on patches of the training
cases. The export guard compares FP16 and INT8 to FP32 on held-out patches (argmax agreement,
mean Dice of the argmax against FP32's, largest |logit difference|) and refuses an FP16 file
whose outputs are not finite or agree on fewer than :data:`FP16_MIN_AGREEMENT` of the voxels.

Patches come from the dataset's training cases preprocessed by nnU-Net's own
``DefaultPreprocessor`` (the export side may use nnunetv2; the runtime does not).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir
from medseg.errors import ConfigError, DatasetError, ExportError
from medseg.export.nnunet_data import (
    PARITY_ATOL,
    PARITY_MAX_SOFTMAX_DIFF,
    PARITY_MIN_ARGMAX,
    PARITY_RTOL,
)
from medseg.names import PRECISIONS
from medseg.outputs import Input, Output
from medseg.outputs import guard as guard_outputs

__all__ = [
    "FP16_MIN_AGREEMENT",
    "NORM_OP_TYPES",
    "PARITY_ATOL",
    "PARITY_MAX_SOFTMAX_DIFF",
    "PARITY_MIN_ARGMAX",
    "PARITY_RTOL",
    "NnunetExportOptions",
    "export_nnunet",
    "preprocessed_training_cases",
]

FP16_MIN_AGREEMENT = 0.99
#: Normalisation op types kept in FP32 in the FP16 file.
NORM_OP_TYPES = ("InstanceNormalization", "GroupNormalization", "LayerNormalization")
REPORT_FILE = "export.json"


@dataclass(frozen=True)
class NnunetExportOptions:
    """What to export from an imported nnU-Net run.

    Attributes:
        fp16: also write ``fold_<k>/model.fp16.onnx``.
        int8: also write ``fold_<k>/model.int8.onnx`` (needs ``calib_data``).
        calib_data: nnU-Net raw dataset whose training cases give the patches.
        calib_patches: number of calibration patches (also the number of check patches).
        max_batch: the largest batch the ONNX files are checked with.
    """

    fp16: bool = False
    int8: bool = False
    calib_data: Path | None = None
    calib_patches: int = 16
    max_batch: int = 4

    def __post_init__(self) -> None:
        if self.int8 and self.calib_data is None:
            raise ConfigError("--int8 needs calibration data: pass --calib-data DATASET")
        if not 1 <= self.calib_patches <= 1024:
            raise ConfigError(f"--calib-slices {self.calib_patches} must be in 1..1024")
        if not 1 <= self.max_batch <= 64:
            raise ConfigError(f"max batch {self.max_batch} must be in 1..64")


def preprocessed_training_cases(
    dataset: Path, run: Path, configuration: str, max_cases: int = 8
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training cases of ``dataset`` preprocessed by nnU-Net's DefaultPreprocessor.

    Returns:
        ``(images, labels)``: ``(C, z, y, x)`` float32 and ``(z, y, x)`` int16 per case.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medseg.data.nnunet import NnUNetDataset

    data = NnUNetDataset.open(Path(dataset))
    dataset_json = json.loads((run / "dataset.json").read_text())
    if data.spec.num_channels != len(dataset_json["channel_names"]):
        raise DatasetError(
            f"{dataset} has {data.spec.num_channels} channels; the imported model takes "
            f"{len(dataset_json['channel_names'])}"
        )
    known = {int(v) for v in dataset_json["labels"].values()}
    unknown = {k: v for k, v in data.spec.labels.items() if v not in known}
    if unknown:
        raise DatasetError(
            f"{dataset / 'dataset.json'}: labels {unknown} are not classes of the imported "
            f"model (its {run / 'dataset.json'} has {dict(dataset_json['labels'])}); calibrate "
            "with cases of the model's own task"
        )
    plans = PlansManager(json.loads((run / "plans.json").read_text()))
    config = plans.get_configuration(configuration)
    pre = DefaultPreprocessor(verbose=False)
    images, labels = [], []
    for case in data.cases("train")[:max_cases]:
        image, seg, _ = pre.run_case(
            [str(p) for p in case.images],
            str(case.label) if case.label else None,
            plans,
            config,
            dataset_json,
        )
        images.append(np.asarray(image, dtype=np.float32))
        labels.append(np.asarray(seg[0], dtype=np.int16))
    if not images:
        raise DatasetError(f"{dataset} has no training cases")
    return images, labels


def _agreement(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Argmax agreement, mean Dice of ``actual``'s argmax vs ``reference``'s, max |diff|."""
    from medseg.metrics import DiceAccumulator

    ref, act = reference.argmax(1), actual.argmax(1)
    dice = DiceAccumulator({str(k): k for k in range(reference.shape[1])}, empty="nan")
    dice.update(act.reshape(len(act), -1), ref.reshape(len(ref), -1))  # any patch rank
    mean = dice.mean()  # classes absent from both are left out
    return {
        "argmax_agreement": float((ref == act).mean()),
        "dice_vs_fp32": 1.0 if np.isnan(mean) else mean,
        "max_abs_diff": float(np.abs(reference - actual).max()),
        "finite": bool(np.isfinite(actual).all()),
    }


def export_nnunet(
    run: Path,
    out: Path,
    options: NnunetExportOptions,
    log: Callable[[str], None] = lambda line: None,
    force: bool = False,
) -> dict[str, Any]:
    """Export every fold of an imported run (see the module docstring).

    Returns:
        The export record written to ``out/export.json``: per fold and precision the file,
        size and the checks against PyTorch (FP32) or FP32 (FP16, INT8).
    """
    inputs = [Input("run", run), Input("options.calib_data", options.calib_data)]
    guard_outputs([Output("out", Path(out), "bundle")], inputs, force=force)
    import torch

    from medseg.bundle import DimRange, InputSpec, file_sha256
    from medseg.calibration.fp16 import FP16_KEEP_FP32_OP_TYPES, convert_fp16
    from medseg.calibration.int8 import Int8Config, quantize_int8
    from medseg.calibration.patches import draw_patches
    from medseg.export.nnunet_data import (
        data_identifier,
        find_nnunet_dataset,
        fp32_parity,
        nnunet_preprocessed_cases,
    )
    from medseg.export.onnx_export import export_onnx
    from medseg.export.ort import run_onnx
    from medseg.importers.nnunet import IMPORT_FILE, build_network, read_imported_run

    out = Path(out)
    result, weights, record = read_imported_run(run)
    patch = [int(p) for p in result.config["patch_size"]]
    channels = result.num_input_channels
    started = time.perf_counter()
    found = (
        ("raw", Path(options.calib_data))
        if options.calib_data is not None
        else find_nnunet_dataset(
            record.get("source", {}), data_identifier(Path(run), result.configuration)
        )
    )
    if found is not None:
        kind, where = found
        if kind == "raw":
            images, labels = preprocessed_training_cases(where, Path(run), result.configuration)
            source = f"training cases of {where} (nnU-Net DefaultPreprocessor)"
        else:
            images, labels = nnunet_preprocessed_cases(where)
            source = f"nnU-Net's preprocessed cases in {where}"
        calib = draw_patches(images, labels, patch, options.calib_patches, seed=0)
        check = draw_patches(images, labels, patch, options.calib_patches, seed=1)
    else:
        rng = np.random.default_rng(0)
        calib = rng.standard_normal((options.calib_patches, channels, *patch)).astype(np.float32)
        check = rng.standard_normal((options.calib_patches, channels, *patch)).astype(np.float32)
        source = (
            "standard-normal patches (fallback: no --calib-data, and the result folder's "
            "dataset is not under $nnUNet_raw or $nnUNet_preprocessed)"
        )
    log(f"patches: {len(calib)} calibration + {len(check)} check, {patch}, from {source}")
    spec = InputSpec(
        "image",
        channels,
        DimRange(1, 1, options.max_batch),
        DimRange(patch[-2], patch[-2], patch[-2]),
        DimRange(patch[-1], patch[-1], patch[-1]),
    )
    metadata = {
        "source": "nnunet",
        "configuration": result.configuration,
        "patch_size": patch,
        "classes": list(result.labels),
    }
    report: dict[str, Any] = {
        "patch_size": patch,
        "patches": source,
        "num_patches": len(check),
        "folds": {},
    }
    network = build_network(result).eval()
    with atomic_dir(out, scratch=True) as tmp:
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json", IMPORT_FILE):
            (tmp / name).write_bytes((Path(run) / name).read_bytes())
        for fold in result.folds:
            folder = tmp / f"fold_{fold}"
            folder.mkdir()
            network.load_state_dict(weights[fold])
            t0 = time.perf_counter()
            fp32 = export_onnx(
                network, folder / "model.onnx", spec, {**metadata, "fold": fold}, patch=patch
            )
            with torch.no_grad():
                ref = np.concatenate(
                    [
                        network(torch.from_numpy(check[i : i + 2])).numpy()
                        for i in range(0, len(check), 2)
                    ]
                )
            got = run_onnx(fp32, check, batch_size=options.max_batch)
            parity = fp32_parity(ref, got)
            if not parity["passed"]:
                raise ExportError(
                    f"fold {fold}: FP32 ONNX differs from PyTorch beyond |d| <= "
                    f"{PARITY_ATOL:g} + {PARITY_RTOL:g}*|logit| (worst ratio "
                    f"{parity['max_tolerance_ratio']:.2f}, max |diff| "
                    f"{parity['max_abs_diff']:.2e} at logits up to {parity['logit_range']:.1f}), "
                    f"argmax agreement {parity['argmax_agreement']:.5f} (>= {PARITY_MIN_ARGMAX}) "
                    f"or max |softmax diff| {parity['max_softmax_diff']:.1e} "
                    f"(<= {PARITY_MAX_SOFTMAX_DIFF:g}); refusing the bundle"
                )
            entries: dict[str, Any] = {"fp32": {"file": "model.onnx", "vs_pytorch": parity}}
            log(
                f"fold {fold}: FP32 ONNX vs PyTorch max |diff| {parity['max_abs_diff']:.1e} "
                f"(logits up to {parity['logit_range']:.1f}; tolerance ratio "
                f"{parity['max_tolerance_ratio']:.2f}), argmax {parity['argmax_agreement']:.5f}, "
                f"softmax {parity['max_softmax_diff']:.1e} ({time.perf_counter() - t0:.1f} s)"
            )
            if options.fp16:
                f16 = convert_fp16(
                    fp32,
                    folder / "model.fp16.onnx",
                    (*FP16_KEEP_FP32_OP_TYPES, *NORM_OP_TYPES),
                    reference_inputs=calib,
                )
                guard = _agreement(got, run_onnx(f16.output, check, options.max_batch))
                if not guard["finite"] or guard["argmax_agreement"] < FP16_MIN_AGREEMENT:
                    raise ExportError(
                        f"fold {fold}: FP16 file fails the export guard against FP32 "
                        f"(finite {guard['finite']}, argmax agreement "
                        f"{guard['argmax_agreement']:.4f} < {FP16_MIN_AGREEMENT})"
                    )
                entries["fp16"] = {
                    "file": "model.fp16.onnx",
                    "vs_fp32": guard,
                    "fp32_nodes": len(f16.fp32_nodes),
                    "fp16_nodes": f16.fp16_nodes,
                }
                log(f"fold {fold}: FP16 vs FP32 {_line(guard)}")
            if options.int8:
                i8 = quantize_int8(fp32, folder / "model.int8.onnx", calib, Int8Config())
                guard = _agreement(got, run_onnx(i8.output, check, options.max_batch))
                entries["int8"] = {"file": "model.int8.onnx", "vs_fp32": guard, **i8.to_manifest()}
                log(f"fold {fold}: INT8 vs FP32 {_line(guard)}")
            for entry in entries.values():
                path = folder / entry["file"]
                entry["sha256"] = file_sha256(path)
                entry["size_bytes"] = path.stat().st_size
            report["folds"][fold] = entries
        report["source"] = record["source"]
        report["seconds"] = round(time.perf_counter() - started, 1)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        _manifest(record, report, options, source).save(tmp)
    return report


def _manifest(
    record: dict[str, Any], report: dict[str, Any], options: NnunetExportOptions, source: str
) -> Any:
    """The bundle's ``medseg.json`` (schema 3: fold ensemble, nnU-Net recipe)."""
    import datetime as dt

    from medseg.bundle.entries import (
        NNUNET_SCHEMA_VERSION,
        ONNX_FILES,
        DimRange,
        FoldFile,
        InputSpec,
        PrecisionEntry,
        ensemble_sha256,
        fold_dir,
    )
    from medseg.bundle.manifest import Manifest
    from medseg.export.options import tool_versions
    from medseg.transforms.nnunet_recipe import NnunetRecipe

    recipe = NnunetRecipe.from_dict(record["preprocessing"])
    folds = report["folds"]
    spec = InputSpec.static_patch(
        "image", recipe.num_input_channels, DimRange(1, 1, options.max_batch), recipe.patch_size
    )
    precisions = {}
    for precision in PRECISIONS:
        if precision not in next(iter(folds.values())):
            continue
        files = {
            f: FoldFile(
                f"{fold_dir(f)}/{ONNX_FILES[precision]}",
                e[precision]["sha256"],
                e[precision]["size_bytes"],
            )
            for f, e in folds.items()
        }
        checks = [
            e[precision]["vs_pytorch" if precision == "fp32" else "vs_fp32"] for e in folds.values()
        ]
        parity = {  # the worst fold
            "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "argmax_agreement": min(c["argmax_agreement"] for c in checks),
        }
        details = {
            f: {k: v for k, v in e[precision].items() if k not in ("file", "sha256", "size_bytes")}
            for f, e in folds.items()
        }
        precisions[precision] = PrecisionEntry(
            file=ONNX_FILES[precision],
            sha256=ensemble_sha256({f: item.sha256 for f, item in files.items()}),
            size_bytes=sum(item.size_bytes for item in files.values()),
            parity=parity,
            details={
                "reference": "PyTorch" if precision == "fp32" else "FP32 ONNX",
                "patches": source,
                "folds": details,
            },
            folds=files,
        )
    src = record["source"]
    return Manifest(
        model={
            "arch": "nnunet",
            "name": f"{src.get('dataset_name')}-{recipe.configuration}",
            "configuration": recipe.configuration,
            "network_class_name": src.get("network_class_name"),
        },
        classes=dict(recipe.labels),
        input=spec,
        output_name="logits",
        preprocessing=recipe,
        precisions=precisions,
        calibration={"patches": source, "num_patches": report["num_patches"]}
        if options.int8
        else None,
        source=src,
        tool_versions=tool_versions(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        schema_version=NNUNET_SCHEMA_VERSION,
        orientation="RAS" if recipe.image_reader == "NibabelIOWithReorient" else None,
        folds=tuple(folds),
    )


def _line(guard: dict[str, float]) -> str:
    return (
        f"argmax {guard['argmax_agreement']:.4f}, Dice {guard['dice_vs_fp32']:.4f}, "
        f"max |diff| {guard['max_abs_diff']:.2e}"
    )
