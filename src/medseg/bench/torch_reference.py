"""The PyTorch reference row: what a user would run without this toolkit.

A :class:`~medseg.runtime.backends.Backend` over the bundle's source checkpoint: eager FP32
(CPU or CUDA), or FP16 autocast on CUDA. It lives in ``medseg.bench``, never in the runtime,
which must not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.manifest import Manifest, file_sha256
from medseg.errors import ConfigError
from medseg.runtime.backends.base import Backend

__all__ = ["TorchBackend", "find_checkpoint", "torch_precisions"]


def find_checkpoint(bundle: Path, manifest: Manifest) -> Path:
    """The checkpoint the bundle was exported from, checked by sha256.

    Looked up as recorded (absolute, or relative to the working directory), then next to the
    bundle (``bundle/../model.pt``). ConfigError when none matches.
    """
    recorded = Path(str(manifest.source.get("checkpoint", "")))
    expected = manifest.source.get("checkpoint_sha256")
    for candidate in (recorded, Path(bundle).parent / recorded.name):
        if candidate.name and candidate.is_file() and file_sha256(candidate) == expected:
            return candidate
    raise ConfigError(
        f"the bundle's source checkpoint {recorded} (sha256 {str(expected)[:12]}) was not found "
        "here or next to the bundle: the torch reference row needs it"
    )


def torch_precisions(device: str) -> tuple[str, ...]:
    """FP32 eager everywhere; FP16 autocast on CUDA only (CPU autocast is bfloat16)."""
    return ("fp32", "fp16") if device == "cuda" else ("fp32",)


class TorchBackend(Backend):
    """Eager PyTorch on ``(N, C, H, W)`` float32 batches; logits ``(N, K, H, W)``.

    Args:
        checkpoint: the run's ``model.pt``.
        manifest: the bundle's manifest (input spec, output name, classes).
        precision: ``"fp32"``, or ``"fp16"`` (autocast, CUDA only).
        device: ``"cpu"`` or ``"cuda"``.
        threads: torch intra-op threads on CPU (``None``: torch's default).
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: Path,
        manifest: Manifest,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__(manifest.input, manifest.output_name, manifest.num_classes)
        if precision not in torch_precisions(device):
            raise ConfigError(
                f"the torch reference runs {' and '.join(torch_precisions(device))} on {device}, "
                f"not {precision}"
            )
        self.checkpoint = Path(checkpoint)
        self.precision = precision
        self.device = device
        self.threads = threads
        self._model: Any = None
        self._torch: Any = None

    def describe(self) -> str:
        mode = "autocast fp16" if self.precision == "fp16" else "eager fp32"
        return f"torch {self._torch.__version__ if self._torch else ''} ({self.device}, {mode})"

    def _load_impl(self) -> None:
        from medseg.deps import require
        from medseg.train.checkpoint import load_checkpoint

        self._torch = require("torch", "the PyTorch reference row")
        if self.threads is not None and self.device == "cpu":
            self._torch.set_num_threads(self.threads)
        self._model = load_checkpoint(self.checkpoint).model.to(self.device).eval()

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        torch = self._torch
        x = torch.from_numpy(batch).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"),
        ):
            if self.device == "cuda":
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                out = self._model(x)
                end.record()
                end.synchronize()
                compute_ms = float(start.elapsed_time(end))
            else:
                import time

                t0 = time.perf_counter_ns()
                out = self._model(x)
                compute_ms = (time.perf_counter_ns() - t0) / 1e6
        return out.float().cpu().numpy(), compute_ms

    def _close_impl(self) -> None:
        self._model = None
