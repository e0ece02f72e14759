"""Attention-fusion network: residual CBAM encoder-decoder with dense multi-scale fusion.

The architecture of sections II.A and II.B of Smith, Carter, Walker, "Optimization of Deep
Learning-Based Medical Image Segmentation Algorithms" (the seed paper of medseg-edge):

- **Encoder**: 5 levels of :class:`~medseg.models.blocks.residual.ResidualBlock` (two
  conv3x3-norm units, identity or 1x1 projection shortcut; He et al., CVPR 2016) with CBAM
  dual attention on the residual branch (Woo et al., "CBAM", ECCV 2018), 2x2 max pooling
  between levels (4 downsamplings), widths ``base * (1, 2, 4, 8, 16)``.
- **Decoder with dense cross-scale paths** (as in UNet 3+, Huang et al., ICASSP 2020):
  the stage at depth ``d`` receives its encoder skip and the 1x1-projected, bilinearly
  resized features of *every* deeper stage (bottleneck included), not only the one below.
- **Multi-scale fusion** (:class:`~medseg.models.blocks.fusion.MultiScaleFusion`): the
  decoder features of all 5 depths are projected to ``fusion_channels``, resized to the
  input resolution, weighted by a per-sample, per-scale sigmoid feature-selection gate and
  recalibrated by squeeze-excitation across the fused channels; a 1x1 head gives the logits.

Normalisation is BatchNorm by default: in eval mode it folds into the convolutions during
ONNX export, so the FP16 and INT8 TensorRT engines contain no normalisation layer. GroupNorm
(``norm="group"``) is for training with tiny batches and exports as InstanceNormalization,
a known FP16 failure in TensorRT; InstanceNorm is not offered (see
:mod:`medseg.models.blocks.norm`).

The forward pass has static control flow (loops over module lists only) and every resize
takes its size from a tensor shape, so ``torch.onnx.export(dynamo=True)`` accepts a dynamic
batch and dynamic ``H, W``. ``H`` and ``W`` should be divisible by 16; other sizes still run
(each decoder stage resizes to its skip's shape) but pooling then drops border rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.blocks.attention import CBAM
from medseg.models.blocks.fusion import CrossScaleDecoderStage, MultiScaleFusion
from medseg.models.blocks.norm import check_norm
from medseg.models.blocks.residual import ResidualBlock
from medseg.models.registry import register_model

__all__ = ["ATTENTION_FUSION_VARIANTS", "DEPTH", "AttentionFusionConfig", "AttentionFusionNet"]

#: Resolution levels (4 downsamplings by 2: inputs should be divisible by 16).
DEPTH = 5


@dataclass(frozen=True)
class AttentionFusionConfig:
    """Widths of :class:`AttentionFusionNet` (the depth is fixed at :data:`DEPTH` levels).

    Attributes:
        base_channels: width of the first level; level ``i`` has ``base * 2**i`` channels.
        attention_reduction: CBAM channel-MLP ratio ``r``.
        fusion_channels: common width ``F`` of each scale in the fusion module.
        norm: ``"batch"`` (default, folds into convs at export) or ``"group"``.
    """

    base_channels: int = 16
    attention_reduction: int = 8
    fusion_channels: int = 32
    norm: str = "batch"

    def __post_init__(self) -> None:
        for name in ("base_channels", "attention_reduction", "fusion_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"attention-fusion config: {name} must be a positive integer, got {value!r}"
                )
        check_norm(self.norm)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, finest first."""
        return tuple(self.base_channels * 2**level for level in range(DEPTH))


#: Registered variants. ``small`` is the CPU default (2.07 M parameters); ``paper`` matches
#: the 13.7 M parameters reported in the seed paper's Table 1 (12.76 M); ``tiny`` is for
#: smoke tests and demos.
ATTENTION_FUSION_VARIANTS: dict[str, AttentionFusionConfig] = {
    "tiny": AttentionFusionConfig(base_channels=8, attention_reduction=4, fusion_channels=16),
    "small": AttentionFusionConfig(base_channels=16, attention_reduction=8, fusion_channels=32),
    "paper": AttentionFusionConfig(base_channels=40, attention_reduction=16, fusion_channels=64),
}


