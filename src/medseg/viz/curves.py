"""Training curves: loss and validation Dice per epoch or per optimisation step, saved as PNG
(matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file
from medseg.deps import require

__all__ = ["save_training_curve"]


def save_training_curve(
    epochs: Sequence[Mapping[str, Any]], path: Path, title: str = "", x_axis: str = "epoch"
) -> Path:
    """Plot ``train_loss`` and ``val_dice`` (per class and mean) against the epoch number, or
    the optimisation step.

    Args:
        epochs: one mapping per validation with ``epoch``, ``train_loss``, ``val_dice`` (class
            name -> Dice) and ``val_mean_dice`` (and ``step`` for ``x_axis="step"``), as in a
            run's ``metrics.jsonl``.
        path: PNG to write (atomically).
        title: figure title.
        x_axis: ``"epoch"`` or ``"step"`` (a time-budget run validates every N steps, so its
            "epochs" are validation points, not passes over the data).
    """
    require("matplotlib", "training curves")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x_axis not in ("epoch", "step"):
        raise ValueError(f"x_axis must be 'epoch' or 'step', not {x_axis!r}")
    label = "epoch" if x_axis == "epoch" else "optimisation step"
    x = [e[x_axis] for e in epochs]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(x, [e["train_loss"] for e in epochs], marker=".", color="black")
    ax_loss.set_xlabel(label)
    ax_loss.set_ylabel("training loss (Dice + CE)")
    ax_loss.grid(alpha=0.3)
    classes = list(epochs[0]["val_dice"]) if epochs else []
    for name in classes:
        ax_dice.plot(x, [e["val_dice"][name] for e in epochs], marker=".", label=name)
    ax_dice.plot(x, [e["val_mean_dice"] for e in epochs], color="black", lw=2, label="mean")
    best = max(epochs, key=lambda e: e["val_mean_dice"]) if epochs else None
    if best is not None:
        ax_dice.axvline(
            best[x_axis], color="grey", ls="--", lw=1, label=f"best ({x_axis} {best[x_axis]})"
        )
    ax_dice.set_xlabel(label)
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    ax_dice.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
