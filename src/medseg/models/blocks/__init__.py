"""Building blocks of the networks: norm choice, residual, CBAM attention, multi-scale fusion."""

from __future__ import annotations

from medseg.models.blocks.attention import CBAM, ChannelAttention, SpatialAttention
from medseg.models.blocks.fusion import (
    CrossScaleDecoderStage,
    MultiScaleFusion,
    ScaleSelectionGate,
    SqueezeExcitation,
)
from medseg.models.blocks.norm import NORM_KINDS, ConvNormAct, check_norm, make_norm
from medseg.models.blocks.residual import ResidualBlock

__all__ = [
    "CBAM",
    "NORM_KINDS",
    "ChannelAttention",
    "ConvNormAct",
    "CrossScaleDecoderStage",
    "MultiScaleFusion",
    "ResidualBlock",
    "ScaleSelectionGate",
    "SpatialAttention",
    "SqueezeExcitation",
    "check_norm",
    "make_norm",
]
