"""What the training loop iterates and validates on: a planned source or a whole-slice one.

* :func:`planned_source` (``geometry="plan"``, the default): random patches of the plan's
  size from reoriented, resampled, normalised cases; validation of whole slices through the
  sliding window; at the end, Dice and HD95 per case of the best checkpoint in
  ``validation.json``.
* :func:`whole_slice_source` (``geometry="whole-slice"``): the original path, whole slices
  padded to a multiple of 16 (kept for pad/resize recipes).

Both give the loop a loader, a per-epoch hook, a validation function and the checkpoint's
``meta`` record.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.data.plan import Plan
from medseg.errors import DatasetError
from medseg.train.config import TrainConfig

__all__ = ["TrainingSource", "planned_source", "whole_slice_source"]


@dataclass
class TrainingSource:
    """The loop's view of its data.

    Attributes:
        config: the training options with every default resolved (recorded in config.json).
        loader: iterable of ``(images (B, C, h, w), labels (B, h, w))`` torch batches.
        set_epoch: called with the epoch number before it runs.
        validate: ``(model, device, amp) -> {class: Dice}`` on the validation split.
        meta: the checkpoint's record (classes, recipe, plan, split, ...).
        finish: ``(model, device, amp, best_epoch, run_dir)`` after training, or ``None``.
        plan: the plan of a planned run.
    """

    config: TrainConfig
    loader: Any
    set_epoch: Callable[[int], None]
    validate: Callable[[Any, Any, bool], dict[str, float]]
    meta: dict[str, Any]
    num_channels: int
    num_classes: int
    finish: Callable[[Any, Any, bool, int, Path], None] | None = None
    plan: Plan | None = None


def _environment(device: Any) -> dict[str, Any]:
    import monai
    import torch

    return {
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def planned_source(
    dataset_dir: Path, config: TrainConfig, device: Any, plan: Plan | None, force: bool
) -> TrainingSource:
    """A planned run's source (see the module docstring)."""
    import torch

    from medseg.train.augment import build_augmentation
    from medseg.train.patches import PatchDataset
    from medseg.train.planned import (
        evaluate_cases,
        load_planned_data,
        torch_predictor,
        write_validation,
    )

    data = load_planned_data(dataset_dir, config, plan, force=force)
    config = data.config
    assert config.batch_size is not None and config.patch_size is not None
    sampler = data.sampler()
    steps = config.steps_per_epoch or max(1, sampler.num_slices // config.batch_size)
    dataset = PatchDataset(
        sampler, steps * config.batch_size, config.seed, build_augmentation(config, crop=False)
    )
    loader: Any = torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset (__len__, __getitem__)
        batch_size=config.batch_size,
        shuffle=False,
    )

    def validate(model: Any, dev: Any, amp: bool) -> dict[str, float]:
        model.eval()
        result = evaluate_cases(data, torch_predictor(model, dev, amp))
        return {name: float(m["dice"]) for name, m in result["mean"].items()}

    def finish(model: Any, dev: Any, amp: bool, epoch: int, run_dir: Path) -> None:
        model.eval()
        result = evaluate_cases(data, torch_predictor(model, dev, amp), surface=True)
        write_validation(run_dir, data, result, epoch)

    meta = {
        "medseg_version": __version__,
        "dataset": {
            "name": data.dataset,
            "path": str(Path(dataset_dir).resolve()),
            "fingerprint": data.fingerprint,
            "channel_names": list(data.channel_names),
        },
        "classes": dict(data.spec_labels),
        "in_channels": len(data.channel_names),
        "recipe": data.recipe.to_dict(),
        "plan": data.plan.to_dict(),
        "split": data.split,
        "orientation": data.plan.orientation,
        "seed": config.seed,
        "network_input_hw": list(config.patch_size),
        "environment": _environment(device),
    }
    return TrainingSource(
        config=config,
        loader=loader,
        set_epoch=dataset.set_epoch,
        validate=validate,
        meta=meta,
        num_channels=len(data.channel_names),
        num_classes=len(data.spec_labels),
        finish=finish,
        plan=data.plan,
    )


def whole_slice_source(dataset_dir: Path, config: TrainConfig, device: Any) -> TrainingSource:
    """The original whole-slice source (pad recipe; see the module docstring)."""
    import torch

    from medseg.data.samples import load_training_data
    from medseg.train.augment import SliceDataset, build_augmentation
    from medseg.train.loop import predict_slices, validation_dice

    config = replace(
        config,
        batch_size=config.batch_size or 8,
        slice_axis=2 if config.slice_axis is None else config.slice_axis,
        flip_axes=() if config.flip_axes is None else config.flip_axes,
    )
    assert config.slice_axis is not None and config.batch_size is not None
    data = load_training_data(dataset_dir, config.slice_axis, config.val_fraction, config.seed)
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    if len(data.train) < config.batch_size:
        raise DatasetError(
            f"{dataset_dir} gives {len(data.train)} training slices, fewer than the batch size "
            f"{config.batch_size}; lower --batch-size"
        )
    train_set: Any = SliceDataset(data.train.images, data.train.labels, build_augmentation(config))
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )

    def validate(model: Any, dev: Any, amp: bool) -> dict[str, float]:
        return validation_dice(predict_slices(model, data.val.images, dev), data.val, classes)

    meta = {
        "medseg_version": __version__,
        "dataset": {
            "name": data.spec.name,
            "path": str(Path(data.spec.root).resolve()),
            "fingerprint": data.fingerprint,
            "channel_names": list(data.spec.channel_names),
        },
        "classes": dict(data.spec.labels),
        "in_channels": data.spec.num_channels,
        "recipe": data.recipe.to_dict(),
        "split": {
            "kind": data.split.kind,
            "description": data.split.description,
            "train_slices": len(data.train),
            "val_slices": [str(r) for r in data.split.val],
        },
        "seed": config.seed,
        "network_input_hw": list(data.train.images.shape[2:]),
        "environment": _environment(device),
    }
    return TrainingSource(
        config=config,
        loader=loader,
        set_epoch=lambda _epoch: None,
        validate=validate,
        meta=meta,
        num_channels=data.spec.num_channels,
        num_classes=len(data.spec.labels),
    )
