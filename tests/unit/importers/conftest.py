"""Real nnU-Net v2 result folders, made once per session with nnU-Net's own tools.

Four coarse cohort cases (3-4 mm in-plane, 4-6 mm slices) -> nnU-Net's fingerprint extraction,
ExperimentPlanner and preprocessor -> 2d and 3d_fullres networks shrunk to 32 features at the
widest stage -> nnUNetTrainer.save_checkpoint for folds 0 and 1 (untrained). About 60 s on two
shared cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nnunetv2", reason="needs the nnunet extra")


@pytest.fixture(scope="session")
def cohort_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.data.mni152_cohort import write_mni152_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    write_mni152_cohort(out, cases=4, seed=3, inplane_mm=(3.0, 4.0), thickness_mm=(4.0, 6.0))
    return out


@pytest.fixture(scope="session")
def nnunet_results(cohort_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"2d": folder, "3d_fullres": folder}``, each with fold_0 and fold_1 checkpoints."""
    from medseg.importers.nnunet_results import make_nnunet_results

    return make_nnunet_results(cohort_raw, tmp_path_factory.mktemp("nnunet") / "results")
