"""The training loop: Dice + cross-entropy, AdamW with a cosine or poly schedule.

``train(dataset_dir, run_dir, config)`` trains one model on a dataset folder: by default
planned (``plans.json``: RAS, target spacing, random patches of a fixed size, fold split;
see :mod:`medseg.train.sources`), keeps the best checkpoint by validation mean Dice (whole
validation slices through the sliding window for a planned run, at their original size for
a whole-slice run). The run is either ``config.epochs`` epochs (validation after each) or
sized to ``config.time_budget`` seconds (:mod:`medseg.train.budget`: measured warm-up, then
steps, schedule and validation cadence that end inside the budget). Batches come from
``DataLoader`` worker processes; the arithmetic follows the device
(:mod:`medseg.train.arith`); under ``torchrun`` the run is distributed
(:mod:`medseg.train.distributed`). Deterministic for a given seed on a given machine and
thread count, whatever the number of data workers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.deps import require
from medseg.errors import ConfigError
from medseg.events import EventSink, ignore
from medseg.plan.planner import Plan, load_plan, save_plan
from medseg.train.checkpoint import CONFIG_NAME, LAST_NAME
from medseg.train.config import TrainConfig
from medseg.train.planned import PLAN_NAME
from medseg.train.rundir import EpochLog, check_run_dir, clear_run_dir, read_metrics
from medseg.train.steps import Stepper

__all__ = [
    "EpochLog",
    "TrainResult",
    "check_run_dir",
    "train",
]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes:
        steps: optimisation steps made (all ranks make the same number).
        timing: seconds spent ``{"total", "steps", "data", "validation"}`` (``data``: waiting
            for batches, part of ``steps``).
        budget: the sized plan of a ``--time-budget`` run (``None`` for ``--epochs``).
    """

    run_dir: Path
    best_epoch: int
    best_val_dice: dict[str, float]
    best_mean_dice: float
    epochs: tuple[EpochLog, ...]
    seconds: float
    steps: int = 0
    timing: dict[str, float] | None = None
    budget: dict[str, Any] | None = None


def _select_device(config: TrainConfig) -> Any:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available to torch")
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.amp and not use_cuda:
        raise ConfigError("mixed precision (amp) needs CUDA; it is off on CPU")
    return torch.device("cuda" if use_cuda else "cpu")


def _resume_state(run_dir: Path, config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    import torch

    if config.time_budget is not None:
        raise ConfigError("--resume continues an --epochs run; it does not take --time-budget")
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
    if stored.time_budget is not None:
        raise ConfigError(f"{run_dir} was a --time-budget run; it cannot be resumed")
    if config.epochs <= state["epoch"]:
        raise ConfigError(
            f"{run_dir} already ran {state['epoch']} epochs; pass --epochs above that to resume"
        )
    return replace(stored, epochs=config.epochs, workers=config.workers), state


def train(
    dataset_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    *,
    plan: Plan | None = None,
    resume: bool = False,
    force: bool = False,
    on_epoch: Any = None,
    on_event: EventSink | None = None,
    clock_start: float | None = None,
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
        on_epoch: called with each :class:`EpochLog` (after every validation).
        on_event: receives :class:`~medseg.events.Event` s: ``train.setup`` (arithmetic,
            workers), ``train.budget`` (the sized run), ``train.step`` after every step
            (``data``: step, total, loss, samples_per_s, elapsed, eta, data_share) and
            ``train.validation`` (``data``: the row). Only rank 0 of a distributed run emits.
        clock_start: ``time.perf_counter()`` the time budget counts from (default: now;
            the CLI passes its own start, so planning counts too).
    """
    require("torch", "training")
    require("monai.losses", "training")
    from medseg.train.distributed import init_distributed
    from medseg.train.sources import planned_source, whole_slice_source

    started = time.perf_counter() if clock_start is None else clock_start
    state: dict[str, Any] | None = None
    device = _select_device(config)
    dist = init_distributed(device.type)
    main = dist is None or dist.is_main
    sink = (on_event or ignore) if main else ignore
    if main:
        check_run_dir(run_dir, dataset_dir, resume, force)
    if resume:
        config, state = _resume_state(run_dir, config)
        if config.geometry == "plan":
            plan = load_plan(run_dir / PLAN_NAME)
    if dist is not None and device.type == "cuda":
        import torch

        device = torch.device("cuda", dist.local_rank)
    if config.geometry == "plan":
        source = planned_source(dataset_dir, config, device, plan, force and not resume)
    else:
        source = whole_slice_source(dataset_dir, config, device)
    config = source.config
    if main and not resume:
        clear_run_dir(run_dir)  # the inputs are valid: now an earlier run may go
    if main and source.plan is not None:
        save_plan(source.plan, run_dir / PLAN_NAME, force=True)  # the run's own copy
    stepper = Stepper(source, config, device, dist, run_dir, main, sink, started)
    history: list[EpochLog] = []
    if state is not None:
        stepper.restore(state)
        start_epoch = int(state["epoch"]) + 1
        history = [EpochLog(**e) for e in read_metrics(run_dir) if e["epoch"] < start_epoch]
        stepper.rewrite_metrics(history)
    stepper.history = history
    if main:
        best = max(history, key=lambda e: e.val_mean_dice) if history else None
        stepper.write_config(best)
    try:
        result = stepper.run(on_epoch)
    finally:
        if dist is not None:
            dist.close()
    return TrainResult(
        run_dir,
        result.best.epoch,
        result.best.val_dice,
        result.best.val_mean_dice,
        tuple(stepper.history),
        time.perf_counter() - started,
        steps=result.steps,
        timing={k: round(v, 2) for k, v in result.timing.items()},
        budget=result.budget,
    )


def mean_dice(dice: dict[str, float]) -> float:
    """Mean of the per-class Dice."""
    return float(np.mean(list(dice.values())))
