"""Every registered variant: output shape, determinism, parameter budget, gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.models import count_parameters, create_model

#: Parameter budgets of each variant name, for every architecture.
PARAM_RANGES = {"tiny": (0.2e6, 1.0e6), "small": (1.0e6, 3.0e6), "paper": (12.0e6, 15.0e6)}


@pytest.mark.parametrize("in_channels", [1, 2])
def test_forward_shape(arch_variant: tuple[str, str], in_channels: int) -> None:
    model = create_model(*arch_variant[:1], in_channels, 3, variant=arch_variant[1])
    out = model(torch.randn(2, in_channels, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_eval_mode_is_deterministic(arch_variant: tuple[str, str]) -> None:
    arch, variant = arch_variant
    model = create_model(arch, 1, 2, variant).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_batch_norm_only(arch_variant: tuple[str, str]) -> None:
    # InstanceNorm (ONNX InstanceNormalization) is a known FP16 failure in TensorRT.
    model = create_model(*arch_variant[:1], 1, 2, variant=arch_variant[1])
    kinds = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norms = {type(m) for m in model.modules() if isinstance(m, kinds)}
    assert norms == {nn.BatchNorm2d}


def test_parameter_count_in_stated_range(arch_variant: tuple[str, str]) -> None:
    arch, variant = arch_variant
    low, high = PARAM_RANGES[variant]
    assert low <= count_parameters(create_model(arch, 1, 4, variant)) <= high


def _biases_cancelled_by_batchnorm(
    model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, set[str]]:
    """Run ``model(x)``; also name the conv biases whose output feeds a train-mode BatchNorm.

    Such a bias has an exactly zero gradient (BatchNorm subtracts the batch mean), whatever
    the input: MONAI's convolutions keep their bias before BatchNorm; ours have none.
    """
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    cancelled: set[str] = set()

    def conv_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if getattr(module, "bias", None) is not None:
                produced[id(output)] = (name, output)  # keep the tensor so its id stays unique

        return hook

    def bn_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training and id(inputs[0]) in produced:
            cancelled.add(produced[id(inputs[0])][0] + ".bias")

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(bn_hook))
    try:
        return model(x), cancelled
    finally:
        for handle in handles:
            handle.remove()


def test_every_parameter_gets_a_nonzero_finite_gradient(arch_variant: tuple[str, str]) -> None:
    arch, variant = arch_variant
    model = create_model(arch, 1, 3, variant).train()
    out, cancelled = _biases_cancelled_by_batchnorm(model, torch.randn(2, 1, 32, 48))
    (out * torch.randn_like(out)).sum().backward()
    if arch == "attention-fusion":
        assert not cancelled  # convolutions before a norm have no bias
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name not in cancelled:
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
