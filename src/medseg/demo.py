"""The end-to-end demo (``medseg demo`` / ``make demo``) on the embedded MNI152 brain.

It runs every pipeline step that is built, on real data, and says which steps are not
built yet. Steps so far: write the embedded dataset, check it, preview its labels, slice
and preprocess it with the deterministic split, and score a classical intensity baseline
(three-class Otsu thresholds inside the brain) with the metrics a trained model will be
scored with: the floor a learned model has to beat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file, check_parent_exists
from medseg.data.preprocessing import Recipe, bring_to_size, normalize_volume, restore_size
from medseg.data.slicing import make_split

__all__ = ["DEMO_RECIPE", "DemoStep", "multi_otsu_thresholds", "run_demo"]

#: The committed demo model (a ``medseg train`` run directory), relative to the repository.
DEMO_MODEL_DIR = Path("models/mni152-tissue")

#: The preprocessing recipe of the MNI152 demo: MR normalisation, axial slices, padding.
DEMO_RECIPE = Recipe(modality="MR", slice_axis=2, size_policy="pad")


@dataclass(frozen=True)
class DemoStep:
    """One line of the demo's account: what ran, what it produced, how long it took."""

    name: str
    status: str  # "done" or "not built yet"
    detail: str
    seconds: float = 0.0
    path: str | None = None


