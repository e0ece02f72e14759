"""Parametrisation over the model registry: every registered variant gets the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medseg.models import list_models, list_variants

ALL_VARIANTS = [(arch, variant) for arch in list_models() for variant in list_variants(arch)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "arch_variant" in metafunc.fixturenames:
        metafunc.parametrize(
            "arch_variant", ALL_VARIANTS, ids=[f"{a}-{v}" for a, v in ALL_VARIANTS]
        )
    if "arch" in metafunc.fixturenames:
        metafunc.parametrize("arch", list_models())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The CI machine has 2 shared cores: OpenMP threads busy-waiting on an oversubscribed
    # machine make small convolutions 10-50x slower. Restored after each module.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
