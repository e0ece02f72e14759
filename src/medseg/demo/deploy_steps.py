"""The demo's scanner-side steps: build TensorRT engines (when this machine can), segment
the brain with the runtime, and benchmark the bundle with the CI gates into a report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.demo.data_steps import DemoStep

__all__ = [
    "DEMO_GATES",
    "bench_demo_bundle",
    "build_demo_engines",
    "demo_bench_options",
    "infer_demo_volume",
]

#: The gates the demo's bench applies: the project's own CI gates.
DEMO_GATES = Path("benchmarks/gates/ci-cpu.toml")


def build_demo_engines(bundle: Path, done: Callable[[DemoStep], None]) -> list[str]:
    """Compile every precision with TensorRT when TensorRT and a GPU are here; else say why."""
    from medseg.errors import MedsegError

    t = time.perf_counter()
    try:
        from medseg.runtime.cuda import gpu_available
        from medseg.runtime.engines import tensorrt_module

        tensorrt_module(builder=True)
        if not gpu_available():
            raise MedsegError("no NVIDIA GPU visible")
    except MedsegError as exc:
        reason = str(exc).split(":")[0]
        done(DemoStep("build", "skipped", f"{reason}; engines are built on the target"))
        return []
    from medseg.build import BuildOptions, build_engines

    built = build_engines(bundle, BuildOptions(), lambda _: None)
    names = [f"{b.precision} ({b.build_seconds:.0f} s)" for b in built]
    done(
        DemoStep(
            "build",
            "done",
            f"TensorRT engines: {', '.join(names)}",
            time.perf_counter() - t,
            str(bundle / "engines"),
        )
    )
    return [b.precision for b in built]


def infer_demo_volume(
    bundle: Path, dataset_dir: Path, out_dir: Path, done: Callable[[DemoStep], None]
) -> dict[str, Any]:
    """Segment the whole brain with the runtime (INT8, the fastest backend here) and draw it."""
    from medseg.data.nifti import load_nifti
    from medseg.runtime import Segmenter, load_scan, plan_outputs, write_outputs
    from medseg.viz.overlay import save_overlay_png

    t = time.perf_counter()
    scan = load_scan([dataset_dir / "imagesTr" / "MNI152_001_0000.nii.gz"])
    paths = plan_outputs(out_dir / "mni152_mask.nii.gz", scan, force=True)
    with Segmenter.from_bundle(bundle, "auto", "int8") as segmenter:
        result = segmenter.segment(scan.image, source=scan.source, affine=scan.affine)
        backend = segmenter.backend.describe()
        classes = segmenter.manifest.classes
    write_outputs(paths, scan, result.labels, classes)
    reference = np.asarray(load_nifti(dataset_dir / "labelsTr" / "MNI152_001.nii.gz").data)
    png = save_overlay_png(
        scan.image[0],
        result.labels,
        out_dir / "mni152_mask.png",
        classes,
        f"medseg infer, INT8 ({backend}): whole-brain segmentation",
    )
    volumes = {
        name: float(np.count_nonzero(result.labels == v)) * scan.voxel_volume_ml
        for name, v in classes.items()
        if v
    }
    agree = float(np.mean(result.labels == reference))
    text = ", ".join(f"{n} {ml:.0f} ml" for n, ml in volumes.items())
    done(
        DemoStep(
            "infer",
            "done",
            f"{result.num_slices} slices, {backend}, INT8: {text}; voxel agreement with the "
            f"reference {agree:.3f}; mask {paths.mask.name}",
            time.perf_counter() - t,
            str(png),
        )
    )
    return {"mask": str(paths.mask), "backend": backend, "volumes_ml": volumes}


def demo_bench_options(tensorrt: bool = False) -> Any:
    """What the demo's bench measures: a demo, not CI (``make bench-gate`` is the full one).

    Every precision of the bundle (FP32, FP16, INT8) on ONNX Runtime, on OpenVINO when
    installed (the fastest CPU backend here) and on TensorRT when the demo built engines
    (``tensorrt``), at batch 1 and 8, 1 warm-up call and 2 x 5 timed
    calls. Left out: the PyTorch reference row and OpenVINO BF16 (each one more whole-volume
    accuracy pass; ``medseg bench`` runs them by default). Each (backend, precision) costs
    one whole-brain segmentation for its accuracy, which dominates the step.
    """
    from medseg.bench.options import BenchOptions
    from medseg.runtime.backends.openvino import OpenVinoBackend

    backends = ["onnxruntime"]
    if OpenVinoBackend.available() is None:
        backends.append("openvino")
    if tensorrt:
        backends.append("tensorrt")
    return BenchOptions(
        backends=tuple(backends),
        precisions=("fp32", "fp16", "int8"),
        batches=(1, 8),
        warmup=1,
        iters=5,
        repeats=2,
    )


def bench_demo_bundle(
    bundle: Path,
    dataset_dir: Path,
    report_dir: Path,
    done: Callable[[DemoStep], None],
    tensorrt: bool = False,
) -> dict[str, Any]:
    """Accuracy versus latency of every precision with the CI gates; report into a folder
    (rows: :func:`demo_bench_options`; ``tensorrt``: engines were built for this machine)."""
    from medseg.bench.gates import GateSpec
    from medseg.bench.pipeline import bench_pipeline

    t = time.perf_counter()
    options = demo_bench_options(tensorrt)
    spec = GateSpec.from_toml(DEMO_GATES) if DEMO_GATES.is_file() else GateSpec()
    # the same pipeline as `medseg bench` (run, gates, report, exit policy)
    run = bench_pipeline(bundle, dataset_dir, options, spec, report=report_dir)
    results = run.results
    rows = [r for r in results.rows if r.ok and r.batch == 8]
    text = "; ".join(
        f"{r.backend} {r.precision} Dice {r.accuracy.dice_mean:.4f} "
        f"{r.latency.p50_ms / r.batch:.0f} ms/slice"
        for r in rows
        if r.accuracy is not None and r.latency is not None
    )
    passed = sum(1 for g in results.gates if g.passed and not g.skipped)
    done(
        DemoStep(
            "bench",
            "done",
            f"{text}; gates {passed}/{len(results.gates)} passed",
            time.perf_counter() - t,
            str(report_dir / "report.md"),
        )
    )
    return {"report": str(report_dir), "gates_passed": run.passed}
