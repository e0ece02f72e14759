"""Normalisation choice and the conv-norm-act unit shared by the blocks.

BatchNorm is the default of every network in :mod:`medseg.models`. In eval mode it is an
affine map per channel that the ONNX exporter (and TensorRT) folds into the preceding
convolution, so the deployed graph has no normalisation node at all: nothing to overflow in
FP16 and nothing to calibrate separately in INT8 (Q/DQ sits on the folded conv weights).
GroupNorm is offered for training with very small batches only: ``torch.onnx.export``
(opset 18) lowers it to ``Reshape -> InstanceNormalization -> Reshape``, and
InstanceNormalization is a known source of FP16 failures in TensorRT. InstanceNorm itself
is not offered.
"""

from __future__ import annotations

import math

from torch import nn

from medseg.errors import ConfigError

__all__ = ["GROUP_NORM_MAX_GROUPS", "NORM_KINDS", "ConvNormAct", "check_norm", "make_norm"]

#: Accepted values of a ``norm`` option.
NORM_KINDS: tuple[str, ...] = ("batch", "group")

#: GroupNorm uses ``gcd(channels, GROUP_NORM_MAX_GROUPS)`` groups.
GROUP_NORM_MAX_GROUPS = 8


def check_norm(kind: str) -> str:
    """Return ``kind`` if it is an accepted normalisation, else raise :class:`ConfigError`."""
    if kind not in NORM_KINDS:
        hint = " (InstanceNorm breaks FP16 TensorRT engines)" if kind == "instance" else ""
        raise ConfigError(
            f"unknown norm {kind!r}{hint}; accepted: {', '.join(repr(k) for k in NORM_KINDS)}"
        )
    return kind


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a 2D normalisation layer.

    Args:
        kind: one of :data:`NORM_KINDS`.
        channels: number of channels ``C`` of the ``(B, C, H, W)`` input.

    Returns:
        ``BatchNorm2d(C)`` or ``GroupNorm(gcd(C, 8), C)``.
    """
    if check_norm(kind) == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(channels, GROUP_NORM_MAX_GROUPS), channels)


class ConvNormAct(nn.Sequential):
    """``Conv2d(k x k, same padding, no bias) -> norm -> ReLU``.

    Shapes ``(B, Cin, H, W) -> (B, Cout, H, W)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size.
        norm: one of :data:`NORM_KINDS`.
        act: append a ReLU when True.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: str = "batch",
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            make_norm(norm, out_channels),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)
