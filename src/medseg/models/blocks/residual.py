"""Residual block with optional CBAM attention on the residual branch.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016; attention
placement as in Woo et al., "CBAM", ECCV 2018 (on the residual branch, before the addition).
"""

from __future__ import annotations

from torch import Tensor, nn

from medseg.models.blocks.attention import CBAM
from medseg.models.blocks.norm import ConvNormAct

__all__ = ["ResidualBlock"]


class ResidualBlock(nn.Module):
    """``act(CBAM(norm(conv3x3(act(norm(conv3x3(x)))))) + shortcut(x))``.

    The shortcut is the identity when the widths match, otherwise a 1x1 convolution followed
    by the normalisation (projection shortcut).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: ``"batch"`` or ``"group"`` (see :mod:`medseg.models.blocks.norm`).
        attention_reduction: CBAM bottleneck ratio, or None for no attention.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str = "batch",
        attention_reduction: int | None = 16,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, norm)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, norm, act=False)
        self.attention: nn.Module = (
            nn.Identity()
            if attention_reduction is None
            else CBAM(out_channels, attention_reduction)
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else ConvNormAct(in_channels, out_channels, 1, norm, act=False)
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, Cin, H, W) -> (B, Cout, H, W)``."""
        return self.act(self.attention(self.conv2(self.conv1(x))) + self.shortcut(x))
