"""Tiny bundles of every registered architecture (FP32/FP16/INT8), for real TensorRT-RTX builds.

The attention-fusion one is the suite's ``tiny_bundle``; the others are exported here from the
toy runs of tests/conftest.py with the same options (input 32x48, batch 1:4:8).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")


@pytest.fixture(scope="session")
def arch_bundles(
    tiny_bundle: Path,
    toy_runs: dict[str, Path],
    toy_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """Architecture -> exported tiny bundle (read-only use: tests copy before they modify)."""
    from medseg.export import ExportOptions, export_bundle
    from medseg.models import list_models

    bundles = {"attention-fusion": tiny_bundle}
    options = ExportOptions(  # the guard off, as the tiny bundle's (2-epoch toy models)
        fp16=True,
        int8=True,
        calib_data=toy_data,
        calib_slices=16,
        batch=(1, 4, 8),
        max_dice_drop=None,
        max_class_drop=None,
    )
    for arch in list_models():
        if arch not in bundles:
            out = tmp_path_factory.mktemp("bundles") / arch
            export_bundle(toy_runs[arch], out, options, lambda _: None)
            bundles[arch] = out
    return bundles
