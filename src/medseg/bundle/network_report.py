"""What TensorRT made of an ONNX file: the network report stored in an engine's sidecar.

``medseg build`` (both runtimes) walks the network that TensorRT's own ONNX parser produced
and records, per precision, the layer count and types, how each convolution will run (INT8
when Q/DQ sits on both its input and its weights, FP16 when its output is half, FP32
otherwise), which activation tensors stay FP32, and one warning per convolution of an INT8
file whose Q/DQ pair is missing on one side (TensorRT then runs it unquantised). This module
holds the plain record (read by the runtime, the bench report and the CLI) and imports
nothing heavy; the walk itself is ``medseg.build.network.network_report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, StrictInt, StrictStr, parse

__all__ = ["CONV_PRECISIONS", "NetworkReport"]

#: How a convolution runs, as the report counts them.
CONV_PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class NetworkReport:
    """The parsed network of one ONNX file.

    Attributes:
        layer_count: layers of the TensorRT network (constants and Q/DQ layers included).
        layer_types: layer count per TensorRT ``LayerType`` name, e.g. ``{"CONVOLUTION": 88}``.
        convolutions: convolution count per precision it runs in, every key of
            :data:`CONV_PRECISIONS` present (missing ones are filled with 0).
        partial_qdq: convolutions with Q/DQ on one side only, each ``"name: side"`` where
            side is ``"input"`` or ``"weights"`` (the side that lacks it).
        fp32_convolutions: names of the convolutions that run in FP32 in an FP16/INT8 file
            (layers kept in higher precision on purpose, or missed).
        fp32_tensors: names of activation tensors that stay FP32 (not half, not quantised
            by a following Q layer); in an FP32 file, every activation.
        warnings: one line per problem a reviewer should see (partial Q/DQ, INT8 file with no
            INT8 convolution).
    """

    __pydantic_config__ = FORBID_EXTRA

    layer_count: StrictInt
    layer_types: dict[str, StrictInt]
    convolutions: dict[str, StrictInt]
    partial_qdq: tuple[StrictStr, ...] = ()
    fp32_convolutions: tuple[StrictStr, ...] = ()
    fp32_tensors: tuple[StrictStr, ...] = ()
    warnings: tuple[StrictStr, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.layer_count < 0 or any(v < 0 for v in self.layer_types.values()):
            raise ConfigError(f"negative layer count in {self.layer_count}, {self.layer_types}")
        unknown = sorted(set(self.convolutions) - set(CONV_PRECISIONS))
        if unknown:
            raise ConfigError(f"convolution precisions {unknown} are not {CONV_PRECISIONS}")
        counts = {p: int(self.convolutions.get(p, 0)) for p in CONV_PRECISIONS}
        object.__setattr__(self, "convolutions", counts)  # every precision, in one order

    @property
    def num_convolutions(self) -> int:
        return sum(self.convolutions.values())

    def summary(self) -> str:
        """One line: ``"1511 layers; conv int8 86/88, fp32 2; 120 FP32 tensors"``."""
        convs = ", ".join(f"{p} {n}" for p in CONV_PRECISIONS if (n := self.convolutions.get(p, 0)))
        return (
            f"{self.layer_count} layers; {self.num_convolutions} conv ({convs or 'none'}); "
            f"{len(self.fp32_tensors)} FP32 tensors"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_count": self.layer_count,
            "layer_types": dict(self.layer_types),
            "convolutions": dict(self.convolutions),
            "partial_qdq": list(self.partial_qdq),
            "fp32_convolutions": list(self.fp32_convolutions),
            "fp32_tensors": list(self.fp32_tensors),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "network report") -> NetworkReport:
        """Parse a network report (a sidecar's ``network``); ConfigError naming the wrong key."""
        return parse(cls, data, where)
