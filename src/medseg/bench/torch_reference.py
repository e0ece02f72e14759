"""The PyTorch reference row: what a user would run without this toolkit.

A :class:`~medseg.runtime.backends.Backend` over the bundle's source checkpoint: eager FP32
(CPU or CUDA), FP16 autocast on CUDA, or BF16 autocast on a CPU with native BF16 (what a
PyTorch user would run against OpenVINO's BF16). PyTorch has no eager INT8 of these
networks: the bench prints its INT8 row as skipped, with the reason
(:func:`torch_unsupported`). It lives in ``medseg.bench``, never in the runtime,
which must not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import file_sha256
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError, ModelMismatchError
from medseg.runtime.backends.base import Backend, ModelIO

__all__ = ["TorchBackend", "find_checkpoint", "torch_precisions", "torch_unsupported"]


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
    """FP32 eager everywhere; FP16 autocast on CUDA; BF16 autocast on a CPU with native BF16."""
    if device == "cuda":
        return ("fp32", "fp16")
    from medseg.runtime.cpu import cpu_features

    return ("fp32", "bf16") if cpu_features().bf16 is not None else ("fp32",)


def torch_unsupported(precision: str, device: str) -> str | None:
    """Why the torch reference has no ``precision`` row on ``device`` (``None``: it has)."""
    if precision in torch_precisions(device):
        return None
    if precision == "int8":
        return (
            "the PyTorch reference has no INT8: eager PyTorch runs these networks in float "
            "(INT8 is the exported Q/DQ file, on the other backends)"
        )
    if precision == "fp16":
        return "the PyTorch reference runs FP16 autocast on CUDA only (CPU autocast is bf16)"
    if precision == "bf16" and device == "cpu":
        from medseg.runtime.cpu import require_bf16

        try:
            require_bf16()
        except ConfigError as exc:
            return str(exc)
    return f"the PyTorch reference runs {', '.join(torch_precisions(device))} on {device}"


class TorchBackend(Backend):
    """Eager PyTorch on ``(N, C, H, W)`` float32 batches; logits ``(N, K, H, W)``.

    Args:
        checkpoint: the run's ``model.pt``.
        manifest: the bundle's manifest (input spec, output name, classes).
        precision: ``"fp32"``, ``"fp16"`` (autocast, CUDA only) or ``"bf16"`` (autocast,
            CPU with native BF16 only).
        device: ``"cpu"`` or ``"cuda"``.
        threads: torch intra-op threads on CPU (``None``: torch's default).
    """

    name = "torch"

    @classmethod
    def available(cls) -> str | None:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (the reference row needs medseg-edge[train])"
        return None

    def __init__(
        self,
        checkpoint: Path,
        manifest: Manifest,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__(manifest.input, manifest.output_name, manifest.num_classes)
        why = torch_unsupported(precision, device)
        if why is not None:
            raise ConfigError(why)
        self.checkpoint = Path(checkpoint)
        self.precision = precision
        self.device = device
        self.threads = threads
        self._model: Any = None
        self._torch: Any = None

    def describe(self) -> str:
        mode = "eager fp32" if self.precision == "fp32" else f"autocast {self.precision}"
        return f"torch {self._torch.__version__ if self._torch else ''} ({self.device}, {mode})"

    def _load_impl(self) -> None:
        from medseg.deps import require
        from medseg.train.checkpoint import load_checkpoint

        self._torch = require("torch", "the PyTorch reference row")
        if self.threads is not None and self.device == "cpu":
            self._torch.set_num_threads(self.threads)
        self._model = load_checkpoint(self.checkpoint).model.to(self.device).eval()

    def _model_io(self) -> ModelIO:
        """The checkpoint's network run once on a zero batch at the manifest's smallest
        slice: a PyTorch module declares no shapes, its output on that batch is what it has."""
        spec = self.input_spec
        inner = () if spec.depth is None else (spec.depth.min,)
        shape = (1, spec.channels, *inner, spec.height.min, spec.width.min)
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self._model(torch.zeros(shape, device=self.device))
        except RuntimeError as exc:  # e.g. a convolution given another channel count
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise ModelMismatchError(
                f"{self.checkpoint}: the network fails on a {list(shape)} batch shaped as "
                f"medseg.json input.channels ({spec.channels}) and sizes describe ({first}); "
                "the bundle is not from this checkpoint"
            ) from None
        # only channels and classes are fixed in a PyTorch module; N and the spatial sizes
        # are whatever the batch has
        free = (None,) * (len(shape) - 2)
        return ModelIO(
            str(self.checkpoint),
            {spec.name: (None, spec.channels, *free)},
            {self.output_name: (None, int(out.shape[1]), *free)},
        )

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        torch = self._torch
        x = torch.from_numpy(batch).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device,
                dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16,
                enabled=self.precision != "fp32",
            ),
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
