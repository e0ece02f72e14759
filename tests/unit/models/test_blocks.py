"""The attention and fusion modules do what their docstrings claim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.models import AttentionFusionConfig, AttentionFusionNet, count_parameters
from medseg.models.blocks import (
    CBAM,
    ChannelAttention,
    CrossScaleDecoderStage,
    MultiScaleFusion,
    ResidualBlock,
    SpatialAttention,
    SqueezeExcitation,
    make_norm,
)


def _in_unit_interval(t: torch.Tensor) -> bool:
    return bool(((t > 0) & (t < 1)).all())


def test_channel_gate_shape_and_range() -> None:
    gate = ChannelAttention(16, reduction=4).gate(torch.randn(2, 16, 8, 12))
    assert gate.shape == (2, 16, 1, 1)
    assert _in_unit_interval(gate)


def test_channel_gate_uses_both_average_and_max_pooling() -> None:
    # d gate / d x: the average path spreads the same gradient over all positions of a
    # channel, the max path adds a term at that channel's argmax only.
    attention = ChannelAttention(8, reduction=2)
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    attention.gate(x).sum().backward()
    assert x.grad is not None
    grad = x.grad.flatten(2)[0]  # (C, H*W)
    argmax = x.detach().flatten(2)[0].argmax(dim=1)
    for c in range(8):
        others = torch.cat([grad[c, : argmax[c]], grad[c, argmax[c] + 1 :]])
        assert others.abs().min() > 0, "average-pool path carries no gradient"
        torch.testing.assert_close(others, others[:1].expand_as(others))
        assert (grad[c, argmax[c]] - others[0]).abs() > 1e-6, "max-pool path carries no gradient"


def test_spatial_gate_shape_range_and_7x7_conv() -> None:
    attention = SpatialAttention()
    assert attention.conv.kernel_size == (7, 7) and attention.conv.in_channels == 2
    x = torch.randn(2, 16, 8, 12)
    gate = attention.gate(x)
    assert gate.shape == (2, 1, 8, 12)
    assert _in_unit_interval(gate)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
    torch.testing.assert_close(gate, torch.sigmoid(attention.conv(pooled)))


def test_cbam_applies_channel_then_spatial_gate() -> None:
    cbam = CBAM(16, reduction=4)
    x = torch.randn(2, 16, 8, 8)
    channel, spatial = cbam.gates(x)
    assert channel.shape == (2, 16, 1, 1) and spatial.shape == (2, 1, 8, 8)
    torch.testing.assert_close(cbam(x), x * channel * spatial)


@pytest.mark.parametrize(("cin", "cout", "projected"), [(8, 8, False), (4, 8, True)])
def test_residual_shortcut(cin: int, cout: int, projected: bool) -> None:
    block = ResidualBlock(cin, cout, attention_reduction=4)
    assert isinstance(block.shortcut, nn.Identity) is not projected
    assert block(torch.randn(2, cin, 8, 8)).shape == (2, cout, 8, 8)


def test_squeeze_excitation_gate() -> None:
    se = SqueezeExcitation(32)
    x = torch.randn(2, 32, 4, 4)
    gate = se.gate(x)
    assert gate.shape == (2, 32) and _in_unit_interval(gate)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def _pyramid(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, 32 // 2**i, 48 // 2**i) for i, c in enumerate((4, 8, 16))]


def test_fusion_weights_one_per_scale_per_sample() -> None:
    fusion = MultiScaleFusion((4, 8, 16), fusion_channels=6)
    features = _pyramid(batch=3)
    projected = fusion.project(features)
    assert [tuple(p.shape) for p in projected] == [(3, 6, 32, 48)] * 3
    weights = fusion.scale_weights(projected)
    assert weights.shape == (3, 3)
    assert _in_unit_interval(weights)
    assert not torch.allclose(weights[0], weights[1])  # computed per sample


def test_fusion_equals_se_of_gated_concatenation() -> None:
    fusion = MultiScaleFusion((4, 8, 16), fusion_channels=6)
    features = _pyramid()
    projected = fusion.project(features)
    weights = fusion.scale_weights(projected)
    gated = torch.cat([p * weights[:, s, None, None, None] for s, p in enumerate(projected)], 1)
    expected = fusion.recalibration(gated)
    out = fusion(features)
    assert out.shape == (2, fusion.out_channels, 32, 48)
    torch.testing.assert_close(out, expected)
    # every scale is resized bilinearly (align_corners=False) after its 1x1 projection
    coarse = fusion.projections[2](features[2])
    resized = F.interpolate(coarse, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(projected[2], resized)


def test_decoder_stage_receives_every_deeper_scale() -> None:
    stage = CrossScaleDecoderStage(8, (16, 32, 64), 8, attention_reduction=4)
    assert len(stage.projections) == 3
    skip = torch.randn(2, 8, 16, 24)
    deeper = [torch.randn(2, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate((16, 32, 64), 1)]
    out = stage(skip, deeper)
    assert out.shape == (2, 8, 16, 24)
    out.sum().backward()
    for projection in stage.projections:
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_network_gates_expose_every_attention_and_the_fusion_weights() -> None:
    model = AttentionFusionNet(1, 2, AttentionFusionConfig(base_channels=8, fusion_channels=8))
    model.eval()
    gates = model.gates(torch.randn(2, 1, 32, 48))
    cbam_names = [name for name, m in model.named_modules() if isinstance(m, CBAM)]
    assert len(cbam_names) == 9  # 5 encoder levels + 4 decoder stages
    assert set(gates) == {f"{n}.{k}" for n in cbam_names for k in ("channel", "spatial")} | {
        "fusion.scale_weights"
    }
    assert gates["encoder.0.attention.channel"].shape == (2, 8, 1, 1)
    assert gates["encoder.4.attention.spatial"].shape == (2, 1, 2, 3)
    assert gates["fusion.scale_weights"].shape == (2, 5)
    assert all(_in_unit_interval(g) for g in gates.values())


def test_named_branches_exist_and_learn() -> None:
    model = AttentionFusionNet(1, 2, AttentionFusionConfig(base_channels=8, fusion_channels=8))
    out = model(torch.randn(2, 1, 32, 32))
    (out * torch.randn_like(out)).sum().backward()
    params = dict(model.named_parameters())
    branches = [
        "encoder.0.attention.channel.mlp.0.weight",  # shared MLP (avg and max paths)
        "decoder.0.block.attention.spatial.conv.weight",  # spatial 7x7 conv
        "encoder.0.shortcut.0.weight",  # projection shortcut
        "decoder.3.block.shortcut.0.weight",
        *(f"fusion.projections.{s}.weight" for s in range(5)),  # every scale
        "fusion.selection.mlp.0.weight",  # feature-selection gate
        "fusion.recalibration.mlp.0.weight",  # SE recalibration
        *(f"decoder.0.projections.{j}.weight" for j in range(4)),  # dense cross-scale paths
    ]
    for name in branches:
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_group_norm_variant_trains() -> None:
    config = AttentionFusionConfig(base_channels=8, fusion_channels=8, norm="group")
    model = AttentionFusionNet(1, 2, config)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    out = model(torch.randn(1, 1, 16, 16))  # batch 1 at a 1x1 bottleneck: fine with GroupNorm
    out.sum().backward()
    assert count_parameters(model) > 0


def test_instance_norm_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'instance'.*FP16.*accepted: 'batch', 'group'"):
        make_norm("instance", 8)
