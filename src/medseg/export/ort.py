"""Run an ONNX file in ONNX Runtime (CPU) on batches of slices, for parity and accuracy checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Parity", "compare_logits", "run_onnx"]


def run_onnx(path: Path, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Logits ``(N, K, H, W)`` float32 of an ONNX model on ``(N, C, H, W)`` float32 slices."""
    from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from medseg.runtime.backends.session import run_batches

    return run_batches(OnnxRuntimeRunner(path), images, batch_size)


@dataclass(frozen=True)
class Parity:
    """Agreement of logits with a reference: max absolute difference, argmax agreement [0, 1]."""

    max_abs_diff: float
    argmax_agreement: float

    def to_dict(self) -> dict[str, float]:
        return {"max_abs_diff": self.max_abs_diff, "argmax_agreement": self.argmax_agreement}


def compare_logits(reference: np.ndarray, actual: np.ndarray) -> Parity:
    """Compare two ``(N, K, H, W)`` logit arrays."""
    diff = float(np.max(np.abs(reference.astype(np.float32) - actual.astype(np.float32))))
    agree = float(np.mean(reference.argmax(axis=1) == actual.argmax(axis=1)))
    return Parity(diff, agree)
