from __future__ import annotations

import torch
from torch import nn

from medseg.models import count_flops, count_macs, count_parameters


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(4, 5))
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == (2 * 4 * 9 + 4) + (4 * 5 + 5)
    assert count_parameters(model, trainable_only=True) == (2 * 4 * 9 + 4) + 5


def test_macs_of_conv_transposed_conv_and_linear() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 8*8 outputs x 4 channels x (2*9)
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # 8*8*4 x (2*9)
        nn.ConvTranspose2d(4, 3, 2, stride=2),  # 8*8*4 inputs x (3*4)
        nn.Flatten(),
        nn.Linear(3 * 16 * 16, 10),
    ).train()
    expected = 64 * 4 * 18 + 64 * 4 * 18 + 64 * 4 * 12 + 768 * 10
    assert count_macs(model, (1, 2, 8, 8)) == expected
    assert count_flops(model, (1, 2, 8, 8)) == 2 * expected
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_macs_scale_with_batch() -> None:
    model = nn.Conv2d(1, 2, 3, padding=1)
    assert count_macs(model, (3, 1, 4, 4)) == 3 * count_macs(model, (1, 1, 4, 4))
    assert torch.is_grad_enabled()
