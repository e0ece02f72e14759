"""Shared, session-scoped inputs of the calibration tests: one tiny exported network, the
MNI152 training split, and one INT8 model quantised from it (real modelopt and ONNX Runtime).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from calib_testutils import crop, export_fp32

from medseg.calibration import CalibrationSet, select_calibration_slices
from medseg.data.samples import TrainingData, load_training_data


@pytest.fixture(scope="session")
def mni_training(mni_dataset: Path) -> TrainingData:
    return load_training_data(mni_dataset, 2, 0.2, 0)


@pytest.fixture(scope="session")
def calibration_set(mni_training: TrainingData) -> CalibrationSet:
    return select_calibration_slices(mni_training.train, mni_training.spec.labels, 16)


@pytest.fixture(scope="session")
def calibration(calibration_set: CalibrationSet) -> np.ndarray:
    """``(16, 1, 64, 64)`` float32 calibration slices for the tiny network."""
    return crop(calibration_set.images)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny attention-fusion network (random weights, seed 0) as FP32 ONNX: input
    ``image (B, 1, 64, 64)`` with a dynamic batch, output ``logits (B, 4, 64, 64)``."""
    import torch

    from medseg.models import create_model

    torch.manual_seed(0)
    model = create_model("attention-fusion", 1, 4, "tiny").eval()
    path = export_fp32(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    yield path


@pytest.fixture(scope="session")
def int8_model(tiny_onnx: Path, calibration: np.ndarray) -> Iterator[tuple[Path, object]]:
    """``(path, Int8Result)`` of the tiny network quantised with max calibration."""
    from medseg.calibration import quantize_int8

    path = tiny_onnx.with_name("model.int8.onnx")
    yield path, quantize_int8(tiny_onnx, path, calibration)
