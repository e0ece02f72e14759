"""What the training loop iterates and validates on: a planned source or a whole-slice one.

* :func:`planned_source` (``geometry="plan"``, the default): random patches of the plan's
  size from reoriented, resampled, normalised cases; validation of whole slices through the
  sliding window; at the end, Dice and HD95 per case of the best checkpoint in
  ``validation.json``.
* :func:`whole_slice_source` (``geometry="whole-slice"``): the original path, whole slices
  padded to a multiple of 16 (kept for pad/resize recipes).

Both give the loop an endless stream of batches from any step on (in ``DataLoader`` worker
processes for a planned run), a validation function and the checkpoint's ``meta`` record.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.errors import ConfigError, DatasetError
from medseg.plan.planner import Plan
from medseg.train.config import TrainConfig

__all__ = ["TrainingSource", "planned_source", "whole_slice_source"]


@dataclass
class TrainingSource:
    """The loop's view of its data.

    Attributes:
        config: the training options with every default resolved (recorded in config.json).
        steps_per_epoch: optimisation steps of one epoch (``--epochs`` runs).
        batches: ``(start_step, rank, world, workers, pin)`` -> endless iterator of
            ``(images (b, C, h, w), labels (b, h, w))`` torch batches from that step on
            (``b``: this rank's share of the global batch).
        validate: ``(model, device, autocast dtype or None, dist)`` ->
            ``({class: Dice}, detail)`` on the validation split (or its subset).
        validation_windows: patches one validation pass runs now.
        limit_validation: cap one pass at about that many patches (a fixed subset).
        meta: the checkpoint's record (classes, recipe, plan, split, ...).
        finish: ``(model, device, dtype, best_epoch, run_dir, detail or None)`` after
            training (``detail``: the best validation's, written as it is; ``None``: score
            every validation slice again), or ``None``.
        plan: the plan of a planned run.
    """

    config: TrainConfig
    steps_per_epoch: int
    batches: Callable[[int, int, int, int, bool], Iterator[tuple[Any, Any]]]
    validate: Callable[[Any, Any, Any, Any], tuple[dict[str, float], Any]]
    validation_windows: Callable[[], int]
    limit_validation: Callable[[int], None]
    meta: dict[str, Any]
    num_channels: int
    num_classes: int
    finish: Callable[[Any, Any, Any, int, Path, Any], None] | None = None
    plan: Plan | None = None


def _loader(
    dataset: Any, batch: int, sampler: Any, workers: int, pin: bool, seed: int
) -> Iterator[tuple[Any, Any]]:
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=(4 if pin else 2) if workers else None,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)


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

    from medseg.train.augment import build_augmentation
    from medseg.train.patches import PatchDataset, StreamSampler
    from medseg.train.planned import (
        evaluate_cases,
        load_planned_data,
        torch_predictor,
        validation_subset,
        validation_windows,
        write_validation,
    )

    data = load_planned_data(dataset_dir, config, plan, force=force, device=device.type)
    config = data.config
    assert config.batch_size is not None and config.patch_size is not None
    sampler = data.sampler()
    steps = config.steps_per_epoch or max(1, sampler.num_slices // config.batch_size)
    dataset = PatchDataset(
        sampler, steps * config.batch_size, config.seed, build_augmentation(config, crop=False)
    )
    batch = config.batch_size
    state = {"val": data}

    def batches(
        start: int, rank: int, world: int, workers: int, pin: bool
    ) -> Iterator[tuple[Any, Any]]:
        stream = StreamSampler(batch, start, rank, world)
        return _loader(dataset, stream.local_batch(), stream, workers, pin, config.seed)

    def limit(max_windows: int) -> None:
        state["val"] = validation_subset(data, max_windows)

    def validate(model: Any, dev: Any, dtype: Any, dist: Any) -> tuple[dict[str, float], Any]:
        model.eval()
        result = evaluate_cases(
            state["val"],
            torch_predictor(model, dev, dtype),
            gather=None if dist is None else dist.gather_dict,
            shard=(0, 1) if dist is None else (dist.rank, dist.world),
        )
        return {name: float(m["dice"]) for name, m in result["mean"].items()}, result

    def finish(model: Any, dev: Any, dtype: Any, epoch: int, run_dir: Path, detail: Any) -> None:
        if detail is None:
            model.eval()
            detail = evaluate_cases(data, torch_predictor(model, dev, dtype), surface=True)
        write_validation(run_dir, data, detail, epoch)

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
        steps_per_epoch=steps,
        batches=batches,
        validate=validate,
        validation_windows=lambda: validation_windows(state["val"]),
        limit_validation=limit,
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
    from medseg.metrics.slices import validation_dice
    from medseg.train.augment import SliceDataset, build_augmentation
    from medseg.train.slices import predict_slice_labels

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
    batch = config.batch_size
    per_epoch = len(train_set) // batch

    def batches(
        start: int, rank: int, world: int, workers: int, pin: bool
    ) -> Iterator[tuple[Any, Any]]:
        if world > 1:
            raise ConfigError("distributed training needs the planned geometry (no --whole-slice)")
        epoch = start // per_epoch
        while True:  # epoch e shuffles with (seed, e): a resumed run sees the same order
            yield from torch.utils.data.DataLoader(
                train_set,
                batch_size=batch,
                shuffle=True,
                drop_last=True,
                generator=torch.Generator().manual_seed(config.seed + 1000003 * epoch),
            )
            epoch += 1

    def validate(model: Any, dev: Any, dtype: Any, dist: Any) -> tuple[dict[str, float], Any]:
        return validation_dice(
            predict_slice_labels(model, data.val.images, dev), data.val, classes
        ), None

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
        steps_per_epoch=per_epoch,
        batches=batches,
        validate=validate,
        validation_windows=lambda: len(data.val.images),
        limit_validation=lambda _windows: None,
        meta=meta,
        num_channels=data.spec.num_channels,
        num_classes=len(data.spec.labels),
    )
