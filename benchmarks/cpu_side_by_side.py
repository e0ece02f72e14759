"""CPU backends side by side on the demo bundle: ms per slice, interleaved, medians and ratios.

Every (backend, precision) is loaded once; then ``--rounds`` rounds each time one batch of
real slices through every variant in turn, so load drift on a shared machine hits all of
them alike (``medseg bench`` times variants one after another). Reported per variant: the
median ms per slice, the ratio to PyTorch eager FP32 and to the same backend's FP32, the
Dice drop the bundle's manifest records for that backend (``backend_accuracy``, else the
one measured here on the cases), and the whole-volume end-to-end seconds of one brain
through :class:`medseg.runtime.Segmenter` (median of ``--volume-runs``), and the share of
this CPU's FP32 peak each variant reaches (:mod:`medseg.bench.roofline`).

The network inputs are real: windows of the bundle's ``calibration.npz`` (network-size
patches of the training cases) for a window bundle, preprocessed slices otherwise.
``--quick`` (CI, seconds): ONNX Runtime FP32 and INT8 only, batch 1, one round, the volume
cut to 4 slices, written to ``--out`` like a full run.

    PYTHONPATH=src python benchmarks/cpu_side_by_side.py models/mni152-tissue/bundle \\
        demo-output/ci-mni152 --out benchmarks/results/cpu-side-by-side --threads 2
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
from medseg.bench.roofline import cpu_fp32_peak, onnx_gflop_per_slice, share_of_peak
from medseg.bench.torch_reference import TorchBackend, find_checkpoint
from medseg.bundle import Manifest
from medseg.data.nifti import load_nifti
from medseg.runtime import Backend, Segmenter, create_backend
from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend
from medseg.runtime.backends.openvino import OpenVinoBackend
from medseg.runtime.cpu import cpu_features

VARIANTS = (
    ("torch", "fp32"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("onnxruntime", "int8-trt"),
    ("openvino", "int8-trt"),
)
#: ``int8`` is what the runtime runs (``model.int8.cpu.onnx`` when the bundle has it);
#: ``int8-trt`` forces the TensorRT-form Q/DQ file ``model.int8.onnx`` for comparison.
TRT_FORM = "int8-trt"


def _backend(bundle: Path, manifest: Manifest, name: str, precision: str, threads: int) -> Backend:
    if name == "torch":
        return TorchBackend(find_checkpoint(bundle, manifest), manifest, precision, "cpu", threads)
    if precision == TRT_FORM:
        path = manifest.onnx_path(bundle, "int8")
        spec = (manifest.input, manifest.output_name, manifest.num_classes)
        if name == "openvino":
            return OpenVinoBackend(path, *spec, precision="int8", threads=threads)
        return OnnxRuntimeBackend(path, *spec, providers=["cpu"], threads=threads)
    return create_backend(bundle, manifest, name, precision, threads=threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("dataset", type=Path, help="medseg data mni152 output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", default="1,8", help="comma list; the volume uses the last")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--volume-runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="seconds-long check (CI)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]

    manifest = Manifest.load(args.bundle)
    image_path = next(iter(sorted((args.dataset / "imagesTr").glob("*.nii.gz"))))
    scan = load_nifti(image_path)
    image, affine = scan.data, scan.affine
    variants = [v for v in VARIANTS if v[1] != "bf16" or cpu_features().bf16]
    if args.quick:
        variants = [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
        args.batch, args.rounds, args.volume_runs = "1", 1, 1
        axis = getattr(manifest.preprocessing, "slice_axis", 2)
        image = np.take(image, range(image.shape[axis] // 2, image.shape[axis] // 2 + 4), axis)
    opened = {v: _backend(args.bundle, manifest, *v, args.threads).load() for v in variants}
    probe = Segmenter(opened[("onnxruntime", "fp32")], manifest, "fp32")
    slices = probe.preprocess(image[None])
    middle = len(slices) // 2
    sizes = [int(b) for b in str(args.batch).split(",")]
    times: dict[tuple[str, str, int], list[float]] = {}
    for size in sizes:
        batch = np.ascontiguousarray(slices[middle - size // 2 :][:size])
        for variant, backend in opened.items():
            backend.infer(batch)  # warm-up
            times[(*variant, size)] = []
        for _ in range(args.rounds):
            for variant, backend in opened.items():
                start = time.perf_counter()
                backend.infer(batch)
                times[(*variant, size)].append(1e3 * (time.perf_counter() - start) / len(batch))
    volume_s: dict[tuple[str, str], float] = {}
    for variant, backend in opened.items():
        if variant[0] == "torch":
            continue
        runs = []
        for _ in range(args.volume_runs):
            start = time.perf_counter()
            precision = "int8" if variant[1] == TRT_FORM else variant[1]
            Segmenter(backend, manifest, precision, sizes[-1]).segment(image, affine=affine)
            runs.append(time.perf_counter() - start)
        volume_s[variant] = float(np.median(runs))
    for backend in opened.values():
        backend.close()

    gflop = onnx_gflop_per_slice(manifest.onnx_path(args.bundle, "fp32"))
    peak = cpu_fp32_peak(args.threads)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        torch_times = times.get(("torch", "fp32", size))
        torch_ms = float(np.median(torch_times)) if torch_times else None
        for backend_name, precision in variants:
            ms = float(np.median(times[(backend_name, precision, size)]))
            fp32_ms = float(np.median(times[(backend_name, "fp32", size)]))
            recorded = manifest.backend_accuracy.get(backend_name, {}).get(precision)
            if recorded is None and backend_name == "onnxruntime" and precision != TRT_FORM:
                recorded = manifest.precisions[precision].accuracy or None
            if recorded is None and (backend_name, precision) == ("onnxruntime", TRT_FORM):
                recorded = manifest.precisions["int8"].accuracy
            rows.append(
                {
                    "backend": backend_name,
                    "precision": precision,
                    "file": str(
                        getattr(
                            getattr(opened[(backend_name, precision)], "loader", None), "path", ""
                        )
                    )
                    or None,
                    "batch": size,
                    "ms_per_slice_median": round(ms, 2),
                    "ms_per_slice_all": [
                        round(t, 2) for t in times[(backend_name, precision, size)]
                    ],
                    "speedup_vs_torch_fp32": None if torch_ms is None else round(torch_ms / ms, 2),
                    "fp32_peak_pct": share_of_peak(gflop, 1e3 / ms, peak["gflops"]),
                    "ratio_to_backend_fp32": round(ms / fp32_ms, 2),
                    "dice_drop_pts_recorded": None
                    if recorded is None
                    else recorded["dice_drop_pts"],
                    "cpu_class": None if recorded is None else recorded.get("cpu_class"),
                    "volume_s_median": volume_s.get((backend_name, precision))
                    if size == sizes[-1]
                    else None,
                }
            )
    result = {
        "bundle": str(args.bundle),
        "image": image_path.name,
        "slices_per_volume": int(image.shape[getattr(manifest.preprocessing, "slice_axis", 2)]),
        "batches": sizes,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": describe_machine(),
        "gflop_per_slice": round(gflop, 3),
        "fp32_peak": peak,
        "quick": args.quick,
        "load_1min_at_start": load_start,
        "load_1min_at_end": os.getloadavg()[0],
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# CPU side by side: {manifest.model.get('name')} ({result['slices_per_volume']} "
        "slices/volume, "
        f"batches {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds)",
        "",
        f"Machine: {result['machine']['cpu']}, CPU features {result['machine']['cpu_features']}, "
        f"load (1 min) {load_start:.2f} at start, "
        f"{result['load_1min_at_end']:.2f} at end. Roofline: {gflop:.2f} GFLOP per slice "
        f"(FP32 ONNX graph); peak {peak['how']}.",
        "",
        "| backend | precision | file | batch | ms/slice (median) | x vs torch fp32 | / own fp32 | "
        "% FP32 peak | Dice drop (pts, recorded) | CPU class | volume s (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        drop = row["dice_drop_pts_recorded"]
        vol = row["volume_s_median"]
        speed, pct = row["speedup_vs_torch_fp32"], row["fp32_peak_pct"]
        lines.append(
            f"| {row['backend']} | {row['precision']} | {Path(row['file'] or '-').name} | "
            f"{row['batch']} | {row['ms_per_slice_median']:.1f} | "
            f"{'—' if speed is None else f'{speed:.2f}'} | {row['ratio_to_backend_fp32']:.2f} | "
            f"{'—' if pct is None else f'{pct:.1f}'} | "
            f"{'—' if drop is None else f'{drop:+.3f}'} | {row['cpu_class'] or '—'} | "
            f"{'—' if vol is None else f'{vol:.2f}'} |"
        )
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
