"""CBAM dual attention: channel attention then spatial attention.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018
(arXiv:1807.06521). This is the "dual attention" of section II.A of the seed paper (Smith,
Carter, Walker, "Optimization of Deep Learning-Based Medical Image Segmentation
Algorithms"): a channel branch fed by complementary global average and global max pooling,
and a spatial branch that weights informative regions.

Every module exposes its gate (``gate(x)`` / ``gates(x)``) without side effects, so the
forward pass stays a pure function that exports to ONNX.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


def _hidden_width(channels: int, reduction: int, min_hidden: int) -> int:
    return min(channels, max(channels // reduction, min_hidden))


class ChannelAttention(nn.Module):
    """CBAM channel attention ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))``.

    Both pooled descriptors go through one shared bottleneck MLP (1x1 convolutions
    ``C -> C/r -> C`` with a ReLU between them).

    Args:
        channels: channels ``C`` of the input.
        reduction: bottleneck ratio ``r``.
        min_hidden: lower bound on the bottleneck width (narrow layers keep a usable MLP).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = _hidden_width(channels, reduction, min_hidden)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )

    def gate(self, x: Tensor) -> Tensor:
        """Channel weights in (0, 1): ``(B, C, H, W) -> (B, C, 1, 1)``."""
        avg = x.mean(dim=(2, 3), keepdim=True)
        peak = x.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(peak))

    def forward(self, x: Tensor) -> Tensor:
        """Reweight channels: ``(B, C, H, W) -> (B, C, H, W)``."""
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    """CBAM spatial attention ``M_s(F) = sigmoid(conv7x7([mean_c(F); max_c(F)]))``.

    Args:
        kernel_size: odd kernel of the convolution over the two pooled maps (7 in CBAM).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def gate(self, x: Tensor) -> Tensor:
        """Spatial weights in (0, 1): ``(B, C, H, W) -> (B, 1, H, W)``."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """Reweight positions: ``(B, C, H, W) -> (B, C, H, W)``."""
        return x * self.gate(x)


class CBAM(nn.Module):
    """Channel attention followed by spatial attention (sequential order of the CBAM paper).

    Args:
        channels: channels ``C`` of the input.
        reduction: bottleneck ratio ``r`` of the channel MLP.
        spatial_kernel: kernel of the spatial convolution.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two gates applied to ``x``.

        Args:
            x: features ``(B, C, H, W)``.

        Returns:
            ``(channel, spatial)`` of shapes ``(B, C, 1, 1)`` and ``(B, 1, H, W)``, in (0, 1).
        """
        channel = self.channel.gate(x)
        return channel, self.spatial.gate(x * channel)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.spatial(self.channel(x))
