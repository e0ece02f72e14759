"""MONAI baselines registered with the same interface: ``unet`` and ``attention-unet``.

- ``unet``: :class:`monai.networks.nets.UNet`, residual units (Kerfoot et al., "Left-Ventricle
  Quantification Using Residual U-Net", STACOM 2018; after Ronneberger et al., "U-Net",
  MICCAI 2015).
- ``attention-unet``: :class:`monai.networks.nets.AttentionUnet` (Oktay et al., "Attention
  U-Net: Learning Where to Look for the Pancreas", MIDL 2018).

Both are 2D, 5 levels (4 stride-2 downsamplings, so ``H, W`` must be divisible by 16) and
BatchNorm only. MONAI's ``AttentionUnet`` (1.6) hard-codes BatchNorm everywhere except the
``merge`` convolution of each ``AttentionLayer``, which is built without ``norm=`` and so gets
MONAI's default InstanceNorm (4 layers, exported as ONNX ``InstanceNormalization``, a known
FP16 failure in TensorRT); :func:`attention_unet` swaps those layers for BatchNorm after
construction (same widths, no other change).

Variants are sized against the attention-fusion network (2.07 M parameters for ``small``):
``small`` has 1.89 M (unet) and 1.99 M (attention-unet); ``paper`` has 13.40 M (unet, the
original U-Net widths 64-1024) and 12.40 M (attention-unet), the range of the seed paper's
Table 1 (U-Net 12.5 M, Attention U-Net 14.2 M).
"""

from __future__ import annotations

from dataclasses import dataclass

from monai.networks.nets import AttentionUnet, UNet
from torch import nn

from medseg.errors import ConfigError
from medseg.models.registry import register_model

__all__ = [
    "ATTENTION_UNET_VARIANTS",
    "UNET_VARIANTS",
    "AttentionUNetConfig",
    "UNetConfig",
]


def _check_levels(name: str, channels: tuple[int, ...], strides: tuple[int, ...]) -> None:
    if len(channels) < 2 or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels
    ):
        raise ConfigError(
            f"{name} config: channels must be >= 2 positive integers, got {channels!r}"
        )
    if len(strides) != len(channels) - 1 or any(s not in (1, 2) for s in strides):
        raise ConfigError(
            f"{name} config: strides must be {len(channels) - 1} values in (1, 2) "
            f"(one per downsampling), got {strides!r}"
        )


def _instance_norms_to_batch_norms(model: nn.Module) -> nn.Module:
    """Replace every ``InstanceNorm2d`` of ``model`` by a ``BatchNorm2d`` of the same width."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, nn.BatchNorm2d(child.num_features))
    return model


def _check_dropout(name: str, dropout: float) -> None:
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"{name} config: dropout must be in [0, 1), got {dropout!r}")


@dataclass(frozen=True)
class UNetConfig:
    """Options of the MONAI ``UNet`` baseline (BatchNorm, PReLU as in MONAI).

    Attributes:
        channels: width of each level, finest first.
        strides: stride of each downsampling (``len(channels) - 1`` values).
        num_res_units: residual units per block (0 for plain convolutions).
        dropout: dropout probability.
    """

    channels: tuple[int, ...] = (24, 48, 96, 192, 384)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_levels("unet", self.channels, self.strides)
        if (
            isinstance(self.num_res_units, bool)
            or not isinstance(self.num_res_units, int)
            or self.num_res_units < 0
        ):
            raise ConfigError(
                f"unet config: num_res_units must be an integer >= 0, got {self.num_res_units!r}"
            )
        _check_dropout("unet", self.dropout)


@dataclass(frozen=True)
class AttentionUNetConfig:
    """Options of the MONAI ``AttentionUnet`` baseline (BatchNorm, see the module docstring).

    Attributes:
        channels: width of each level, finest first.
        strides: stride of each downsampling (``len(channels) - 1`` values).
        dropout: dropout probability.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_levels("attention-unet", self.channels, self.strides)
        _check_dropout("attention-unet", self.dropout)


#: ``paper`` uses the original U-Net widths (64-1024) with one residual unit: 13.4 M.
UNET_VARIANTS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(channels=(16, 32, 64, 128, 256)),
    "small": UNetConfig(channels=(24, 48, 96, 192, 384)),
    "paper": UNetConfig(channels=(64, 128, 256, 512, 1024)),
}

ATTENTION_UNET_VARIANTS: dict[str, AttentionUNetConfig] = {
    "tiny": AttentionUNetConfig(channels=(8, 16, 32, 64, 128)),
    "small": AttentionUNetConfig(channels=(16, 32, 64, 128, 256)),
    "paper": AttentionUNetConfig(channels=(40, 80, 160, 320, 640)),
}


@register_model(
    "unet",
    config_class=UNetConfig,
    variants=UNET_VARIANTS,
    summary="MONAI residual UNet baseline (Ronneberger et al. 2015; Kerfoot et al. 2018)",
)
def unet(in_channels: int, num_classes: int, config: UNetConfig) -> nn.Module:
    """Registry builder of the MONAI ``UNet`` baseline, ``(B, C, H, W) -> (B, K, H, W)``."""
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm="batch",
        dropout=config.dropout,
    )


@register_model(
    "attention-unet",
    config_class=AttentionUNetConfig,
    variants=ATTENTION_UNET_VARIANTS,
    summary="MONAI Attention U-Net baseline (Oktay et al. 2018)",
)
def attention_unet(in_channels: int, num_classes: int, config: AttentionUNetConfig) -> nn.Module:
    """Registry builder of the MONAI ``AttentionUnet`` baseline, ``(B, C, H, W) -> (B, K, H, W)``.

    The InstanceNorm of MONAI's ``merge`` convolutions is replaced by BatchNorm (see the module
    docstring).
    """
    model = AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=config.channels,
        strides=config.strides,
        dropout=config.dropout,
    )
    return _instance_norms_to_batch_norms(model)