def multi_otsu_thresholds(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Two thresholds splitting ``values`` into three classes with maximal between-class variance.

    Exhaustive search over histogram bin edges (Otsu 1979, multi-level form).
    """
    hist, edges = np.histogram(values, bins=bins)
    p = hist.astype(np.float64) / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    cum_w = np.concatenate([[0.0], np.cumsum(p)])
    cum_m = np.concatenate([[0.0], np.cumsum(p * centres)])
    best, best_pair = -1.0, (1, 2)
    for i in range(1, bins - 1):
        j = np.arange(i + 1, bins)
        w = np.stack([np.full(j.shape, cum_w[i]), cum_w[j] - cum_w[i], 1.0 - cum_w[j]])
        m = np.stack([np.full(j.shape, cum_m[i]), cum_m[j] - cum_m[i], cum_m[-1] - cum_m[j]])
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.nansum(np.where(w > 0, m**2 / w, 0.0), axis=0)
        k = int(np.argmax(score))
        if score[k] > best:
            best, best_pair = float(score[k]), (i, int(j[k]))
    return float(edges[best_pair[0]]), float(edges[best_pair[1]])


def run_demo(
    out_dir: Path,
    log: Callable[[DemoStep], None],
    model_dir: Path = DEMO_MODEL_DIR,
    export: bool = True,
) -> dict[str, Any]:
    """Run the built pipeline steps on the MNI152 brain into ``out_dir``.

    Args:
        out_dir: folder for the dataset, preview and ``demo_summary.json`` (replaced).
        log: called with each :class:`DemoStep` as it completes (the CLI prints it).
        model_dir: run directory of the trained demo model (``medseg train`` output).
        export: export the model to an FP32/FP16/INT8 bundle in ``out_dir/bundle``.

    Returns:
        The summary that is also written to ``out_dir/demo_summary.json``.
    """
    from medseg.data.check import check_dataset
    from medseg.data.mni152 import write_mni152
    from medseg.data.nnunet import NnUNetDataset
    from medseg.metrics import compute_case_metrics
    from medseg.viz.overlay import save_overlay_png

    check_parent_exists(out_dir)
    out_dir.mkdir(exist_ok=True)
    steps: list[DemoStep] = []

    def done(step: DemoStep) -> None:
        steps.append(step)
        log(step)

    t = time.perf_counter()
    dataset_dir = write_mni152(out_dir / "mni152", force=True)
    done(
        DemoStep(
            "data mni152",
            "done",
            "embedded MNI152 brain in nnU-Net layout",
            time.perf_counter() - t,
            str(dataset_dir),
        )
    )

    t = time.perf_counter()
    report = check_dataset(dataset_dir)
    labels = ", ".join(f"{k}={v}" for k, v in report.to_dict()["labels"].items())
    done(DemoStep("data check", "done", f"no problems; labels {labels}", time.perf_counter() - t))

    t = time.perf_counter()
    dataset = NnUNetDataset.open(dataset_dir)
    volume = dataset.load_case(dataset.case_ids("train")[0])
    assert volume.label is not None  # the MNI152 dataset always has its label file
    preview = save_overlay_png(
        volume.image[0],
        volume.label,
        out_dir / "mni152_labels.png",
        dataset.spec.labels,
        "MNI152 2009a: CSF / GM / WM labels",
    )
    done(
        DemoStep(
            "data preview",
            "done",
            "label overlay, three planes",
            time.perf_counter() - t,
            str(preview),
        )
    )

    t = time.perf_counter()
    recipe = DEMO_RECIPE
    axis = recipe.slice_axis
    split = make_split({volume.case_id: volume.shape[axis]}, axis=axis)
    normalised = normalize_volume(volume.image, recipe)
    sizes = set()
    for index in range(volume.shape[axis]):
        image = np.take(normalised, index, axis=axis + 1)
        net_input, _, geometry = bring_to_size(image, recipe)
        if not np.array_equal(restore_size(net_input, geometry), image):
            raise RuntimeError(f"padding round trip failed on slice {index}")
        sizes.add(net_input.shape)
    detail = (
        f"{len(split.train)} train / {len(split.val)} val / {len(split.excluded)} guard "
        f"slices ({split.kind}); network input {sorted(sizes)[0]}; pad undone exactly"
    )
    done(DemoStep("slice + preprocess", "done", detail, time.perf_counter() - t))

    t = time.perf_counter()
    t1 = volume.image[0]
    brain = t1 > 0
    lo, hi = multi_otsu_thresholds(t1[brain])
    baseline = np.zeros(volume.shape, dtype=np.uint8)
    baseline[brain] = 1 + (t1[brain] > lo).astype(np.uint8) + (t1[brain] > hi).astype(np.uint8)
    val_idx = np.array([r.index for r in split.val])
    classes = {k: v for k, v in dataset.spec.labels.items() if v > 0}
    metrics = compute_case_metrics(
        np.take(baseline, val_idx, axis=axis),
        np.take(volume.label, val_idx, axis=axis),
        classes,
        volume.spacing,
    ).to_dict()
    done(
        DemoStep(
            "intensity baseline",
            "done",
            f"3-class Otsu on T1 (thresholds {lo:.0f}, {hi:.0f}); validation-slice "
            f"mean Dice {metrics['mean']['dice']:.3f}",
            time.perf_counter() - t,
        )
    )

    model_summary = _evaluate_demo_model(model_dir, dataset_dir, metrics, out_dir, done)
    bundle_summary = None
    if export and model_summary is not None:
        bundle_summary = _export_demo_bundle(model_dir, dataset_dir, out_dir / "bundle", done)

    for name, issue in (("build", 5), ("infer", 5), ("bench", 6)):
        done(DemoStep(name, "not built yet", f"planned in issue {issue}"))

    summary = {
        "dataset": str(dataset_dir),
        "note": "one template brain (MNI ICBM152 2009a), not a patient cohort",
        "recipe": recipe.to_dict(),
        "split": {k: v for k, v in split.to_dict().items() if k in ("kind", "description")},
        "intensity_baseline": {"thresholds": [lo, hi], "val_metrics": metrics},
        "model": model_summary,
        "bundle": bundle_summary,
        "steps": [step.__dict__ for step in steps],
    }
    with atomic_file(out_dir / "demo_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _evaluate_demo_model(
    model_dir: Path,
    dataset_dir: Path,
    baseline: dict[str, Any],
    out_dir: Path,
    done: Callable[[DemoStep], None],
) -> dict[str, Any] | None:
    """Score the committed model on its validation slices and draw its worst slice."""
    if not (model_dir / "model.pt").is_file():
        done(
            DemoStep(
                "trained model",
                "not found",
                f"no {model_dir}/model.pt; train one with: medseg train {dataset_dir} "
                f"--out {model_dir}",
            )
        )
        return None
    import torch

    from medseg.data.samples import load_training_data
    from medseg.metrics import compute_case_metrics
    from medseg.train import load_checkpoint
    from medseg.train.config import TrainConfig
    from medseg.train.loop import predict_slices, validation_dice
    from medseg.viz.overlay import save_prediction_png

    t = time.perf_counter()
    checkpoint = load_checkpoint(model_dir)
    run = json.loads((model_dir / "config.json").read_text())
    config = TrainConfig.from_dict(run["train"])
    data = load_training_data(dataset_dir, config.slice_axis, config.val_fraction, config.seed)
    if [str(r) for r in data.val.refs] != run["split"]["val_slices"]:
        raise RuntimeError(f"{model_dir} was validated on other slices than this dataset gives")
    predicted = predict_slices(checkpoint.model, data.val.images, torch.device("cpu"))
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    dice = validation_dice(predicted, data.val, classes)
    mean = float(np.mean(list(dice.values())))
    per_slice = [
        compute_case_metrics(p, r, classes, (1.0, 1.0), include_surface=False).mean["dice"]
        for p, r in zip(predicted, data.val.labels, strict=True)
    ]
    worst = int(np.argmin(per_slice))
    geometry = data.val.geometries[worst]
    png = save_prediction_png(
        restore_size(data.val.images[worst, 0], geometry),
        restore_size(data.val.labels[worst], geometry, is_label=True),
        restore_size(predicted[worst], geometry, is_label=True),
        out_dir / "demo_model_worst_slice.png",
        data.spec.labels,
        f"{checkpoint.record['arch']} on {data.val.refs[worst]} (worst validation slice, "
        f"Dice {per_slice[worst]:.3f})",
    )
    text = ", ".join(f"{k} {v:.3f}" for k, v in dice.items())
    done(
        DemoStep(
            "trained model",
            "done",
            f"{checkpoint.record['arch']} from {model_dir}: validation Dice {text} (mean "
            f"{mean:.3f}; Otsu baseline {baseline['mean']['dice']:.3f}); worst slice drawn",
            time.perf_counter() - t,
            str(png),
        )
    )
    return {
        "path": str(model_dir),
        "arch": checkpoint.record["arch"],
        "val_dice": dice,
        "val_mean_dice": mean,
        "worst_slice": str(data.val.refs[worst]),
    }


def _export_demo_bundle(
    model_dir: Path, dataset_dir: Path, bundle: Path, done: Callable[[DemoStep], None]
) -> dict[str, Any]:
    """Export the demo model to FP32/FP16/INT8 and report each precision's Dice drop."""
    from medseg.export import ExportOptions, export_bundle

    t = time.perf_counter()
    options = ExportOptions(fp16=True, int8=True, calib_data=dataset_dir)
    manifest = export_bundle(model_dir, bundle, options, lambda line: None, force=True)
    drops = {p: e.accuracy["dice_drop_pts"] for p, e in manifest.precisions.items()}
    text = ", ".join(
        f"{p} {e.accuracy['dice_mean']:.4f} ({e.accuracy['dice_drop_pts']:+.3f} pts)"
        for p, e in manifest.precisions.items()
    )
    done(
        DemoStep(
            "export",
            "done",
            f"ONNX bundle, validation Dice {text}",
            time.perf_counter() - t,
            str(bundle),
        )
    )
    return {"path": str(bundle), "dice_drop_pts": drops}
