"""The training loop: Dice + cross-entropy, AdamW with a cosine or poly schedule.

``train(dataset_dir, run_dir, config)`` trains one model on a dataset folder: by default
planned (``plans.json``: RAS, target spacing, random patches of a fixed size, fold split;
see :mod:`medseg.train.sources`), validates every epoch (Dice per class on whole validation
slices: through the sliding window for a planned run, at their original size for a
whole-slice run) and keeps the best checkpoint by validation mean Dice. CUDA with FP16
mixed precision when present, CPU otherwise. Deterministic for a given seed on a given
machine and thread count.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file, check_parent_exists
from medseg.data.plan import Plan, load_plan, save_plan
from medseg.data.preprocessing import restore_size
from medseg.data.samples import SliceSet
from medseg.deps import require
from medseg.errors import ConfigError
from medseg.outputs import interrupted_run
from medseg.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LAST_NAME,
    save_checkpoint,
    write_run_config,
)
from medseg.train.config import TrainConfig
from medseg.train.planned import PLAN_NAME

__all__ = [
    "EpochLog",
    "TrainResult",
    "check_run_dir",
    "predict_slices",
    "train",
    "validation_dice",
]

METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "training_curve.png"


@dataclass(frozen=True)
class EpochLog:
    """One epoch of a run (one line of ``metrics.jsonl``); Dice in [0, 1]."""

    epoch: int
    train_loss: float
    val_dice: dict[str, float]
    val_mean_dice: float
    lr: float
    seconds: float
    best: bool


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: int
    best_val_dice: dict[str, float]
    best_mean_dice: float
    epochs: tuple[EpochLog, ...]
    seconds: float


def _select_device(config: TrainConfig) -> tuple[Any, bool]:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available to torch")
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    amp = use_cuda if config.amp is None else config.amp
    if amp and not use_cuda:
        raise ConfigError("mixed precision (amp) needs CUDA; it is off on CPU")
    return device, amp


def _lr_factor(config: TrainConfig, total_steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return (1.0 - t) ** 0.9

    return factor


def predict_slices(model: Any, images: np.ndarray, device: Any, batch_size: int = 8) -> np.ndarray:
    """Argmax labels ``(N, H, W)`` uint8 of a model on ``(N, C, H, W)`` network-size slices."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            out.append(model(batch).argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def validation_dice(
    predicted: np.ndarray, slices: SliceSet, classes: dict[str, int]
) -> dict[str, float]:
    """Dice per class of network-size predictions against the slices' labels, both restored
    to each slice's original size (padding removed), pooled over all validation slices.

    A class absent from both prediction and reference scores 1.0 (``empty="one"`` of
    :func:`medseg.metrics.compute_dice`)."""
    from medseg.metrics import compute_dice

    pred = np.stack(
        [
            restore_size(p, g, is_label=True)
            for p, g in zip(predicted, slices.geometries, strict=True)
        ]
    )
    ref = np.stack(
        [
            restore_size(r, g, is_label=True)
            for r, g in zip(slices.labels, slices.geometries, strict=True)
        ]
    )
    return compute_dice(pred, ref, classes, empty="one")


def _check_run_dir(run_dir: Path, dataset_dir: Path, resume: bool, force: bool) -> None:
    """Refuse what would lose data; nothing is deleted here (see :func:`_clear_run_dir`)."""
    check_parent_exists(run_dir)
    run_abs, data_abs = run_dir.resolve(), dataset_dir.resolve()
    if run_abs == data_abs or run_abs in data_abs.parents or data_abs in run_abs.parents:
        raise ConfigError(f"run directory {run_dir} overlaps the dataset folder {dataset_dir}")
    if resume:
        if not (run_dir / LAST_NAME).is_file():
            why = (
                "it was interrupted before its first checkpoint; run again without --resume "
                "to start it over"
                if interrupted_run(run_dir)
                else f"it holds no {LAST_NAME} from an earlier run"
            )
            raise ConfigError(f"cannot resume {run_dir}: {why}")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} exists and is a file")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force and not interrupted_run(run_dir):
        raise ConfigError(
            f"run directory {run_dir} is not empty; pass --force to replace it or --resume "
            "to continue it"
        )


check_run_dir = _check_run_dir  # public: the CLI checks before planning


