"""OpenVINO INT8 three ways on a window bundle: NNCF's accuracy-controlled quantisation
(``nncf.quantize_with_accuracy_control``, Intel's recommended way) against the bundle's two
INT8 files (modelopt's TensorRT-form Q/DQ file, ONNX Runtime's CPU file), on OpenVINO.

NNCF quantises the FP32 file on the bundle's calibration windows and validates with the
export's own metric: Dice pooled over the bundle's validation slices through the runtime's
sliding window (``max_drop`` = the export's default budget, 0.3 pt, absolute on Dice in
[0, 1]); layers whose quantisation costs Dice are reverted to FP32 until it holds. Its
``overflow_fix`` is on for every layer (7-bit weights: the fix for CPUs without VNNI, whose
u8 x s8 sums saturate; ``--overflow-fix first_layer_only`` is NNCF's default). Then every
variant is scored (Dice drop vs OpenVINO FP32, worst class) and timed (ms per slice, batch
8, median of ``--rounds``, interleaved) on this machine; the rows name the CPU class.

    PYTHONPATH=src python benchmarks/openvino_int8_nncf.py models/mni152-tissue/bundle \\
        demo-output/ci-mni152 --out benchmarks/results/openvino-int8-nncf
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bench.machine import describe_machine
from medseg.bundle import Manifest
from medseg.data.nnunet import NnUNetDataset
from medseg.export.accuracy import Accuracy, scored
from medseg.export.guard import DEFAULT_BUDGET
from medseg.export.windowed import _validation_cases
from medseg.metrics import DiceAccumulator
from medseg.runtime.cpu import cpu_features
from medseg.runtime.volume import segment_windowed


def _predictor(compiled: Any) -> Any:
    request = compiled.create_infer_request()
    return lambda batch: np.array(request.infer({0: batch})[0], dtype=np.float32)


def _labels(predict: Any, cases: list[Any], recipe: Any, k: int) -> list[tuple[Any, Any]]:
    """(predicted, reference) validation voxels per validation slice."""
    out = []
    for case in cases:
        axis = recipe.slice_axis
        picks = np.flatnonzero(case.mask.any(axis=tuple(a for a in range(3) if a != axis)))
        labels = segment_windowed(
            case.image, case.spacing, recipe, predict, 8, k, slices=picks.tolist()
        ).labels
        for z in picks:
            out.append((np.take(labels, z, axis=axis), np.take(case.label, z, axis=axis)))
    return out


def _accuracy(pairs: list[Any], classes: dict[str, int], ref: Accuracy | None) -> Accuracy:
    acc = DiceAccumulator(classes, empty="nan")
    for pred, lab in pairs:
        acc.update(pred.reshape(1, -1), lab.reshape(1, -1))
    flat = np.concatenate([p.ravel() for p, _ in pairs]).astype(np.uint8)
    return scored(acc.pooled_dice(), flat, ref)


def _per_slice(pairs: list[Any], classes: dict[str, int]) -> list[float]:
    values = []
    for pred, lab in pairs:
        acc = DiceAccumulator(classes, empty="nan")
        acc.update(pred.reshape(1, -1), lab.reshape(1, -1))
        mean = acc.mean()
        values.append(1.0 if np.isnan(mean) else float(mean))
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("dataset", type=Path, help="medseg data mni152 output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--overflow-fix", default="enable", help="enable | first_layer_only | disable"
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long check: 8 slices")
    args = parser.parse_args(argv)
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    manifest = Manifest.load(args.bundle)
    recipe = manifest.medseg_recipe("the NNCF benchmark")
    ids = manifest.source["validation"]["slice_ids"]
    if args.quick:
        ids, args.rounds = ids[len(ids) // 2 :][:8], 1
    split = {"kind": "slice-level", "val": sorted({i.rpartition(":")[0] for i in ids})}
    split["val_slices"] = ids
    cases, _ = _validation_cases(NnUNetDataset.open(args.dataset), split, recipe)
    classes = {k: v for k, v in manifest.classes.items() if v > 0}
    k = len(classes) + 1
    with np.load(args.bundle / "calibration.npz") as npz:
        calib = np.asarray(npz["images"], dtype=np.float32)
    if args.quick:
        calib = calib[:8]
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"}
    fp32_model = core.read_model(str(args.bundle / "model.onnx"))
    reference = _accuracy(
        _labels(_predictor(core.compile_model(fp32_model, "CPU", config)), cases, recipe, k),
        classes,
        None,
    )

    def validate(compiled: Any, _: Any) -> tuple[float, list[float]]:
        pairs = _labels(_predictor(compiled), cases, recipe, k)
        return _accuracy(pairs, classes, None).dice_mean, _per_slice(pairs, classes)

    t = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        fp32_model,
        nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
        nncf.Dataset(list(range(len(ids)))),
        validate,
        max_drop=(DEFAULT_BUDGET.mean_pts or 0.3) / 100.0,
        subset_size=len(calib),
        advanced_quantization_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix(args.overflow_fix)
        ),
    )
    nncf_s = time.perf_counter() - t
    args.out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(args.out / "model.int8.nncf.xml"))
    variants: dict[str, Any] = {
        "fp32 (model.onnx)": fp32_model,
        "int8 modelopt Q/DQ (model.int8.onnx)": core.read_model(
            str(args.bundle / "model.int8.onnx")
        ),
        "int8 ORT CPU file (model.int8.cpu.onnx)": core.read_model(
            str(args.bundle / "model.int8.cpu.onnx")
        ),
        "int8 NNCF accuracy control (model.int8.nncf.xml)": quantized,
    }
    compiled = {name: core.compile_model(m, "CPU", config) for name, m in variants.items()}
    batch = np.ascontiguousarray(calib[len(calib) // 2 :][:8])
    times: dict[str, list[float]] = {name: [] for name in compiled}
    predictors = {name: _predictor(c) for name, c in compiled.items()}
    for predict in predictors.values():
        predict(batch)
    for _ in range(args.rounds):
        for name, predict in predictors.items():
            t0 = time.perf_counter()
            predict(batch)
            times[name].append(1e3 * (time.perf_counter() - t0) / len(batch))
    rows = []
    for name, predict in predictors.items():
        acc = _accuracy(_labels(predict, cases, recipe, k), classes, reference)
        rows.append(
            {
                "variant": name,
                "backend": "openvino",
                "cpu_class": cpu_features().cpu_class,
                "dice_mean": round(acc.dice_mean, 4),
                "dice_drop_pts": round(acc.dice_drop_pts, 3),
                "worst_class_drop_pts": round(acc.worst_class_drop_pts, 3),
                "within_budget": DEFAULT_BUDGET.met(acc),
                "ms_per_slice_median": round(float(np.median(times[name])), 1),
            }
        )
    result = {
        "bundle": str(args.bundle),
        "validation_slices": len(ids),
        "nncf_seconds": round(nncf_s, 1),
        "overflow_fix": args.overflow_fix,
        "budget": DEFAULT_BUDGET.to_dict(),
        "machine": describe_machine(),
        "load_1min": [load_start, os.getloadavg()[0]],
        "quick": args.quick,
        "rows": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# OpenVINO INT8: NNCF accuracy control vs modelopt Q/DQ vs ONNX Runtime's CPU file "
        f"(class {cpu_features().cpu_class}, {len(ids)} validation slices, batch 8, "
        f"{args.threads} threads, load {load_start:.1f})",
        "",
        "| variant | Dice | drop (pts) | worst class (pts) | within 0.3/1 pt | ms/slice |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {r['dice_mean']:.4f} | {r['dice_drop_pts']:+.3f} | "
            f"{r['worst_class_drop_pts']:+.3f} | {'yes' if r['within_budget'] else 'no'} | "
            f"{r['ms_per_slice_median']:.1f} |"
            for r in rows
        ),
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
