"""Model size and compute: parameters and multiply-accumulates (MACs) per slice.

MACs are counted with forward hooks on the layers that dominate inference cost:
convolutions (``Conv1d/2d/3d``), transposed convolutions and ``Linear``. Normalisation,
activations, pooling, resizing, element-wise products and bias additions are not counted.
FLOPs are reported as ``2 x MACs`` (one multiply and one add per MAC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["count_flops", "count_macs", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``, optionally only those requiring grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # every input element scatters into kernel * out_channels/groups outputs
        per_input = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return inputs[0].numel() * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape``.

    Args:
        model: any module; it runs once in eval mode without grad (its mode is restored).
        input_shape: e.g. ``(1, C, H, W)`` for the cost of one slice.

    Returns:
        MACs of all convolution, transposed-convolution and linear layers.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    layers = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass, ``2 * count_macs(model, input_shape)``."""
    return 2 * count_macs(model, input_shape)
