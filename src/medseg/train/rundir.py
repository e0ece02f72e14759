"""The run directory of a training run: checks before a run, metrics rows, the curve."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.outputs import KINDS, Input, Output, guard, interrupted_run
from medseg.train.checkpoint import LAST_NAME
from medseg.train.config import TrainConfig

__all__ = [
    "CURVE_NAME",
    "METRICS_NAME",
    "EpochLog",
    "append_metrics",
    "check_run_dir",
    "clear_run_dir",
    "read_metrics",
    "save_curve",
]

METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "training_curve.png"


@dataclass(frozen=True)
class EpochLog:
    """One validation point of a run (one line of ``metrics.jsonl``); Dice in [0, 1].

    ``epoch`` counts validation points (an epoch of ``--epochs`` runs; a stretch of
    ``steps`` of a ``--time-budget`` run); ``step`` is the optimisation step it ended at.
    """

    epoch: int
    train_loss: float
    val_dice: dict[str, float]
    val_mean_dice: float
    lr: float
    seconds: float
    best: bool
    step: int = 0


def check_run_dir(run_dir: Path, dataset_dir: Path, resume: bool, force: bool) -> None:
    """Refuse what would lose data; nothing is deleted here (see :func:`clear_run_dir`).

    The output guard (:func:`medseg.outputs.guard`): the run may not be, contain or lie in
    the dataset; ``force`` replaces only a run (a run interrupted before its first checkpoint
    is replaced without it); ``resume`` continues only a run.
    """
    run_dir = Path(run_dir)
    ours = run_dir.is_dir() and KINDS["run"].recognise(run_dir) and not interrupted_run(run_dir)
    if ours and not resume and not force:
        raise ConfigError(
            f"run directory {run_dir} is not empty; pass --force to replace it or --resume "
            "to continue it"
        )
    guard(
        [Output("run_dir", run_dir, "run", "update" if resume else "replace")],
        [Input("dataset_dir", dataset_dir)],
        force=force,
    )
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


def clear_run_dir(run_dir: Path) -> None:
    """Start a new run: remove an earlier run (allowed by --force) once the inputs are valid."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)
    run_dir.mkdir()


def append_metrics(run_dir: Path, log: EpochLog) -> None:
    """Add one row to ``metrics.jsonl``."""
    with (run_dir / METRICS_NAME).open("a") as f:
        f.write(json.dumps(log.__dict__) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
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


def save_curve(run_dir: Path, history: list[EpochLog], config: TrainConfig) -> None:
    """``training_curve.png`` of the rows so far."""
    from medseg.viz.curves import save_training_curve

    title = f"{config.arch} ({config.variant}), seed {config.seed}"
    # a time-budget run validates every N steps: its rows are validation points, not epochs
    x_axis = "epoch" if config.time_budget is None else "step"
    save_training_curve([e.__dict__ for e in history], run_dir / CURVE_NAME, title, x_axis)
