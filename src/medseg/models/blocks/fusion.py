"""Multi-scale fusion: dense cross-scale decoder paths, feature-selection gate, SE recalibration.

Section II.B of the seed paper (Smith, Carter, Walker, "Optimization of Deep Learning-Based
Medical Image Segmentation Algorithms"): features from every depth are aggregated, a
feature-selection gate weights each scale by its importance, a lightweight recalibration
learns cross-scale relationships, and dense pathways let low-level detail meet high-level
semantics. Building blocks from:

- full-scale skip connections: Huang et al., "UNet 3+: A Full-Scale Connected UNet for
  Medical Image Segmentation", ICASSP 2020 (arXiv:2004.08790);
- per-sample selection weights from global context: Li et al., "Selective Kernel
  Networks", CVPR 2019 (sigmoids instead of a softmax, so scales do not compete);
- squeeze-and-excitation: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

Resizing is bilinear with ``align_corners=False`` and takes its target size from a tensor
shape, never from Python constants, so the modules export with dynamic ``H, W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.models.blocks.residual import ResidualBlock

__all__ = ["CrossScaleDecoderStage", "MultiScaleFusion", "ScaleSelectionGate", "SqueezeExcitation"]


def _resize(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` ``(B, C, h, w)`` to the size ``(H, W)`` of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation channel recalibration (Hu et al., CVPR 2018).

    Args:
        channels: channels ``C``.
        reduction: bottleneck ratio of the ``C -> C/r -> C`` MLP.
        min_hidden: lower bound on the bottleneck width.
    """

    def __init__(self, channels: int, reduction: int = 4, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = min(channels, max(channels // reduction, min_hidden))
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def gate_from_pooled(self, pooled: Tensor) -> Tensor:
        """Channel weights in (0, 1) from a pooled descriptor: ``(B, C) -> (B, C)``."""
        return self.mlp(pooled)

    def gate(self, x: Tensor) -> Tensor:
        """Channel weights in (0, 1): ``(B, C, H, W) -> (B, C)``."""
        return self.gate_from_pooled(x.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return x * self.gate(x)[:, :, None, None]


class ScaleSelectionGate(nn.Module):
    """One sigmoid weight per scale per sample from global context.

    ``GAP(concat(P_1..P_S)) -> Linear -> ReLU -> Linear -> sigmoid``.

    Args:
        num_scales: number of scales ``S``.
        channels: channels ``F`` of each projected scale.
        hidden: width of the hidden layer.
    """

    def __init__(self, num_scales: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(num_scales * channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_scales),
            nn.Sigmoid(),
        )

    def forward(self, pooled: Tensor) -> Tensor:
        """Scale weights: pooled concatenated features ``(B, S*F) -> (B, S)`` in (0, 1)."""
        return self.mlp(pooled)


class MultiScaleFusion(nn.Module):
    """Fuse decoder features from every depth at the output resolution.

    Each scale ``s`` is projected by a 1x1 convolution to ``F`` channels and resized to the
    resolution of ``features[0]``; ``ScaleSelectionGate`` gives weights ``w (B, S)``; the
    weighted projections are concatenated and recalibrated by squeeze-excitation across the
    ``S*F`` fused channels. The gate and SE scales are both per-channel constants, so the
    implementation pools once and applies their product in a single multiplication; the
    result equals ``SE(concat(w_s * P_s))``.

    Args:
        in_channels: channels of each input scale, finest first (``S = len(in_channels)``).
        fusion_channels: common width ``F``.
        se_reduction: bottleneck ratio of the SE recalibration.
    """

    def __init__(
        self, in_channels: Sequence[int], fusion_channels: int, se_reduction: int = 4
    ) -> None:
        super().__init__()
        self.num_scales = len(in_channels)
        self.fusion_channels = fusion_channels
        self.projections = nn.ModuleList(nn.Conv2d(c, fusion_channels, 1) for c in in_channels)
        self.selection = ScaleSelectionGate(self.num_scales, fusion_channels, fusion_channels)
        self.recalibration = SqueezeExcitation(self.num_scales * fusion_channels, se_reduction)

    @property
    def out_channels(self) -> int:
        """Channels of the fused output, ``S * F``."""
        return self.num_scales * self.fusion_channels

    def project(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Project every scale to ``F`` channels, then resize it to the finest resolution.

        Args:
            features: ``S`` tensors ``(B, C_s, H_s, W_s)``, finest first.

        Returns:
            ``S`` tensors ``(B, F, H_0, W_0)``.
        """
        finest = features[0]
        projected = [self.projections[0](finest)]
        for projection, feature in zip(self.projections[1:], features[1:], strict=True):
            # 1x1 conv and bilinear resize commute; projecting first is cheaper.
            projected.append(_resize(projection(feature), finest))
        return projected

    def scale_weights(self, projected: Sequence[Tensor]) -> Tensor:
        """Feature-selection weights of :meth:`project`'s output: ``(B, S)`` in (0, 1)."""
        return self.selection(torch.cat([p.mean(dim=(2, 3)) for p in projected], dim=1))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse ``S`` scales ``(B, C_s, H_s, W_s)`` into ``(B, S*F, H_0, W_0)``."""
        projected = self.project(features)
        pooled = torch.cat([p.mean(dim=(2, 3)) for p in projected], dim=1)  # (B, S*F)
        weights = self.selection(pooled)  # (B, S)
        per_channel = weights[:, :, None].expand(-1, -1, self.fusion_channels).flatten(1)
        scale = per_channel * self.recalibration.gate_from_pooled(pooled * per_channel)
        return torch.cat(projected, dim=1) * scale[:, :, None, None]


class CrossScaleDecoderStage(nn.Module):
    """Decoder stage fed by its encoder skip and by every deeper stage (dense paths).

    Each deeper feature is projected by a 1x1 convolution to the stage width and resized to
    the skip's resolution; the concatenation goes through a residual attention block.

    Args:
        skip_channels: channels of the encoder skip at this depth.
        deeper_channels: channels of each deeper feature, shallowest first.
        out_channels: stage width.
        norm: ``"batch"`` or ``"group"``.
        attention_reduction: CBAM ratio of the block, or None for no attention.
    """

    def __init__(
        self,
        skip_channels: int,
        deeper_channels: Sequence[int],
        out_channels: int,
        norm: str = "batch",
        attention_reduction: int | None = 16,
    ) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1, bias=False) for c in deeper_channels
        )
        in_channels = skip_channels + len(deeper_channels) * out_channels
        self.block = ResidualBlock(in_channels, out_channels, norm, attention_reduction)

    def forward(self, skip: Tensor, deeper: Sequence[Tensor]) -> Tensor:
        """Decode one depth.

        Args:
            skip: encoder features ``(B, C_skip, H, W)``.
            deeper: features of every deeper stage ``(B, C_j, H_j, W_j)``, shallowest first.

        Returns:
            ``(B, C_out, H, W)``.
        """
        inputs = [skip]
        for projection, feature in zip(self.projections, deeper, strict=True):
            inputs.append(_resize(projection(feature), skip))
        return self.block(torch.cat(inputs, dim=1))
