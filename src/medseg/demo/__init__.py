"""The end-to-end demo (``medseg demo`` / ``make demo``) on the embedded MNI152 brain.

Every pipeline step on real data: the dataset (write, check, preview, slice, an intensity
baseline), the model (optionally retrained with ``--train``, scored against the baseline),
the export to FP32/FP16/INT8, TensorRT engines when this machine has TensorRT and a GPU,
whole-brain inference with the runtime, and the bench with the project's CI gates into a
report folder (table, JSON, Markdown, JUnit, accuracy-versus-latency plot, overlays).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file, check_parent_exists
from medseg.demo.data_steps import (
    DEMO_MODEL_DIR,
    DEMO_RECIPE,
    DemoData,
    DemoStep,
    multi_otsu_thresholds,
    prepare_data,
)
from medseg.errors import ConfigError
from medseg.outputs import write_marker

__all__ = [
    "DEMO_MODEL_DIR",
    "DEMO_RECIPE",
    "DemoData",
    "DemoStep",
    "multi_otsu_thresholds",
    "run_demo",
]


def run_demo(
    out_dir: Path,
    log: Callable[[DemoStep], None],
    model_dir: Path = DEMO_MODEL_DIR,
    export: bool = True,
    train: bool = False,
    epochs: int | None = None,
    bench: bool = True,
) -> dict[str, Any]:
    """Run the pipeline on the MNI152 brain into ``out_dir``.

    Args:
        out_dir: folder for every output and ``demo_summary.json`` (its parent must exist).
        log: called with each :class:`DemoStep` as it completes (the CLI prints it).
        model_dir: run directory of the trained demo model (``medseg train`` output).
        export: export the model to ``out_dir/bundle`` and run the scanner-side steps.
        train: retrain the model first into ``out_dir/model`` with ``model_dir``'s options.
        epochs: with ``train``, override the number of epochs.
        bench: benchmark the bundle with the CI gates into ``out_dir/report``.

    Returns:
        The summary that is also written to ``out_dir/demo_summary.json``.
    """
    from medseg.demo.deploy_steps import bench_demo_bundle, build_demo_engines, infer_demo_volume
    from medseg.demo.model_steps import evaluate_demo_model, export_demo_bundle, train_demo_model

    check_parent_exists(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; expected a folder for the demo's outputs")
    needed = ("config.json",) if train else ("config.json", "model.pt")
    missing = [name for name in needed if not (model_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"--model {model_dir} ({model_dir.resolve()}) has no {', '.join(missing)}: no "
            "trained demo model there; run medseg demo from the repository root, or pass "
            "--model <repository>/models/mni152-tissue"
        )
    out_dir.mkdir(exist_ok=True)
    write_marker(out_dir, "demo", "medseg demo")
    steps: list[DemoStep] = []

    def done(step: DemoStep) -> None:
        steps.append(step)
        log(step)

    data = prepare_data(out_dir, done)
    if train:
        model_dir = train_demo_model(data.dataset_dir, out_dir / "model", model_dir, done, epochs)
    model = evaluate_demo_model(model_dir, data.dataset_dir, data.baseline_metrics, out_dir, done)
    summary: dict[str, Any] = {
        "dataset": str(data.dataset_dir),
        "note": "one template brain (MNI ICBM152 2009a), not a patient cohort",
        "recipe": DEMO_RECIPE.to_dict(),
        "split": data.split,
        "intensity_baseline": {
            "thresholds": list(data.thresholds),
            "val_metrics": data.baseline_metrics,
        },
        "model": model,
        "bundle": None,
        "engines": [],
        "infer": None,
        "bench": None,
    }
    if export and model is not None:
        bundle = out_dir / "bundle"
        summary["bundle"] = export_demo_bundle(model_dir, data.dataset_dir, bundle, done)
        summary["engines"] = build_demo_engines(bundle, done)
        summary["infer"] = infer_demo_volume(bundle, data.dataset_dir, out_dir, done)
        if bench:
            summary["bench"] = bench_demo_bundle(
                bundle,
                data.dataset_dir,
                out_dir / "report",
                done,
                tensorrt=bool(summary["engines"]),
            )
    summary["steps"] = [step.__dict__ for step in steps]
    with atomic_file(out_dir / "demo_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
