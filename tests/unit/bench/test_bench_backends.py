"""Which backends ``medseg bench --backends auto`` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest


def test_auto_backends_add_the_torch_reference_only_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a CPU the eager reference's batch-8 timing took ~40 % of the default bench.
    from medseg.bench import options, variants
    from medseg.bench.options import BenchOptions, auto_includes_torch

    assert auto_includes_torch(BenchOptions(device="cuda"))
    assert not auto_includes_torch(BenchOptions(device="cpu"))
    monkeypatch.setattr(options, "_cuda_usable", lambda: False)
    assert not auto_includes_torch(BenchOptions())
    monkeypatch.setattr(variants, "backend_availability", lambda name, bundle, manifest: None)
    chosen = variants.select_backends(BenchOptions(), Path("b"), cast(Any, None))
    assert "torch" not in chosen and "onnxruntime" in chosen
    explicit = variants.select_backends(
        BenchOptions(backends=("torch",)), Path("b"), cast(Any, None)
    )
    assert list(explicit) == ["torch"]
