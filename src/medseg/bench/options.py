"""What ``medseg bench`` measures: :class:`BenchOptions`, validated when made, and the
decisions that follow from them alone (the torch reference's device, ``--tta``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medseg.bench.evaluation import Split
from medseg.bundle.entries import PRECISIONS, RUNTIME_PRECISIONS
from medseg.errors import ConfigError
from medseg.names import BENCH_BACKENDS as _BENCH_BACKENDS
from medseg.options import check_threads

__all__ = ["BENCH_BACKENDS", "BenchOptions", "auto_includes_torch", "torch_device", "use_tta"]

BENCH_BACKENDS = _BENCH_BACKENDS  # medseg.names


@dataclass(frozen=True)
class BenchOptions:
    """What to measure.

    Attributes:
        backends: ``("auto",)`` (ONNX Runtime, OpenVINO when installed, TensorRT when usable,
            the torch reference when installed and CUDA is usable: :func:`auto_includes_torch`)
            or names from :data:`BENCH_BACKENDS`.
        precisions: subset of fp32/fp16/bf16/int8; every file one must be in the bundle
            (``bf16`` runs the FP32 file on OpenVINO, and is the torch reference's CPU
            autocast; a backend without a precision gets a skipped row saying why).
        batches: batch sizes, each within the bundle's batch range.
        warmup: untimed calls before timing.
        iters: timed calls per repeat.
        repeats: timing repeats (their p50s feed the noise-aware baseline comparison).
        split: ``"val"`` (the bundle's recorded validation slices), ``"test"``, ``"all"``.
        threads: CPU threads of ONNX Runtime and torch (``None``: library defaults).
        max_cases: evaluate at most this many cases (``None``: all).
        device: torch reference device, ``"cpu"`` or ``"cuda"`` (``None``: CUDA if present).
        tta: mirroring test-time augmentation (sliding-window bundles).
        postprocess: apply the bundle's per-class post-processing.
    """

    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] = PRECISIONS
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 3
    iters: int = 20
    repeats: int = 3
    split: Split = "val"
    threads: int | None = None
    max_cases: int | None = None
    device: str | None = None
    overlays: bool = True
    tta: bool = False
    postprocess: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in ("auto", *BENCH_BACKENDS)]
        if unknown or not self.backends:
            raise ConfigError(
                f"--backends {','.join(self.backends)}: accepted auto or "
                + ", ".join(BENCH_BACKENDS)
            )
        bad = [p for p in self.precisions if p not in RUNTIME_PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(
                f"--precisions {bad or '(none)'}: accepted {', '.join(RUNTIME_PRECISIONS)}"
            )
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch {self.batches}: batch sizes must be >= 1")
        for name, value, least in (
            ("warmup", self.warmup, 0),
            ("iters", self.iters, 1),
            ("repeats", self.repeats, 1),
        ):
            if value < least:
                raise ConfigError(f"--{name} {value} must be >= {least}")
        if self.split not in ("val", "test", "all"):
            raise ConfigError(f"--split {self.split!r}: accepted val, test, all")
        if self.max_cases is not None and self.max_cases < 1:
            raise ConfigError(f"--max-cases {self.max_cases} must be >= 1")
        check_threads(self.threads, "--threads")


def auto_includes_torch(options: BenchOptions) -> bool:
    """Whether ``--backends auto`` adds the PyTorch reference row: on CUDA only.

    On a CPU the eager reference is timed like a deployment backend but is none: on the
    12-case cohort (2 shared cores, load 4-7) its batch-8 timing loop alone took about 4.5 of
    the default bench's 10.4 minutes (4.2 s per call, 63 calls). ``--backends ...,torch``
    still adds it anywhere; the export already checks ONNX-vs-PyTorch parity.
    """
    return torch_device(options) == "cuda"


def torch_device(options: BenchOptions) -> str:
    return options.device or ("cuda" if _cuda_usable() else "cpu")


def _cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def use_tta(options: BenchOptions) -> bool | None:
    """``--tta`` or the recipe kind's default (nnU-Net bundles mirror as nnU-Net does)."""
    return True if options.tta else None
