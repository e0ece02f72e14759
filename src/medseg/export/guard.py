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
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ExportError
from medseg.events import Event, EventSink
from medseg.export.accuracy import Accuracy

__all__ = ["GuardAttempt", "GuardOutcome", "guard_int8"]


@dataclass(frozen=True)
class GuardAttempt:
    """One quantisation tried by the guard."""

    num_excluded: int
    excluded: tuple[str, ...]
    dice_mean: float
    dice_drop_pts: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_excluded": self.num_excluded,
            "excluded": list(self.excluded),
            "dice_mean": self.dice_mean,
            "dice_drop_pts": self.dice_drop_pts,
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
    budget_pts: float,
    evaluate: Callable[[Path], Accuracy],
    on_event: EventSink,
    backend: str = "onnxruntime",
) -> GuardOutcome:
    """Quantise ``fp32_path`` to ``int8_path`` within ``budget_pts`` of Dice drop, or fail.

    Args:
        fp32_path: the FP32 ONNX model.
        int8_path: where the chosen INT8 model ends up.
        calibration: ``(N, C, H, W)`` float32 calibration slices.
        method: calibration method (``"max"`` or ``"entropy"``).
        budget_pts: largest acceptable Dice drop versus FP32, in points.
        evaluate: scores an ONNX file on the validation split (drop relative to FP32).
        on_event: one ``int8.guard`` info event per attempt (``data``: layers kept, drop, met).
        backend: the CPU backend whose accuracy ``evaluate`` measures (``"onnxruntime"`` or
            ``"openvino"``); the sensitivity ranking is measured on it too.

    Raises:
        ExportError: the budget cannot be met even with all but one quantised layer in FP32
            (all of them would be FP32, not INT8); the message and the events hold the table
            of attempts.
    """
    from medseg.calibration import CalibrationMethod, Int8Config, layer_sensitivity, quantize_int8

    work = Path(tempfile.mkdtemp(prefix="medseg-guard-"))
    try:
        attempts: list[GuardAttempt] = []
        tried: dict[int, tuple[Any, Accuracy, Path]] = {}

        def attempt(excluded: tuple[str, ...]) -> bool:
            path = work / f"int8-{len(excluded)}.onnx"
            config = Int8Config(method=CalibrationMethod(method), nodes_to_exclude=excluded)
            result = quantize_int8(fp32_path, path, calibration, config)
            accuracy = evaluate(path)
            met = accuracy.dice_drop_pts <= budget_pts
            attempts.append(
                GuardAttempt(
                    len(excluded), excluded, accuracy.dice_mean, accuracy.dice_drop_pts, met
                )
            )
            tried[len(excluded)] = (result, accuracy, path)
            verdict = (
                "no budget set"
                if budget_pts == float("inf")
                else f"{'within' if met else 'over'} the {budget_pts:g} pt budget"
            )
            on_event(
                Event(
                    "int8.guard",
                    "info",
                    f"INT8 with {len(excluded):2d} layer(s) kept in FP32: Dice drop "
                    f"{accuracy.dice_drop_pts:+.3f} pts on {backend} ({verdict})",
                    {
                        "kept_fp32": len(excluded),
                        "dice_drop_pts": accuracy.dice_drop_pts,
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
            if backend == "openvino":
                from medseg.calibration.sensitivity_openvino import layer_sensitivity_openvino

                sensitivities = layer_sensitivity_openvino(fp32_path, tried[0][2], calibration)
            else:
                sensitivities = layer_sensitivity(fp32_path, tried[0][2], calibration)
            ranking = tuple(s.node for s in sensitivities)
            on_event(
                Event(
                    "int8.guard",
                    "info",
                    f"most sensitive layers (measured on {backend}): "
                    + ", ".join(
                        f"{s.node} (+{s.gain_db:.1f} dB in FP32)" for s in sensitivities[:5]
                    ),
                    {"ranking": list(ranking)},
                )
            )
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
                    f"{a.num_excluded} in FP32: {a.dice_drop_pts:+.3f} pts" for a in attempts
                )
                raise ExportError(
                    f"INT8 cannot meet the {budget_pts:g} pt Dice-drop budget even with {most} of "
                    f"its {len(ranking)} quantised layers in FP32; tried: {table}; raise "
                    "--max-dice-drop or ship FP16"
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
