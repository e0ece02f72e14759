"""Networks; importing this package registers them (see :mod:`medseg.models.registry`)."""

from __future__ import annotations

from medseg.models.nets.attention_fusion import (
    ATTENTION_FUSION_VARIANTS,
    AttentionFusionConfig,
    AttentionFusionNet,
)
from medseg.models.nets.baselines import (
    ATTENTION_UNET_VARIANTS,
    UNET_VARIANTS,
    AttentionUNetConfig,
    UNetConfig,
)

__all__ = [
    "ATTENTION_FUSION_VARIANTS",
    "ATTENTION_UNET_VARIANTS",
    "UNET_VARIANTS",
    "AttentionFusionConfig",
    "AttentionFusionNet",
    "AttentionUNetConfig",
    "UNetConfig",
]
