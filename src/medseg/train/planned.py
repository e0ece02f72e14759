"""Training data of a planned run: fold split, prepared cases, patch loader, validation.

The plan (``plans.json``, or made on the fly) fixes the geometry; the cases are reoriented,
resampled and normalised like the runtime does (:mod:`medseg.plan.cases`); training
draws random patches (:mod:`medseg.train.patches`); validation runs every whole validation
slice through the contract's sliding window
(:func:`medseg.runtime.sliding_window.predict_slices`, Gaussian-weighted, the plan's patch)
and scores Dice per class per case on the resampled grid, averaged over cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file
from medseg.data.samples import dataset_fingerprint
from medseg.data.slicing import make_split
from medseg.errors import ConfigError, DatasetError
from medseg.plan.cases import PreparedCase, load_prepared_cases
from medseg.plan.device import training_device
from medseg.plan.fingerprint import open_for_planning
from medseg.plan.folds import FoldSplit, default_folds, make_fold_split
from medseg.plan.planner import Plan, check_patch, check_plan_matches, plan_dataset
from medseg.train.config import TrainConfig
from medseg.train.patches import PatchSampler, PatchSource
from medseg.transforms.preprocessing import Recipe

__all__ = [
    "PLAN_NAME",
    "VALIDATION_NAME",
    "PlannedData",
    "evaluate_cases",
    "load_planned_data",
    "torch_predictor",
    "validation_subset",
    "validation_windows",
]

PLAN_NAME = "plans.json"
VALIDATION_NAME = "validation.json"


@dataclass(frozen=True)
class PlannedData:
    """What a planned training run needs from its dataset.

    Attributes:
        plan: the plan.
        recipe: the plan's ``"window"`` recipe (with the run's patch).
        config: the training options with every ``None`` resolved from the plan.
        split: the checkpoint's ``split`` record (contract E).
        train: prepared training cases (for a single case: the case itself).
        val: prepared validation cases.
        train_slices / val_slices: per case id, slice indices of each side (``None`` = all).
        spec_labels: class name -> value; fingerprint: the dataset hash; dataset: its name.
    """

    plan: Plan
    recipe: Recipe
    config: TrainConfig
    split: dict[str, Any]
    train: tuple[PreparedCase, ...]
    val: tuple[PreparedCase, ...]
    train_slices: dict[str, np.ndarray | None]
    val_slices: dict[str, np.ndarray | None]
    spec_labels: dict[str, int]
    channel_names: tuple[str, ...]
    dataset: str
    fingerprint: str

    def sampler(self) -> PatchSampler:
        """The patch sampler over the training slices."""
        sources = [
            PatchSource(c.case_id, c.slice_images(), c.slice_labels(), self.train_slices[c.case_id])
            for c in self.train
        ]
        assert self.config.patch_size is not None  # resolved in load_planned_data
        return PatchSampler(
            sources, self.config.patch_size, self.config.foreground_fraction, self.config.seed
        )


def _resolve(config: TrainConfig, plan: Plan) -> TrainConfig:
    patch = config.patch_size or plan.patch_size
    check_patch(patch, plan.max_patch if config.patch_size else (10**6, 10**6))
    if config.slice_axis is not None and config.slice_axis != plan.slice_axis:
        raise ConfigError(
            f"--slice-axis {config.slice_axis} disagrees with the plan's slice axis "
            f"{plan.slice_axis} (its target spacing and patch belong to that axis); leave it out"
        )
    return replace(
        config,
        batch_size=config.batch_size or plan.batch_size,
        slice_axis=plan.slice_axis,
        patch_size=patch,
        flip_axes=plan.mirror_axes if config.flip_axes is None else config.flip_axes,
        max_patch=plan.max_patch,
    )


def load_planned_data(
    dataset_dir: Path,
    config: TrainConfig,
    plan: Plan | None = None,
    force: bool = False,
    device: str = "cuda",
) -> PlannedData:
    """Plan (unless given), split and prepare a dataset for a planned run.

    Args:
        dataset_dir: nnU-Net raw dataset folder.
        config: training options (``None`` fields come from the plan).
        plan: a plan read from ``--plan``; ``None`` plans the dataset now.
        force: accept a plan whose dataset fingerprint differs (channels and labels must match).
        device: ``"cpu"`` or ``"cuda"``: the training device a plan made now is sized for.

    Raises:
        ConfigError: a foreign plan, a patch above the cap or not a multiple of 32, ``--fold``
            out of range, folds asked for a single-case dataset.
        DatasetError: bad files, fewer than two labels.
    """
    dataset = open_for_planning(dataset_dir)
    spec = dataset.spec
    if len(spec.labels) < 2:
        raise DatasetError(
            f"{dataset_dir}/dataset.json declares {len(spec.labels)} label(s) {dict(spec.labels)}; "
            "training needs background and at least one class"
        )
    ids = dataset.case_ids("train")
    if len(ids) == 1 and (config.fold != 0 or config.folds is not None):
        raise ConfigError(
            f"{dataset_dir} has a single training case: --fold/--folds need at least 2 cases "
            "(a single case is split by blocks of slices)"
        )
    if len(ids) >= 2:
        folds = config.folds or default_folds(len(ids))
        fold_split: FoldSplit | None = make_fold_split(ids, config.fold, folds, config.seed)
    else:
        folds, fold_split = 0, None
    fingerprint = dataset_fingerprint(dataset)
    if plan is None:
        plan = plan_dataset(dataset.root, config.max_patch, training_device(device))
    else:
        check_plan_matches(
            plan, fingerprint, spec.channel_names, dict(spec.labels), str(dataset_dir), force
        )
    resolved = _resolve(config, plan)
    if fold_split is not None:
        resolved = replace(resolved, folds=folds)
    assert resolved.patch_size is not None
    recipe = plan.recipe(resolved.patch_size)
    train_slices: dict[str, np.ndarray | None] = {}
    val_slices: dict[str, np.ndarray | None] = {}
    if fold_split is not None:
        train_ids, val_ids = fold_split.train, fold_split.val
        cases = {c.case_id: c for c in load_prepared_cases(dataset, ids, recipe)}
        train = tuple(cases[i] for i in train_ids)
        val = tuple(cases[i] for i in val_ids)
        train_slices = {i: None for i in train_ids}
        val_slices = {i: None for i in val_ids}
        split = fold_split.to_dict()
    else:
        (case,) = load_prepared_cases(dataset, ids, recipe)
        single = make_split(
            {case.case_id: case.num_slices}, plan.slice_axis, config.val_fraction, config.seed
        )
        train, val = (case,), (case,)
        train_slices = {case.case_id: np.array([r.index for r in single.train])}
        val_slices = {case.case_id: np.array([r.index for r in single.val])}
        split = {
            "kind": "slice-level",
            "fold": None,
            "folds": None,
            "seed": config.seed,
            "train": [case.case_id],
            "val": [case.case_id],
            "description": single.description,
            "train_slices": len(single.train),
            "val_slices": [str(r) for r in single.val],
        }
    return PlannedData(
        plan=plan,
        recipe=recipe,
        config=resolved,
        split=split,
        train=train,
        val=val,
        train_slices=train_slices,
        val_slices=val_slices,
        spec_labels=dict(spec.labels),
        channel_names=spec.channel_names,
        dataset=spec.name,
        fingerprint=fingerprint,
    )


def _slices_of(data: PlannedData, case: PreparedCase) -> np.ndarray:
    index = data.val_slices[case.case_id]
    return np.arange(case.num_slices) if index is None else np.asarray(index)


def _windows_per_slice(data: PlannedData, case: PreparedCase) -> int:
    from medseg.runtime.sliding_window import window_starts

    assert data.config.patch_size is not None
    h, w = case.slice_labels().shape[1:]
    overlap = getattr(data.recipe, "overlap", 0.5)
    ph, pw = data.config.patch_size
    # slices smaller than the patch are padded to it first (as predict_slices does)
    return len(window_starts(max(h, ph), ph, overlap)) * len(window_starts(max(w, pw), pw, overlap))


def validation_windows(data: PlannedData) -> int:
    """Sliding-window patches one validation pass over every validation slice runs."""
    return sum(len(_slices_of(data, c)) * _windows_per_slice(data, c) for c in data.val)


def validation_subset(data: PlannedData, max_windows: int) -> PlannedData:
    """The same data with a fixed, evenly spaced subset of each validation case's slices, so
    that one pass runs at most about ``max_windows`` patches (every case keeps >= 1 slice).

    The subset depends on the data only (no randomness): every validation of a run scores
    the same slices, so the best checkpoint is chosen on comparable numbers.
    """
    total = validation_windows(data)
    if total <= max_windows:
        return data
    share = max_windows / total
    chosen: dict[str, np.ndarray | None] = {}
    for case in data.val:
        index = _slices_of(data, case)
        keep = max(1, int(share * len(index)))
        chosen[case.case_id] = index[np.linspace(0, len(index) - 1, keep).round().astype(int)]
    return replace(data, val_slices=chosen)


def torch_predictor(model: Any, device: Any, amp: bool | Any) -> Callable[[np.ndarray], np.ndarray]:
    """``(B, C, h, w)`` float32 -> ``(B, K, h, w)`` float32 logits of a torch model (eval).

    ``amp``: ``True`` for FP16 autocast, ``False`` for FP32, or a torch dtype to autocast to.
    """
    import torch

    dtype = torch.float16 if amp is True else (amp or None)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch.autocast(device.type, dtype, enabled=dtype is not None):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            return model(x).float().cpu().numpy()

    return predict


def evaluate_cases(
    data: PlannedData,
    predict: Callable[[np.ndarray], np.ndarray],
    surface: bool = False,
    gather: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Sliding-window predictions of the validation slices, scored per case.

    Args:
        data: the planned data (its ``val_slices`` may be a subset, see
            :func:`validation_subset`).
        predict: ``(B, C, h, w)`` -> ``(B, K, h, w)`` logits.
        surface: also HD95 (whole cases only).
        gather: joins the per-case results of every process of a distributed run
            (``None``: one process).
        shard: ``(rank, world)``: this process scores validation cases ``rank::world``.

    Returns:
        ``{"cases": {case: {class: {"dice", "hd95"}}}, "mean": {class: {"dice", "hd95"}},
        "mean_dice": float}``; HD95 (mm, on the resampled grid) only with ``surface``
        (``None`` otherwise, and for a single case split by slices).
    """
    from medseg.metrics import compute_case_metrics
    from medseg.runtime.sliding_window import predict_slices

    classes = {k: v for k, v in data.spec_labels.items() if v > 0}
    config = data.config
    assert config.patch_size is not None and config.batch_size is not None
    rank, world = shard
    per_case: dict[str, Any] = {}
    for case in data.val[rank::world]:
        index = data.val_slices[case.case_id]
        images, labels = case.slice_images(), case.slice_labels()
        if index is not None:
            images, labels = images[index], labels[index]
        probs = predict_slices(
            np.ascontiguousarray(images),
            predict,
            config.patch_size,
            max(1, 2 * config.batch_size),
            overlap=getattr(data.recipe, "overlap", 0.5),
        )
        pred = probs.argmax(axis=1).astype(np.uint8)
        with_surface = surface and index is None
        metrics = compute_case_metrics(
            pred, np.asarray(labels), classes, case.slice_spacing, include_surface=with_surface
        )
        per_case[case.case_id] = {
            name: {
                "dice": float(m.dice),
                "hd95": float(m.hd95_mm) if with_surface else None,
            }
            for name, m in metrics.classes.items()
        }
    if gather is not None:
        per_case = gather(per_case)
    per_case = {c.case_id: per_case[c.case_id] for c in data.val}  # the split's order
    mean: dict[str, dict[str, float | None]] = {}
    for name in classes:
        dice = [c[name]["dice"] for c in per_case.values()]
        hd = [c[name]["hd95"] for c in per_case.values() if c[name]["hd95"] is not None]
        mean[name] = {
            "dice": float(np.nanmean(np.array(dice, dtype=np.float64))),
            "hd95": float(np.nanmean(np.array(hd, dtype=np.float64))) if hd else None,
        }
    mean_dice = float(np.mean([m["dice"] for m in mean.values()]))
    slices = {c.case_id: len(_slices_of(data, c)) for c in data.val}
    return {"cases": per_case, "mean": mean, "mean_dice": mean_dice, "slices": slices}


def write_validation(run_dir: Path, data: PlannedData, result: dict[str, Any], epoch: int) -> Path:
    """``validation.json`` of the best checkpoint: per-case and mean Dice/HD95 per class."""
    content = {
        "dataset": data.dataset,
        "fingerprint": data.fingerprint,
        "plan_fingerprint": data.plan.fingerprint,
        "fold": data.split.get("fold"),
        "folds": data.split.get("folds"),
        "split": data.split.get("kind"),
        "epoch": epoch,
        "grid": "the plan's resampled training grid (RAS, target in-plane spacing); HD95 in mm",
        **result,
    }
    path = run_dir / VALIDATION_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return path
