"""Training options as one frozen, JSON-serialisable dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medseg.config_io import to_json_dict
from medseg.errors import ConfigError
from medseg.limits import check_batch, check_number
from medseg.schema import FORBID_EXTRA, parse

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (recorded in the run's ``config.json``).

    Attributes:
        arch: registered architecture (``medseg.models.list_models()``).
        variant: width preset of the architecture (``"tiny"``, ``"small"``, ``"paper"``).
        geometry: ``"plan"`` (default: a plan fixes orientation, target spacing, patch and
            normalisation; random patches; sliding-window validation) or ``"whole-slice"``
            (the original path: whole slices padded to a multiple of 16, for old recipes).
        epochs: passes over the training slices (an epoch draws as many patches as there
            are training slices, unless ``steps_per_epoch`` is set).
        batch_size: slices (patches) per optimisation step; ``None``: the plan's (8 for
            whole-slice training).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        schedule: ``"cosine"`` (to 0 over all steps) or ``"poly"`` (``(1 - t)^0.9``, nnU-Net).
        seed: seeds the split, the initial weights, the sampling order and the augmentation.
        val_fraction: share of cases (several cases) or slice blocks (one case) for validation.
        slice_axis: volume axis the 2D slices are cut along (0, 1, 2 of X, Y, Z); ``None``:
            the plan's (2 for whole-slice training).
        patch_size: the training patch ``(H, W)``: with a plan, multiples of 32 up to
            ``max_patch`` (``None``: the plan's); whole-slice training: random crops
            (multiples of 16) of the network-size slices, ``None`` trains on whole slices.
            Validation always uses whole slices.
        fold: cross-validation fold ``0..folds-1`` (case-level, see
            :func:`medseg.plan.folds.make_fold_split`).
        folds: number of folds; ``None``: 5, or one per case for fewer than 5 cases.
        max_patch: cap of the planned patch (multiples of 32).
        foreground_fraction: share of patches centred on a foreground voxel (nnU-Net: 1/3).
        steps_per_epoch: optimisation steps per epoch; ``None``: training slices / batch.
        augment: random rotation and scaling, flips, intensity jitter, Gaussian noise.
        rotate_deg: rotation range in degrees (uniform in ``[-r, r]``).
        scale: zoom range (uniform in ``[1 - s, 1 + s]``): the multi-scale augmentation.
        flip_axes: slice axes (0 = H, 1 = W) that may be flipped; empty when anatomy forbids;
            ``None``: the plan's mirror axes (none for whole-slice training).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        amp: legacy switch: ``False`` forces FP32; ``True`` needs CUDA (``None``: see
            ``precision``).
        time_budget: wall-clock seconds for the whole run (``medseg train --time-budget``):
            steps, schedule and validation cadence are sized from a measured warm-up
            (:mod:`medseg.train.budget`); ``epochs`` is then not used.
        workers: ``DataLoader`` worker processes for patch sampling and augmentation
            (``None``: one fewer than the cores, at most 2 on CPU, 8 on CUDA; ``0``: in the
            training process). The batches do not depend on it.
        precision: ``"auto"`` (CUDA: BF16 or FP16 mixed precision; CPU: BF16 where the CPU has
            native BF16, FP32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA).
        channels_last: NHWC memory format (``None``: on; see :mod:`medseg.train.arith`).
    """

    __pydantic_config__ = FORBID_EXTRA  # read back from a run's config.json (medseg.schema)

    arch: str = "attention-fusion"
    variant: str = "small"
    geometry: Literal["plan", "whole-slice"] = "plan"
    epochs: int = 50
    batch_size: int | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "poly"] = "cosine"
    seed: int = 0
    val_fraction: float = 0.2
    slice_axis: int | None = None
    patch_size: tuple[int, int] | None = None
    fold: int = 0
    folds: int | None = None
    max_patch: tuple[int, int] = (256, 256)
    foreground_fraction: float = 1.0 / 3.0
    steps_per_epoch: int | None = None
    augment: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.15
    flip_axes: tuple[int, ...] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool | None = None
    time_budget: float | None = None
    workers: int | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.geometry not in ("plan", "whole-slice"):
            raise ConfigError(f"geometry {self.geometry!r} must be 'plan' or 'whole-slice'")
        check_batch(self.batch_size, "--batch-size")
        check_number(self.lr, "--lr", low=0.0, high=10.0, low_open=True)
        check_number(self.weight_decay, "--weight-decay", low=0.0, high=1.0)
        check_number(
            self.val_fraction, "--val-fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
        check_number(self.rotate_deg, "rotate_deg", low=0.0, high=180.0)
        check_number(self.scale, "scale", low=0.0, high=1.0, high_open=True)
        if isinstance(self.epochs, int) and self.epochs > 100_000:
            raise ConfigError(f"--epochs {self.epochs} must be an integer in 1..100000")
        if self.schedule not in ("cosine", "poly"):
            raise ConfigError(f"schedule {self.schedule!r} must be 'cosine' or 'poly'")
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice axis {self.slice_axis} must be 0, 1 or 2")
        if self.geometry == "plan":
            from medseg.plan.planner import check_patch

            check_patch(self.max_patch, (10**6, 10**6), "--max-patch")
            if self.patch_size is not None:
                check_patch(self.patch_size, self.max_patch)
        elif self.patch_size is not None and (
            len(self.patch_size) != 2 or any(p <= 0 or p % 16 for p in self.patch_size)
        ):
            raise ConfigError(f"patch size {self.patch_size} must be two positive multiples of 16")
        if self.folds is not None and (isinstance(self.folds, bool) or self.folds < 2):
            raise ConfigError(f"--folds {self.folds} must be an integer >= 2")
        if self.fold < 0 or (self.folds is not None and self.fold >= self.folds):
            top = f"0..{self.folds - 1} (--folds {self.folds})" if self.folds else "0..folds-1"
            raise ConfigError(f"--fold {self.fold} is outside {top}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ConfigError(f"foreground fraction {self.foreground_fraction} must be in [0, 1]")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps per epoch {self.steps_per_epoch} must be >= 1")
        if self.flip_axes is not None and any(a not in (0, 1) for a in self.flip_axes):
            raise ConfigError(f"flip axes {self.flip_axes} must be slice axes 0 (H) or 1 (W)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device {self.device!r} must be 'auto', 'cpu' or 'cuda'")
        if not 0 <= self.scale < 1 or self.rotate_deg < 0:
            raise ConfigError(f"scale ({self.scale}) must be in [0, 1), rotate_deg >= 0")

        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError(f"time budget {self.time_budget} s must be positive")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers {self.workers} must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision {self.precision!r} must be auto, fp32, bf16 or fp16")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return to_json_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        A record without ``geometry`` predates planned training: it is a whole-slice run
        (so ``--resume`` and ``medseg demo --train`` keep training it the way it was).
        """
        if "geometry" not in data:
            data = {**data, "geometry": "whole-slice"}
        return parse(cls, data, "training config")
