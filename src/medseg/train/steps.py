"""The step engine of :func:`medseg.train.loop.train`: model, optimiser, schedule, the steps,
validation points, checkpoints and progress events of one run."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file
from medseg.errors import ConfigError
from medseg.events import Event, EventSink
from medseg.train.arith import run_arithmetic
from medseg.train.budget import (
    WARMUP_SHARE,
    WARMUP_STEPS,
    Deadline,
    RunSize,
    size_run,
    validation_subset_size,
)
from medseg.train.checkpoint import CHECKPOINT_NAME, LAST_NAME, save_checkpoint, write_run_config
from medseg.train.config import TrainConfig
from medseg.train.rundir import METRICS_NAME, EpochLog, append_metrics, save_curve

__all__ = ["Outcome", "Schedule", "Stepper", "default_workers"]


class Schedule:
    """Learning-rate factor per step: linear warm-up, then cosine to 0 or poly ``(1-t)^0.9``.

    A callable object (not a closure) so ``LambdaLR`` keeps its ``total`` and ``warmup`` in
    its state; a time-budgeted run sets them once its warm-up is measured.
    """

    def __init__(self, kind: str, total: int, warmup: int) -> None:
        self.kind, self.total, self.warmup = kind, int(total), max(1, int(warmup))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return (1.0 - t) ** 0.9


def default_workers(device_type: str, world: int = 1) -> int:
    """Data worker processes: one core per process stays with the arithmetic; the others
    (at most 2 on a CPU run, where they share the cores with it; 8 on CUDA) prepare batches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_rank = max(1, (cores or 1) // max(1, world))
    return int(min(8 if device_type == "cuda" else 2, per_rank - 1))


@dataclass(frozen=True)
class Outcome:
    """The end of :meth:`Stepper.run`."""

    best: EpochLog
    steps: int
    timing: dict[str, float]
    budget: dict[str, Any] | None


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Stepper:
    """One run's state; :meth:`run` trains it to the end (see :mod:`medseg.train.loop`)."""

    def __init__(
        self,
        source: Any,
        config: TrainConfig,
        device: Any,
        dist: Any,
        run_dir: Path,
        main: bool,
        sink: EventSink,
        started: float,
    ) -> None:
        import torch
        from monai.losses import DiceCELoss

        from medseg.models import create_model

        self.source, self.config, self.device, self.dist = source, config, device, dist
        self.run_dir, self.main, self.sink, self.started = run_dir, main, sink, started
        self.arith = run_arithmetic(config, device.type)
        self.dtype = self.arith.autocast_dtype()
        self.fmt = self.arith.memory_format()
        torch.manual_seed(config.seed)
        model = create_model(config.arch, source.num_channels, source.num_classes, config.variant)
        self.model = model.to(device, memory_format=self.fmt)  # type: ignore[call-overload]
        self.net: Any = self.model
        if dist is not None:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        per_epoch = source.steps_per_epoch
        self.schedule = Schedule(config.schedule, config.epochs * per_epoch, per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.arith.scaler)
        self.loss_fn = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=True
        )
        self.step = 0
        self.history: list[EpochLog] = []
        self.timing = {"steps": 0.0, "data": 0.0, "validation": 0.0}
        self.step_ema = 0.0
        self.val_seconds = 0.0
        self.budget: dict[str, Any] | None = None
        self.best_detail: Any = None

    # ----- state -----------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` (``--resume``): weights, optimiser, schedule, step."""
        total, warmup = self.schedule.total, self.schedule.warmup
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.schedule.total, self.schedule.warmup = total, warmup  # --epochs may have grown
        self.step = int(state["epoch"]) * self.source.steps_per_epoch

    def rewrite_metrics(self, history: list[EpochLog]) -> None:
        """Drop rows of epochs that will be rerun."""
        if self.main:
            with atomic_file(self.run_dir / METRICS_NAME) as tmp:
                tmp.write_text("".join(json.dumps(e.__dict__) + "\n" for e in history))

    def write_config(self, best: EpochLog | None) -> None:
        """``config.json``: the record, the options, the best row, the budget and timing."""
        content: dict[str, Any] = {**self.source.meta, "train": self.config.to_dict()}
        content["arithmetic"] = self.arith.reason
        if self.dist is not None:
            content["distributed"] = {"world_size": self.dist.world, "backend": self.dist.backend}
        if best is not None:
            content["best"] = best.__dict__
        if self.budget is not None:
            content["budget"] = self.budget
        content["steps"] = self.step
        content["timing"] = {k: round(v, 2) for k, v in self.timing.items()}
        write_run_config(self.run_dir, content)

    # ----- one step --------------------------------------------------------------------
    def _one_step(self, total: int, deadline: Deadline | None) -> float:
        import torch

        if not self.model.training:  # validation left it in eval mode (BatchNorm statistics)
            self.net.train()
        t0 = time.perf_counter()
        images, labels = next(self.batches)
        waited = time.perf_counter() - t0
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype is not None):
            loss = self.loss_fn(self.net(images).float(), labels[:, None])
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        value = float(loss.detach() if self.dist is None else self.dist.mean(loss.detach()))
        seconds = time.perf_counter() - t0
        self.step += 1
        self.timing["steps"] += seconds
        self.timing["data"] += waited
        self.step_ema = seconds if self.step_ema == 0 else 0.8 * self.step_ema + 0.2 * seconds
        if deadline is not None:
            deadline.observe_step(seconds)
        self._step_event(total, value, deadline)
        return value

    def _step_event(self, total: int, loss: float, deadline: Deadline | None) -> None:
        elapsed = time.perf_counter() - self.started
        batch = self.config.batch_size or 1
        left = total - self.step
        between = max(1, self.between)
        eta = left * self.step_ema + math.ceil(left / between) * self.val_seconds
        if deadline is not None:
            eta = min(eta, max(0.0, deadline.end - time.perf_counter()) + self.val_seconds)
        share = self.timing["data"] / max(self.timing["steps"], 1e-9)
        data = {
            "step": self.step,
            "total": total,
            "loss": round(loss, 5),
            "samples_per_s": round(batch / max(self.step_ema, 1e-9), 2),
            "elapsed": round(elapsed, 1),
            "eta": round(eta, 1),
            "data_share": round(share, 3),
        }
        where = f"step {self.step} (warm-up)" if total >= 10**8 else f"step {self.step}/{total}"
        eta_text = "" if total >= 10**8 else f"  ETA {_clock(eta)}"
        self.sink(
            Event(
                "train.step",
                "info",
                f"{where}  loss {loss:.4f}  {data['samples_per_s']:.1f} samples/s  "
                f"elapsed {_clock(elapsed)}{eta_text}  data {share:.0%}",
                data,
            )
        )

    # ----- validation points -----------------------------------------------------------
    def _validate(
        self, losses: list[float], t0: float, on_epoch: Callable[..., Any] | None
    ) -> None:
        v0 = time.perf_counter()
        self.sink(Event("train.validation", "start", f"validating at step {self.step}"))
        dice, detail = self.source.validate(
            self.net.module if self.dist else self.model, self.device, self.dtype, self.dist
        )
        mean = float(np.mean(list(dice.values())))
        best = max(self.history, key=lambda e: e.val_mean_dice) if self.history else None
        is_best = best is None or mean > best.val_mean_dice
        log = EpochLog(
            len(self.history) + 1 if not self.history else self.history[-1].epoch + 1,
            float(np.mean(losses)) if losses else float("nan"),
            dice,
            mean,
            float(self.scheduler.get_last_lr()[0]),
            time.perf_counter() - t0,
            is_best,
            self.step,
        )
        self.history.append(log)
        if is_best:
            self.best_detail = detail
        if self.main:
            self._save(log, is_best)
        self.val_seconds = time.perf_counter() - v0
        self.timing["validation"] += self.val_seconds
        if self.dist is not None:
            self.val_seconds = float(self.dist.broadcast(self.val_seconds))
        dice_text = "  ".join(f"{k} {v:.3f}" for k, v in dice.items())
        self.sink(
            Event(
                "train.validation",
                "done",
                f"step {self.step}: loss {log.train_loss:.4f}  val Dice {dice_text}  mean "
                f"{mean:.3f}  ({self.val_seconds:.1f} s validation)"
                + ("  best" if is_best else ""),
                {**log.__dict__, "validation_seconds": round(self.val_seconds, 2)},
            )
        )
        if on_epoch is not None:
            on_epoch(log)

    def _save(self, log: EpochLog, is_best: bool) -> None:
        meta = self.source.meta
        if is_best:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.model.cpu(), meta)
            self.model.to(self.device, memory_format=self.fmt)
        append_metrics(self.run_dir, log)  # before last.pt: a resume never lacks an epoch's row
        save_checkpoint(
            self.run_dir / LAST_NAME,
            self.model.cpu(),
            meta,
            epoch=log.epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
        )
        self.model.to(self.device, memory_format=self.fmt)
        self.write_config(max(self.history, key=lambda e: e.val_mean_dice))
        save_curve(self.run_dir, self.history, self.config)

    # ----- the run ---------------------------------------------------------------------
    def _size_budget(self, on_epoch: Any) -> tuple[int, Deadline]:
        budget = float(self.config.time_budget or 0)
        deadline = Deadline(self.started, budget)
        provisional = 10**9
        self.schedule.total, self.schedule.warmup = provisional, 4 * (WARMUP_STEPS + 1)
        t0 = time.perf_counter()
        losses: list[float] = []
        times: list[float] = []
        while len(times) < WARMUP_STEPS + 1:
            before = time.perf_counter()
            losses.append(self._one_step(provisional, None))
            times.append(time.perf_counter() - before)
            spent = time.perf_counter() - self.started
            warm = time.perf_counter() - t0
            stop = (len(times) >= 2 and warm > WARMUP_SHARE * budget) or spent > budget * 0.5
            if self.dist is not None:
                stop = self.dist.any_flag(stop)  # every rank makes the same warm-up steps
            if stop:
                break
        step_s = float(np.median(times[1:] if len(times) > 1 else times))
        if self.dist is not None:
            step_s = float(self.dist.broadcast(step_s))
        per_window = 0.5 * step_s / max(1, self.config.batch_size or 1)
        windows = self.source.validation_windows()
        self.source.limit_validation(validation_subset_size(windows, per_window, budget))
        self._validate(losses, t0, on_epoch)
        try:
            size = size_run(
                budget, time.perf_counter() - self.started, self.step, step_s, self.val_seconds
            )
        except ConfigError as exc:  # the budget is spent: end with what was trained
            self.sink(Event("train.budget", "warning", f"{exc}; the run ends now"))
            size = RunSize(self.step, 1, 1, step_s, self.val_seconds, budget)
        if self.dist is not None:
            size = self.dist.broadcast(size)
        self.schedule.total = size.total_steps
        self.schedule.warmup = min(
            max(self.schedule.warmup, size.total_steps // 20), max(1, size.total_steps // 3)
        )
        self.between = size.steps_between
        self.budget = {
            "seconds": budget,
            "warmup_steps": len(times),
            "step_seconds": round(step_s, 3),
            "validation_seconds": round(self.val_seconds, 2),
            "validation_windows": self.source.validation_windows(),
            "validation_windows_all": windows,
            "planned_steps": size.total_steps,
            "validations": size.validations,
            "steps_between_validations": size.steps_between,
        }
        self.sink(Event("train.budget", "info", size.describe(), dict(self.budget)))
        return size.total_steps, deadline

    def _resize(self, total: int, deadline: Deadline) -> int:
        """Re-size the rest of a budgeted run from the recent step time (a machine that got
        faster or slower since the warm-up): same number of validations left, more or fewer
        steps between them, the schedule stretched to the new end."""
        left_steps = total - self.step
        validations = max(1, math.ceil(left_steps / max(1, self.between)))
        seconds = deadline.end - time.perf_counter() - validations * self.val_seconds
        more = max(1, int(seconds / max(self.step_ema, 1e-6)))
        if self.dist is not None:
            more = int(self.dist.broadcast(more))
        if abs(more - left_steps) <= 0.1 * left_steps:
            return total
        total = self.step + more
        self.between = max(1, math.ceil(more / validations))
        self.schedule.total = total
        if self.budget is not None:
            self.budget["resized_steps"] = total
        return total

    def run(self, on_epoch: Callable[..., Any] | None) -> Outcome:
        """Train to the end: ``config.epochs`` epochs, or the time budget."""
        cfg = self.config
        world = 1 if self.dist is None else self.dist.world
        rank = 0 if self.dist is None else self.dist.rank
        workers = default_workers(self.device.type, world) if cfg.workers is None else cfg.workers
        pin = self.device.type == "cuda"
        self.batches = self.source.batches(self.step, rank, world, workers, pin)
        self.between = self.source.steps_per_epoch
        self.sink(
            Event(
                "train.setup",
                "info",
                f"{self.arith.reason}; data: {workers} worker process(es)"
                + (f"; {world} processes (DDP, {self.dist.backend})" if self.dist else ""),
                {"arithmetic": self.arith.reason, "workers": workers, "world_size": world},
            )
        )
        deadline: Deadline | None = None
        if cfg.time_budget is not None:
            total, deadline = self._size_budget(on_epoch)
        else:
            total = cfg.epochs * self.source.steps_per_epoch
        stopped = False
        while self.step < total and not stopped:
            end = min(total, self.step + self.between)
            t0, losses = time.perf_counter(), []
            while self.step < end:
                if deadline is not None:
                    stop = deadline.must_stop(1.2 * self.val_seconds + 1.0)
                    if self.dist is not None:
                        stop = self.dist.any_flag(stop)
                    if stop:
                        stopped = True
                        break
                losses.append(self._one_step(total, deadline))
            if losses or not self.history:
                self._validate(losses, t0, on_epoch)
            if deadline is not None and not stopped and self.step < total:
                total = self._resize(total, deadline)
        del self.batches  # ends the worker processes
        best = max(self.history, key=lambda e: e.val_mean_dice)
        if self.budget is not None:
            self.budget["steps"] = self.step
            self.budget["stopped_early"] = stopped
        if self.main:
            self.write_config(best)
            if self.source.finish is not None:
                self._finish(best)
        if self.dist is not None:
            self.dist.barrier()
        return Outcome(
            best,
            self.step,
            {**self.timing, "total": time.perf_counter() - self.started},
            self.budget,
        )

    def _finish(self, best: EpochLog) -> None:
        import torch

        self.sink(Event("train.finish", "start", "writing validation.json of the best checkpoint"))
        detail = self.best_detail if self.config.time_budget is not None else None
        if detail is None:
            weights = torch.load(
                self.run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True
            )
            self.model.load_state_dict(weights["state_dict"])
        self.source.finish(self.model, self.device, self.dtype, best.epoch, self.run_dir, detail)
