"""The INT8 accuracy guard: keep the fewest, most sensitive layers in higher precision.

When the fully quantised model misses the Dice-drop budget, the quantised convolutions are
ranked by measured sensitivity (:func:`medseg.calibration.layer_sensitivity`: how much the
logits' SNR against FP32 improves when that one layer runs in FP32, leave-one-out, on a
few calibration slices), and the top ``k`` are
excluded from quantisation for ``k = 1, 2, 4, ...`` until the budget is met; a bisection
between the last failing and the first passing ``k`` then finds the fewest. Every attempt
is re-quantised and re-evaluated on the validation split, and recorded.

The budget is met on one backend, the one the bundle is meant for (``backend``): its
``evaluate`` scores the attempts, and on OpenVINO the ranking is measured on OpenVINO too
(:func:`medseg.calibration.sensitivity_openvino.layer_sensitivity_openvino`), because the
layers OpenVINO's INT8 loses accuracy in are not the ones ONNX Runtime's are.

The budget (:class:`Budget`) is on the mean Dice drop and on the worst class's drop (a thin
class cannot vanish inside a good mean); the export's default is :data:`DEFAULT_BUDGET`
(0.3 pt mean, 1 pt per class). The same search guards the CPU INT8 file
(:mod:`medseg.export.cpu_int8`): ``quantize`` and ``rank`` say how a file is made and how its
layers are ranked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, ExportError
from medseg.events import Event, EventSink
from medseg.export.accuracy import Accuracy

__all__ = [
    "DEFAULT_BUDGET",
    "Budget",
    "GuardAttempt",
    "GuardOutcome",
    "Quantize",
    "guard_int8",
]

#: ``quantize(path, excluded_nodes)``: writes an INT8 file with those nodes left in FP32,
#: returns the quantiser's result (its ``excluded_nodes`` are what the manifest records).
Quantize = Callable[[Path, tuple[str, ...]], Any]


@dataclass(frozen=True)
class Budget:
    """The INT8 accuracy budget, in Dice points (x100) below FP32 on the same backend.

    Attributes:
        mean_pts: largest mean Dice drop; ``None``: no budget (measure and record only).
        class_pts: largest drop of any one class; ``None``: the mean only.
    """

    mean_pts: float | None = 0.3
    class_pts: float | None = 1.0

    def __post_init__(self) -> None:
        for name, value in (("mean_pts", self.mean_pts), ("class_pts", self.class_pts)):
            if value is not None and not value >= 0:
                raise ConfigError(f"INT8 budget {name} {value} must be >= 0 points or None")

    @property
    def active(self) -> bool:
        return self.mean_pts is not None or self.class_pts is not None

    def met(self, accuracy: Accuracy) -> bool:
        """Whether ``accuracy`` (drops against FP32 of its backend) is within the budget."""
        mean_ok = self.mean_pts is None or accuracy.dice_drop_pts <= self.mean_pts
        class_ok = self.class_pts is None or accuracy.worst_class_drop_pts <= self.class_pts
        return mean_ok and class_ok

    def describe(self) -> str:
        """E.g. ``"0.3 pt mean / 1 pt per class"``, or ``"no budget"``."""
        parts = []
        if self.mean_pts is not None:
            parts.append(f"{self.mean_pts:g} pt mean")
        if self.class_pts is not None:
            parts.append(f"{self.class_pts:g} pt per class")
        return " / ".join(parts) if parts else "no budget"

    def to_dict(self) -> dict[str, float | None]:
        return {"max_dice_drop_pts": self.mean_pts, "max_class_drop_pts": self.class_pts}


#: The export's default: 0.3 pt mean, 1 pt for the worst class.
DEFAULT_BUDGET = Budget(0.3, 1.0)


@dataclass(frozen=True)
class GuardAttempt:
    """One quantisation tried by the guard."""

    num_excluded: int
    excluded: tuple[str, ...]
    dice_mean: float
    dice_drop_pts: float
    met: bool
    worst_class_drop_pts: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_excluded": self.num_excluded,
            "excluded": list(self.excluded),
            "dice_mean": self.dice_mean,
            "dice_drop_pts": self.dice_drop_pts,
            "worst_class_drop_pts": self.worst_class_drop_pts,
            "met": self.met,
        }


@dataclass(frozen=True)
class GuardOutcome:
    """The chosen INT8 model (already written to the requested path) and every attempt."""

    result: Any  # medseg.calibration.Int8Result
    accuracy: Accuracy
    attempts: tuple[GuardAttempt, ...]
    ranking: tuple[str, ...]


def guard_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: np.ndarray,
    method: str,
    budget: Budget | float,
    evaluate: Callable[[Path], Accuracy],
    on_event: EventSink,
    backend: str = "onnxruntime",
    *,
    quantize: Quantize | None = None,
    rank: Callable[[Path], tuple[str, ...]] | None = None,
    label: str = "INT8",
) -> GuardOutcome:
    """Quantise ``fp32_path`` to ``int8_path`` within the Dice-drop ``budget``, or fail.

    Args:
        fp32_path: the FP32 ONNX model.
        int8_path: where the chosen INT8 model ends up.
        calibration: ``(N, C, H, W)`` float32 calibration slices.
        method: calibration method (``"max"`` or ``"entropy"``) of the default quantiser.
        budget: a :class:`Budget`, or a mean-drop budget in points (``inf``: none).
        evaluate: scores an ONNX file on the validation split (drops relative to FP32).
        on_event: one ``int8.guard`` info event per attempt (``data``: layers kept, drop, met).
        backend: the CPU backend whose accuracy ``evaluate`` measures (``"onnxruntime"`` or
            ``"openvino"``); the default ranking is measured on it too.
        quantize: makes one attempt's file (see :data:`Quantize`); default: modelopt's Q/DQ
            (:func:`medseg.calibration.quantize_int8`) with ``method``.
        rank: ``rank(first_attempt_path)`` -> node names, most sensitive first; default:
            leave-one-out sensitivity of the first attempt on ``backend``.
        label: the file's name in the events and errors.

    Raises:
        ExportError: the budget cannot be met even with all but one quantised layer in FP32
            (all of them would be FP32, not INT8); the message and the events hold the table
            of attempts.
    """
    from medseg.calibration import CalibrationMethod, Int8Config, layer_sensitivity, quantize_int8

    if not isinstance(budget, Budget):
        budget = Budget(None if budget == float("inf") else float(budget), None)

    def modelopt(path: Path, excluded: tuple[str, ...]) -> Any:
        config = Int8Config(method=CalibrationMethod(method), nodes_to_exclude=excluded)
        return quantize_int8(fp32_path, path, calibration, config)

    def sensitivity(first: Path) -> tuple[str, ...]:
        if backend == "openvino":
            from medseg.calibration.sensitivity_openvino import layer_sensitivity_openvino

            found = layer_sensitivity_openvino(fp32_path, first, calibration)
        else:
            found = layer_sensitivity(fp32_path, first, calibration)
        on_event(
            Event(
                "int8.guard",
                "info",
                f"most sensitive layers (measured on {backend}): "
                + ", ".join(f"{s.node} (+{s.gain_db:.1f} dB in FP32)" for s in found[:5]),
                {"ranking": [s.node for s in found]},
            )
        )
        return tuple(s.node for s in found)

    make = quantize or modelopt
    ranker = rank or sensitivity
    work = Path(tempfile.mkdtemp(prefix="medseg-guard-"))
    try:
        attempts: list[GuardAttempt] = []
        tried: dict[int, tuple[Any, Accuracy, Path]] = {}

        def attempt(excluded: tuple[str, ...]) -> bool:
            path = work / f"int8-{len(excluded)}.onnx"
            result = make(path, excluded)
            accuracy = evaluate(path)
            met = budget.met(accuracy)
            attempts.append(
                GuardAttempt(
                    len(excluded),
                    excluded,
                    accuracy.dice_mean,
                    accuracy.dice_drop_pts,
                    met,
                    accuracy.worst_class_drop_pts,
                )
            )
            tried[len(excluded)] = (result, accuracy, path)
            verdict = (
                "no budget set"
                if not budget.active
                else f"{'within' if met else 'over'} the {budget.describe()} budget"
            )
            on_event(
                Event(
                    "int8.guard",
                    "info",
                    f"{label} with {len(excluded):2d} layer(s) kept in FP32: Dice drop "
                    f"{accuracy.dice_drop_pts:+.3f} pts (worst class "
                    f"{accuracy.worst_class_drop_pts:+.3f}) on {backend} ({verdict})",
                    {
                        "file": label,
                        "kept_fp32": len(excluded),
                        "dice_drop_pts": accuracy.dice_drop_pts,
                        "worst_class_drop_pts": accuracy.worst_class_drop_pts,
                        "met": met,
                        "backend": backend,
                    },
                )
            )
            return met

        ranking: tuple[str, ...] = ()
        if attempt(()):
            chosen = 0
        else:
            ranking = ranker(tried[0][2])
            # At most all but one layer: with every layer in FP32 the model is no longer INT8.
            most = len(ranking) - 1
            low, high = 0, None
            k = 1
            while k <= most:
                if attempt(ranking[:k]):
                    high = k
                    break
                low = k
                k = most if k * 2 > most > k else k * 2
            if high is None:
                table = "; ".join(
                    f"{a.num_excluded} in FP32: {a.dice_drop_pts:+.3f} pts "
                    f"(worst class {a.worst_class_drop_pts:+.3f})"
                    for a in attempts
                )
                raise ExportError(
                    f"{label} cannot meet the {budget.describe()} Dice-drop budget on {backend} "
                    f"even with {most} of its {len(ranking)} quantised layers in FP32; tried: "
                    f"{table}; raise --max-dice-drop, pass --max-dice-drop none, or ship FP16"
                )
            while high - low > 1:
                mid = (low + high) // 2
                if attempt(ranking[:mid]):
                    high = mid
                else:
                    low = mid
            chosen = high
        result, accuracy, path = tried[chosen]
        shutil.copyfile(path, int8_path)
        return GuardOutcome(result, accuracy, tuple(attempts), ranking)
    finally:
        shutil.rmtree(work, ignore_errors=True)
