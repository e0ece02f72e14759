"""Real nnU-Net v2 result folders, written by nnU-Net's own commands once per session.

See tests/nnunet_real.py and the ``nnunet_real`` fixture in tests/conftest.py: four coarse
cohort cases -> ``nnUNetv2_plan_and_preprocess`` -> plans ``nnUNetPlansMedsegCI`` (32 features
at the widest stage) -> ``nnUNetv2_train -tr nnUNetTrainer_medsegCI -device cpu`` for 2d and
3d_fullres, folds 0 and 1 (one short epoch: briefly trained weights, real checkpoints).
"""

from __future__ import annotations

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
    bundle before writing into it).
    """
    from medseg.export.nnunet_export import NnunetExportOptions, export_nnunet
    from medseg.importers.nnunet import import_nnunet

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for configuration, folder in nnunet_results.items():
        run = root / f"run-{configuration}"
        import_nnunet(folder, run, folds=("0", "1"))
        out[configuration] = root / f"bundle-{configuration}"
        if configuration == "3d_fullres":
            options = NnunetExportOptions(
                fp16=True, int8=True, calib_data=cohort_raw, calib_patches=8
            )
        else:
            options = NnunetExportOptions(calib_patches=4)
        export_nnunet(run, out[configuration], options)
    return out