def _clear_run_dir(run_dir: Path) -> None:
    """Start a new run: remove an earlier run (allowed by --force) once the inputs are valid."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)
    run_dir.mkdir()


def _resume_state(run_dir: Path, config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    import torch

    try:
        state = torch.load(run_dir / LAST_NAME, map_location="cpu", weights_only=True)
        stored = TrainConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text())["train"])
    except ConfigError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot resume {run_dir}: its {LAST_NAME} or {CONFIG_NAME} is unreadable ({first})"
        ) from exc
    if (stored.arch, stored.variant) != (config.arch, config.variant):
        raise ConfigError(
            f"{run_dir} was trained as {stored.arch}/{stored.variant}; cannot resume it as "
            f"{config.arch}/{config.variant}"
        )
    if config.epochs <= state["epoch"]:
        raise ConfigError(
            f"{run_dir} already ran {state['epoch']} epochs; pass --epochs above that to resume"
        )
    return replace(stored, epochs=config.epochs), state


def train(
    dataset_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    *,
    plan: Plan | None = None,
    resume: bool = False,
    force: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress: Any = None,
) -> TrainResult:
    """Train ``config.arch`` on a dataset folder and write the run directory.

    Args:
        dataset_dir: nnU-Net raw dataset folder.
        run_dir: output folder (see :mod:`medseg.train.checkpoint` for its files).
        config: training options (``geometry="plan"``: the plan decides what is ``None``).
        plan: the plan to train with (``medseg train --plan``); ``None`` plans the dataset
            (planned geometry) or is ignored (whole-slice geometry).
        resume: continue the run in ``run_dir`` from its ``last.pt`` up to ``config.epochs``.
        force: replace a non-empty ``run_dir``; accept a ``plan`` made for another version of
            the dataset (its channels and labels must still match).
        on_epoch: called after every epoch (the CLI prints a line).
        progress: a ``rich.progress.Progress`` to show batches in, or ``None``.
    """
    torch = require("torch", "training")
    DiceCELoss = require("monai.losses", "training").DiceCELoss

    from medseg.models import create_model
    from medseg.train.sources import planned_source, whole_slice_source

    started = time.perf_counter()
    _check_run_dir(run_dir, dataset_dir, resume, force)
    state: dict[str, Any] | None = None
    if resume:
        config, state = _resume_state(run_dir, config)
        if config.geometry == "plan":
            plan = load_plan(run_dir / PLAN_NAME)
    device, amp = _select_device(config)
    if config.geometry == "plan":
        source = planned_source(dataset_dir, config, device, plan, force and not resume)
    else:
        source = whole_slice_source(dataset_dir, config, device)
    config = source.config
    if not resume:
        _clear_run_dir(run_dir)  # the inputs are valid: now an earlier run may go
    if source.plan is not None:
        save_plan(source.plan, run_dir / PLAN_NAME)
    torch.manual_seed(config.seed)
    model = create_model(config.arch, source.num_channels, source.num_classes, config.variant)
    model.to(device)
    loader = source.loader
    steps_per_epoch = len(loader)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config, config.epochs * steps_per_epoch, steps_per_epoch)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    history: list[EpochLog] = []
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        history = [EpochLog(**e) for e in _read_metrics(run_dir) if e["epoch"] < start_epoch]
        with atomic_file(run_dir / METRICS_NAME) as tmp:  # drop rows of epochs to be rerun
            tmp.write_text("".join(json.dumps(e.__dict__) + "\n" for e in history))
    meta = source.meta
    best = max(history, key=lambda e: e.val_mean_dice) if history else None
    write_run_config(
        run_dir, {**meta, "train": config.to_dict(), **({"best": best.__dict__} if best else {})}
    )

    task = None
    if progress is not None:
        task = progress.add_task(
            "training", total=(config.epochs - start_epoch + 1) * steps_per_epoch
        )
    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        source.set_epoch(epoch)
        model.train()
        losses = []
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(model(images), labels[:, None])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress.update(task, advance=1, description=f"epoch {epoch}/{config.epochs}")
        dice = source.validate(model, device, amp)
        mean_dice = float(np.mean(list(dice.values())))
        is_best = best is None or mean_dice > best.val_mean_dice
        log = EpochLog(
            epoch,
            float(np.mean(losses)),
            dice,
            mean_dice,
            float(scheduler.get_last_lr()[0]),
            time.perf_counter() - t0,
            is_best,
        )
        history.append(log)
        if is_best:
            best = log
            save_checkpoint(run_dir / CHECKPOINT_NAME, model.cpu(), meta)
            model.to(device)
            write_run_config(run_dir, {**meta, "train": config.to_dict(), "best": log.__dict__})
        _append_metrics(run_dir, log)  # before last.pt: a resume never lacks an epoch's row
        save_checkpoint(
            run_dir / LAST_NAME,
            model.cpu(),
            meta,
            epoch=epoch,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
        )
        model.to(device)
        _save_curve(run_dir, history, config)
        if on_epoch is not None:
            on_epoch(log)
    assert best is not None  # at least one epoch ran (epochs >= 1, checked in TrainConfig)
    if source.finish is not None:
        weights = torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
        model.load_state_dict(weights["state_dict"])
        source.finish(model.to(device), device, amp, best.epoch, run_dir)
    return TrainResult(
        run_dir,
        best.epoch,
        best.val_dice,
        best.val_mean_dice,
        tuple(history),
        time.perf_counter() - started,
    )


def _append_metrics(run_dir: Path, log: EpochLog) -> None:
    with (run_dir / METRICS_NAME).open("a") as f:
        f.write(json.dumps(log.__dict__) + "\n")


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that epoch is rerun
    return rows


def _save_curve(run_dir: Path, history: list[EpochLog], config: TrainConfig) -> None:
    from medseg.viz.curves import save_training_curve

    title = f"{config.arch} ({config.variant}), seed {config.seed}"
    save_training_curve([e.__dict__ for e in history], run_dir / CURVE_NAME, title)
