"""Training curves (``medseg.viz.curves``) as a run writes them (``medseg.train.rundir``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medseg.train.config import TrainConfig
from medseg.train.rundir import CURVE_NAME, EpochLog, save_curve
from medseg.viz.curves import save_training_curve

ROWS = [  # (step, mean Dice) of four validation points
    EpochLog(i + 1, 1.0 / (i + 1), {"A": d, "B": d}, d, 1e-3, 10.0, False, step)
    for i, (step, d) in enumerate([(5, 0.1), (76, 0.6), (165, 0.8), (236, 0.7)])
]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure the curve code closes, kept open to be inspected."""
    import matplotlib.pyplot as plt

    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def test_a_budget_run_draws_against_the_step_and_an_epochs_run_against_the_epoch(
    tmp_path: Path, figures: list[Any]
) -> None:
    """A budgeted run validates every N steps, so its rows are validation points: its curve's
    x axis is the optimisation step; an ``--epochs`` run keeps epochs."""
    (tmp_path / "budget").mkdir()
    (tmp_path / "epochs").mkdir()
    save_curve(tmp_path / "budget", ROWS, TrainConfig(time_budget=600.0))
    save_curve(tmp_path / "epochs", ROWS, TrainConfig(epochs=4))
    by_step, by_epoch = (fig.axes[1] for fig in figures)
    assert by_step.get_xlabel() == "optimisation step" and by_epoch.get_xlabel() == "epoch"
    assert list(by_step.lines[0].get_xdata()) == [5, 76, 165, 236]
    assert list(by_epoch.lines[0].get_xdata()) == [1, 2, 3, 4]
    legend = [t.get_text() for t in by_step.get_legend().get_texts()]
    assert "best (step 165)" in legend
    for run in ("budget", "epochs"):
        assert (tmp_path / run / CURVE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_axis_is_refused(tmp_path: Path) -> None:
    rows = [row.__dict__ for row in ROWS]
    with pytest.raises(ValueError, match="x_axis"):
        save_training_curve(rows, tmp_path / "x.png", x_axis="seconds")