class AttentionFusionNet(nn.Module):
    """Residual CBAM encoder-decoder with dense cross-scale paths and gated multi-scale fusion.

    Args:
        in_channels: input channels ``C``.
        num_classes: output channels ``K`` (logits, background included).
        config: widths; the ``small`` variant by default.

    Shapes:
        ``(B, C, H, W)`` float32 -> ``(B, K, H, W)`` logits, ``H, W`` divisible by 16.
    """

    def __init__(
        self, in_channels: int, num_classes: int, config: AttentionFusionConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config = config or ATTENTION_FUSION_VARIANTS["small"]
        widths = config.widths
        norm, reduction = config.norm, config.attention_reduction
        self.encoder = nn.ModuleList(
            ResidualBlock(in_channels if level == 0 else widths[level - 1], width, norm, reduction)
            for level, width in enumerate(widths)
        )
        self.pool = nn.MaxPool2d(2)
        # decoder[d] decodes depth d from skip d and every deeper feature (d+1 .. DEPTH-1).
        self.decoder = nn.ModuleList(
            CrossScaleDecoderStage(widths[d], widths[d + 1 :], widths[d], norm, reduction)
            for d in range(DEPTH - 1)
        )
        self.fusion = MultiScaleFusion(widths, config.fusion_channels)
        self.head = nn.Conv2d(self.fusion.out_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, K, H, W)`` logits."""
        skips: list[Tensor] = []
        features = x
        for level, block in enumerate(self.encoder):
            if level > 0:  # static: depends on the level index, not on data
                features = self.pool(features)
            features = block(features)
            skips.append(features)
        decoded = [skips[-1]]  # finest first; starts with the bottleneck
        for depth in range(DEPTH - 2, -1, -1):
            decoded.insert(0, self.decoder[depth](skips[depth], decoded))
        return self.head(self.fusion(decoded))

    @torch.no_grad()
    def gates(self, x: Tensor) -> dict[str, Tensor]:
        """Run a forward pass and return every attention and fusion gate, for inspection.

        Args:
            x: input ``(B, C, H, W)``.

        Returns:
            ``"<module>.channel"`` ``(B, C_l, 1, 1)`` and ``"<module>.spatial"``
            ``(B, 1, H_l, W_l)`` for each CBAM module (named as in ``named_modules``), and
            ``"fusion.scale_weights"`` ``(B, S)``; all values in (0, 1).

        Call it in eval mode for inference-time gates: in train mode the pass updates the
        BatchNorm running statistics like any other forward pass.
        """
        found: dict[str, Tensor] = {}
        handles = []

        def cbam_hook(name: str) -> Callable[[CBAM, tuple[Tensor, ...], Tensor], None]:
            def hook(module: CBAM, inputs: tuple[Tensor, ...], output: Tensor) -> None:
                found[f"{name}.channel"], found[f"{name}.spatial"] = module.gates(inputs[0])

            return hook

        def fusion_hook(
            module: MultiScaleFusion, inputs: tuple[list[Tensor]], output: Tensor
        ) -> None:
            found["fusion.scale_weights"] = module.scale_weights(module.project(inputs[0]))

        for name, module in self.named_modules():
            if isinstance(module, CBAM):
                handles.append(module.register_forward_hook(cbam_hook(name)))
        handles.append(self.fusion.register_forward_hook(fusion_hook))
        try:
            self(x)
        finally:
            for handle in handles:
                handle.remove()
        return found


@register_model(
    "attention-fusion",
    config_class=AttentionFusionConfig,
    variants=ATTENTION_FUSION_VARIANTS,
    summary="residual CBAM encoder-decoder, dense cross-scale paths, gated multi-scale fusion "
    "(Smith et al., seed paper II.A-B)",
)
def attention_fusion(
    in_channels: int, num_classes: int, config: AttentionFusionConfig
) -> AttentionFusionNet:
    """Registry builder of :class:`AttentionFusionNet`."""
    return AttentionFusionNet(in_channels, num_classes, config)
