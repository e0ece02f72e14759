"""Real nnU-Net v2 result folders, written by nnU-Net's own commands once per session.

See tests/nnunet_real.py and the ``nnunet_real`` fixture in tests/conftest.py: four coarse
cohort cases -> ``nnUNetv2_plan_and_preprocess`` -> plans ``nnUNetPlansMedsegCI`` (32 features
at the widest stage) -> ``nnUNetv2_train -tr nnUNetTrainer_medsegCI -device cpu`` for 2d and
3d_fullres, folds 0 and 1 (one short epoch: briefly trained weights, real checkpoints).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nnunetv2", reason="needs the nnunet extra")


@pytest.fixture(scope="session")
def cohort_raw(nnunet_real: Path) -> Path:
    """The training cases (nnU-Net raw layout)."""
    import nnunet_real as builder

    return nnunet_real / "nnUNet_raw" / builder.DATASET


@pytest.fixture(scope="session")
def nnunet_results(nnunet_real: Path) -> dict[str, Path]:
    """``{"2d": folder, "3d_fullres": folder}``, each with fold_0 and fold_1 checkpoints."""
    import nnunet_real as builder

    return {c: builder.result_folder(nnunet_real, c) for c in builder.CONFIGURATIONS}


@pytest.fixture(scope="session")
def bundles(
    nnunet_results: dict[str, Path], cohort_raw: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two-fold bundles: 2d FP32; 3d_fullres FP32, FP16 and INT8 (calibrated on the cohort).

    Shared by test_nnunet_parity.py and test_nnunet_real_deploy.py (read-only use: copy a
    bundle before writing into it). Exported once per session: under pytest-xdist (``--dist
    loadfile`` may put the two files on different workers) the workers share the session's base
    temporary folder, and a file lock lets the first worker export while the other waits.
    """
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    root = shared / "nnunet-real-bundles"
    out = {c: root / f"bundle-{c}" for c in nnunet_results}
    with FileLock(str(shared / "nnunet-real-bundles.lock")):
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)  # an export that died half-way
            root.mkdir(parents=True)
            _export_bundles(nnunet_results, cohort_raw, root)
            (root / "done").write_text("")
    return out


def _export_bundles(nnunet_results: dict[str, Path], cohort_raw: Path, root: Path) -> None:
    from medseg.export.nnunet_export import NnunetExportOptions, export_nnunet
    from medseg.importers.nnunet import import_nnunet

    for configuration, folder in nnunet_results.items():
        run = root / f"run-{configuration}"
        import_nnunet(folder, run, folds=("0", "1"))
        if configuration == "3d_fullres":
            options = NnunetExportOptions(
                fp16=True, int8=True, calib_data=cohort_raw, calib_patches=8
            )
        else:
            options = NnunetExportOptions(calib_patches=4)
        export_nnunet(run, root / f"bundle-{configuration}", options)
