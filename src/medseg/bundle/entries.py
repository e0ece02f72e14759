"""The parts of a bundle manifest: file names and digests, the input contract, precision entries.

:class:`InputSpec` (layout, channels, the allowed shape ranges as :class:`DimRange`),
:class:`PrecisionEntry` (one ONNX file: name, sha256, size, parity and accuracy measured at
export; :class:`FoldFile` per fold of an ensemble), the schema versions and file names, and
the digests (:func:`file_sha256`, :func:`ensemble_sha256`).
:class:`~medseg.bundle.manifest.Manifest` holds them; this module imports only the standard
library and pydantic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.names import PRECISIONS as _PRECISIONS
from medseg.names import RUNTIME_PRECISIONS as _RUNTIME_PRECISIONS
from medseg.schema import FORBID_EXTRA, StrictInt, StrictStr

__all__ = [
    "MANIFEST_NAME",
    "NNUNET_SCHEMA_VERSION",
    "ONNX_FILES",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "DimRange",
    "FoldFile",
    "InputSpec",
    "PrecisionEntry",
    "ensemble_sha256",
    "file_sha256",
    "fold_dir",
]

SCHEMA_VERSION = 2
#: Versions this medseg reads (1: before plans, windows and post-processing).
SUPPORTED_SCHEMA_VERSIONS = (1, 2, 3)
#: The version a manifest with nnU-Net preprocessing, folds or a 3D input must carry.
NNUNET_SCHEMA_VERSION = 3
MANIFEST_NAME = "medseg.json"
PRECISIONS = _PRECISIONS  # medseg.names, re-exported here
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
RUNTIME_PRECISIONS = _RUNTIME_PRECISIONS  # medseg.names, re-exported here


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fold_dir(fold: str) -> str:
    """Folder of one fold's ONNX files inside a bundle (``fold_<k>``)."""
    return f"fold_{fold}"


def ensemble_sha256(digests: dict[str, str]) -> str:
    """The identity of a fold ensemble: sha256 of ``fold:digest`` lines in fold order."""
    text = "".join(f"{fold}:{digest}\n" for fold, digest in digests.items())
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class DimRange:
    """Allowed sizes of one input dimension (an optimisation-profile axis).

    ``min <= opt <= max``; ``opt`` is the size engines are tuned for.
    """

    __pydantic_config__ = FORBID_EXTRA

    min: StrictInt
    opt: StrictInt
    max: StrictInt

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"shape range {self.min}:{self.opt}:{self.max} (min:opt:max) must satisfy "
                "1 <= min <= opt <= max"
            )

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.is_static else f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class InputSpec:
    """The network input: ``(N, C, H, W)`` float32 and the sizes it accepts.

    Attributes:
        name: ONNX input name.
        channels: ``C``.
        batch, height, width: allowed ranges of ``N``, ``H``, ``W`` (H and W multiples of 16).
        layout: ``"NCHW"``, or ``"NCDHW"`` for a 3D patch (schema 3, with ``depth``).
        dtype: always ``"float32"`` (precision lives inside the graph; I/O stays FP32).
        depth: allowed ``D`` of a 3D input (static); ``None`` for 2D.
    """

    __pydantic_config__ = FORBID_EXTRA

    name: StrictStr
    channels: StrictInt
    batch: DimRange
    height: DimRange
    width: DimRange
    layout: StrictStr = "NCHW"
    dtype: StrictStr = "float32"
    depth: DimRange | None = None

    def __post_init__(self) -> None:
        expected = "NCHW" if self.depth is None else "NCDHW"
        if self.layout != expected:
            raise ConfigError(
                f"input.layout {self.layout!r} must be {expected!r} "
                f"({'no depth' if self.depth is None else 'with input.depth'})"
            )
        if self.depth is not None and not (
            self.depth.is_static and self.height.is_static and self.width.is_static
        ):
            raise ConfigError(
                f"a 3D input needs a static patch (only the batch varies), got depth "
                f"{self.depth}, height {self.height}, width {self.width}"
            )

    @classmethod
    def static_patch(
        cls, name: str, channels: int, batch: DimRange, patch: tuple[int, ...]
    ) -> InputSpec:
        """A static ``(H, W)`` (NCHW) or ``(D, H, W)`` (NCDHW) patch; only the batch varies."""
        static = [DimRange(p, p, p) for p in patch]
        depth = static[0] if len(patch) == 3 else None
        layout = "NCHW" if depth is None else "NCDHW"
        return cls(name, channels, batch, static[-2], static[-1], layout=layout, depth=depth)

    @property
    def patch(self) -> tuple[int, ...]:
        """The static spatial patch ``(H, W)`` or ``(D, H, W)`` (the minima)."""
        hw = (self.height.min, self.width.min)
        return hw if self.depth is None else (self.depth.min, *hw)


@dataclass(frozen=True)
class FoldFile:
    """One fold's ONNX file of a precision (``fold_<k>/<file>``)."""

    __pydantic_config__ = FORBID_EXTRA

    file: StrictStr
    sha256: StrictStr
    size_bytes: StrictInt


@dataclass(frozen=True)
class PrecisionEntry:
    """One ONNX file of the bundle and what was measured on it at export.

    Attributes:
        file: file name inside the bundle.
        sha256: hex digest of the file.
        size_bytes: file size.
        parity: agreement with the reference (FP32: PyTorch; FP16/INT8: the FP32 ONNX) on real
            slices: ``max_abs_diff`` of logits and ``argmax_agreement`` in [0, 1].
        accuracy: on the validation split with ONNX Runtime CPU: ``dice_mean``,
            ``dice_per_class``, ``dice_drop_pts`` (FP32 minus this, in Dice points = x100),
            ``argmax_agreement`` with FP32.
        details: precision-specific facts (FP16: op types kept in FP32; INT8: calibration
            method, quantised and excluded nodes, the accuracy-guard attempts).
        folds: fold ensembles (schema 3): ``{fold: FoldFile}``, the file inside
            ``fold_<k>/``; then ``sha256`` is :func:`ensemble_sha256` of their digests,
            ``size_bytes`` their sum, and parity/accuracy are the ensemble's.
    """

    __pydantic_config__ = FORBID_EXTRA

    file: StrictStr
    sha256: StrictStr
    size_bytes: StrictInt
    parity: dict[str, float]
    accuracy: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    folds: dict[str, FoldFile] | None = None
