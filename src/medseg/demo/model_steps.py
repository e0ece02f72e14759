"""The demo's model steps: retrain the demo model (``--train``), score it against the
intensity baseline on the validation slices, and export it to an FP32/FP16/INT8 bundle."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.demo.data_steps import DemoStep
from medseg.transforms.preprocessing import restore_size

__all__ = ["evaluate_demo_model", "export_demo_bundle", "train_demo_model"]


def train_demo_model(
    dataset_dir: Path,
    run_dir: Path,
    template: Path,
    done: Callable[[DemoStep], None],
    epochs: int | None = None,
) -> Path:
    """Retrain the demo model with the committed run's options (``template/config.json``).

    Args:
        dataset_dir: the MNI152 dataset.
        run_dir: the new run directory (replaced).
        template: the committed demo run whose training options are reused.
        epochs: override the number of epochs (the committed model used 50).
    """
    from dataclasses import replace

    from medseg.train import TrainConfig, train

    t = time.perf_counter()
    config = TrainConfig.from_dict(json.loads((template / "config.json").read_text())["train"])
    if epochs is not None:
        config = replace(config, epochs=epochs)
    result = train(dataset_dir, run_dir, config, force=True)
    done(
        DemoStep(
            "train",
            "done",
            f"{config.arch} ({config.variant}), {config.epochs} epochs; best validation Dice "
            f"{result.best_mean_dice:.3f}",
            time.perf_counter() - t,
            str(run_dir),
        )
    )
    return run_dir


def evaluate_demo_model(
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
    from medseg.metrics.slices import validation_dice
    from medseg.train import load_checkpoint
    from medseg.train.config import TrainConfig
    from medseg.train.slices import predict_slice_labels
    from medseg.viz.overlay import save_prediction_png

    t = time.perf_counter()
    checkpoint = load_checkpoint(model_dir)
    run = json.loads((model_dir / "config.json").read_text())
    config = TrainConfig.from_dict(run["train"])
    axis = 2 if config.slice_axis is None else config.slice_axis  # whole-slice run record
    data = load_training_data(dataset_dir, axis, config.val_fraction, config.seed)
    if [str(r) for r in data.val.refs] != run["split"]["val_slices"]:
        raise RuntimeError(f"{model_dir} was validated on other slices than this dataset gives")
    predicted = predict_slice_labels(checkpoint.model, data.val.images, torch.device("cpu"))
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


def export_demo_bundle(
    model_dir: Path, dataset_dir: Path, bundle: Path, done: Callable[[DemoStep], None]
) -> dict[str, Any]:
    """Export the demo model to FP32/FP16/INT8 and report each precision's Dice drop.

    The export goes through the sliding-window path (:mod:`medseg.demo.window_bundle`), as
    the committed bundle does; a run that already has a window recipe is exported as is.
    """
    from medseg.demo.window_bundle import export_window_bundle
    from medseg.export import ExportOptions, export_bundle
    from medseg.transforms.preprocessing import Recipe

    t = time.perf_counter()
    recipe = json.loads((model_dir / "config.json").read_text()).get("recipe") or {}
    if Recipe.from_dict(recipe).pipeline_kind == "window":
        options = ExportOptions(fp16=True, int8=True, calib_data=dataset_dir)
        manifest = export_bundle(model_dir, bundle, options, lambda line: None, force=True)
    else:
        manifest = export_window_bundle(model_dir, dataset_dir, bundle, lambda _: None, force=True)
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
