"""The training loop: Dice + cross-entropy, AdamW with a cosine or poly schedule.

``train(dataset_dir, run_dir, config)`` trains one model on the slices of a dataset folder,
validates every epoch (Dice per class on whole validation slices, at their original size)
and keeps the best checkpoint by validation mean Dice. CUDA with FP16 mixed precision when
present, CPU otherwise. Deterministic for a given seed on a given machine and thread count.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.atomic import atomic_file, check_parent_exists
from medseg.data.preprocessing import restore_size
from medseg.data.samples import SliceSet, TrainingData, load_training_data
from medseg.deps import require
from medseg.errors import ConfigError, DatasetError
from medseg.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LAST_NAME,
    save_checkpoint,
    write_run_config,
)
from medseg.train.config import TrainConfig

__all__ = ["EpochLog", "TrainResult", "predict_slices", "train", "validation_dice"]

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
            raise ConfigError(f"cannot resume: {run_dir} holds no {LAST_NAME} from an earlier run")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} exists and is a file")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise ConfigError(
            f"run directory {run_dir} is not empty; pass --force to replace it or --resume "
            "to continue it"
        )


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
    resume: bool = False,
    force: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress: Any = None,
) -> TrainResult:
    """Train ``config.arch`` on a dataset folder and write the run directory.

    Args:
        dataset_dir: nnU-Net raw dataset folder.
        run_dir: output folder (see :mod:`medseg.train.checkpoint` for its files).
        config: training options.
        resume: continue the run in ``run_dir`` from its ``last.pt`` up to ``config.epochs``.
        force: replace a non-empty ``run_dir``.
        on_epoch: called after every epoch (the CLI prints a line).
        progress: a ``rich.progress.Progress`` to show batches in, or ``None``.
    """
    torch = require("torch", "training")
    DiceCELoss = require("monai.losses", "training").DiceCELoss

    from medseg.models import create_model
    from medseg.train.augment import SliceDataset, build_augmentation

    started = time.perf_counter()
    _check_run_dir(run_dir, dataset_dir, resume, force)
    state: dict[str, Any] | None = None
    if resume:
        config, state = _resume_state(run_dir, config)
    data = load_training_data(dataset_dir, config.slice_axis, config.val_fraction, config.seed)
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    if len(data.train) < config.batch_size:
        raise DatasetError(
            f"{dataset_dir} gives {len(data.train)} training slices, fewer than the batch size "
            f"{config.batch_size}; lower --batch-size"
        )
    device, amp = _select_device(config)
    if not resume:
        _clear_run_dir(run_dir)  # the inputs are valid: now an earlier run may go
    torch.manual_seed(config.seed)
    model = create_model(config.arch, data.spec.num_channels, len(data.spec.labels), config.variant)
    model.to(device)
    train_set: Any = SliceDataset(data.train.images, data.train.labels, build_augmentation(config))
    loader: Any = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
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
    meta = _run_meta(data, config, device)
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
        dice = validation_dice(predict_slices(model, data.val.images, device), data.val, classes)
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
    return TrainResult(
        run_dir,
        best.epoch,
        best.val_dice,
        best.val_mean_dice,
        tuple(history),
        time.perf_counter() - started,
    )


def _run_meta(data: TrainingData, config: TrainConfig, device: Any) -> dict[str, Any]:
    import monai
    import torch

    return {
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
        "environment": {
            "torch": str(torch.__version__),
            "monai": str(monai.__version__),
            "python": platform.python_version(),
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
    }


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
