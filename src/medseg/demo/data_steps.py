"""The demo's data steps: write the embedded MNI152 dataset, check it, preview its labels,
slice and preprocess it with the deterministic split, and score a classical intensity
baseline (three-class Otsu thresholds inside the brain) with the metrics a trained model is
scored with: the floor a learned model has to beat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.slicing import make_split
from medseg.transforms.preprocessing import Recipe, bring_to_size, normalize_volume, restore_size

__all__ = [
    "DEMO_MODEL_DIR",
    "DEMO_RECIPE",
    "DemoData",
    "DemoStep",
    "multi_otsu_thresholds",
    "prepare_data",
]

#: The committed demo model (a ``medseg train`` run directory), relative to the repository.
DEMO_MODEL_DIR = Path("models/mni152-tissue")

#: The preprocessing recipe of the MNI152 demo: MR normalisation, axial slices, padding.
DEMO_RECIPE = Recipe(modality="MR", slice_axis=2, size_policy="pad")


@dataclass(frozen=True)
class DemoStep:
    """One line of the demo's account: what ran, what it produced, how long it took."""

    name: str
    status: str  # "done", "skipped" (with the reason in detail) or "not found"
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


@dataclass(frozen=True)
class DemoData:
    """What the data steps produced.

    Attributes:
        dataset_dir: the MNI152 dataset in nnU-Net layout.
        split: the deterministic slice-level split (kind and description).
        baseline_metrics: the Otsu baseline's validation-slice metrics (``to_dict`` form).
        thresholds: the two Otsu thresholds.
    """

    dataset_dir: Path
    split: dict[str, Any]
    baseline_metrics: dict[str, Any]
    thresholds: tuple[float, float]


def prepare_data(out_dir: Path, done: Callable[[DemoStep], None]) -> DemoData:
    """Write, check, preview, slice and baseline the MNI152 brain into ``out_dir``."""
    from medseg.data.check import check_dataset
    from medseg.data.mni152 import write_mni152
    from medseg.data.nnunet import NnUNetDataset
    from medseg.metrics import compute_case_metrics
    from medseg.viz.overlay import save_overlay_png

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
    kept = {k: v for k, v in split.to_dict().items() if k in ("kind", "description")}
    return DemoData(dataset_dir, kept, metrics, (lo, hi))
