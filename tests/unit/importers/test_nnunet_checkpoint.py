"""Weights-only loading of nnU-Net checkpoints: the numpy globals allowed, any other refused.

Hand-written checkpoints, for the refusals only (real ones: test_nnunet_import.py)."""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import DatasetError

torch = pytest.importorskip("torch")


def _save(path: Path, legacy: bool = False, **extra: object) -> Path:
    data = {"network_weights": {"w": torch.zeros(2)}, "trainer_name": "nnUNetTrainer", **extra}
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_numpy_float_scalars_load(tmp_path: Path) -> None:
    from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint

    logging = {"ema_fg_dice": [np.float32(0.5)], "mean_fg_dice": [np.float64(0.25)]}
    path = _save(tmp_path / "c.pth", logging=logging, _best_ema=np.float32(0.5))
    data = load_nnunet_checkpoint(path)
    assert data["_best_ema"] == np.float32(0.5) and data["logging"]["mean_fg_dice"] == [0.25]


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize(
    ("value", "name"),
    [(pathlib.PurePosixPath("/x"), "pathlib.PurePosixPath"), (np.int64(3), "Int64DType")],
)
def test_other_globals_refused_by_name(
    tmp_path: Path, legacy: bool, value: object, name: str
) -> None:
    from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint

    path = _save(tmp_path / "c.pth", legacy=legacy, extra_value=value)
    with pytest.raises(DatasetError) as err:
        load_nnunet_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: the checkpoint needs the global ") and name in msg
    assert "numpy._core.multiarray.scalar" in msg and "\n" not in msg


def test_not_a_checkpoint(tmp_path: Path) -> None:
    from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint

    bad = tmp_path / "c.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DatasetError, match="not a loadable nnU-Net checkpoint"):
        load_nnunet_checkpoint(bad)
    torch.save({"state": torch.zeros(1)}, bad)
    with pytest.raises(DatasetError, match="no 'network_weights'"):
        load_nnunet_checkpoint(bad)


def test_trainer_names_from_nnunet_source() -> None:
    pytest.importorskip("nnunetv2")
    from medseg.importers.nnunet_checkpoint import is_nnunet_trainer

    for name in ("nnUNetTrainer", "nnUNetTrainer_1epoch", "nnUNetTrainerNoMirroring"):
        assert is_nnunet_trainer(name), name
    assert not is_nnunet_trainer("nnUNetTrainer_medsegCI")
