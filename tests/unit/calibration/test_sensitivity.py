"""Layer sensitivity: leave-one-out SNR of the logits, and the property the export's accuracy
guard relies on: excluding the most sensitive layer recovers more than the least sensitive."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from calib_testutils import crop, export_fp32, run, snr_db

from medseg.calibration import (
    CalibrationSet,
    Int8Config,
    Int8Result,
    layer_sensitivity,
    quantize_int8,
)
from medseg.errors import ConfigError, ExportError


def _exclusion_snr(
    fp32: Path, node: str, calibration: np.ndarray, samples: np.ndarray, out: Path
) -> float:
    quantize_int8(fp32, out, calibration, Int8Config(nodes_to_exclude=(node,)))
    return snr_db(run(fp32, samples), run(out, samples))


def test_ranking_covers_every_quantised_layer_and_predicts_exclusion(
    tiny_onnx: Path,
    int8_model: tuple[Path, Int8Result],
    calibration: np.ndarray,
    tmp_path: Path,
) -> None:
    int8_path, result = int8_model
    samples = calibration[::5]  # slices 0, 5, 10, 15: what max_samples=4 picks from 16
    ranking = layer_sensitivity(tiny_onnx, int8_path, calibration, threads=1)
    assert ranking == layer_sensitivity(tiny_onnx, int8_path, samples, max_samples=None, threads=1)

    assert sorted(e.node for e in ranking) == sorted(result.quantized_nodes)
    assert [e.rank for e in ranking] == list(range(1, len(ranking) + 1))
    assert all(a.gain_db >= b.gain_db for a, b in itertools.pairwise(ranking))
    assert all(e.op_type == "Conv" and math.isfinite(e.snr_db) for e in ranking)
    base = snr_db(run(tiny_onnx, samples), run(int8_path, samples))
    assert all(e.int8_snr_db == pytest.approx(base, abs=0.5) for e in ranking)
    json.dumps([e.to_dict() for e in ranking])

    most, least = ranking[0], ranking[-1]
    gain_most = _exclusion_snr(tiny_onnx, most.node, calibration, samples, tmp_path / "a.onnx")
    gain_least = _exclusion_snr(tiny_onnx, least.node, calibration, samples, tmp_path / "b.onnx")
    assert gain_most > gain_least + 1.0
    assert gain_most - base == pytest.approx(most.gain_db, abs=0.5)  # predicted = real


def test_bad_inputs(
    tiny_onnx: Path, int8_model: tuple[Path, Int8Result], calibration: np.ndarray
) -> None:
    with pytest.raises(ExportError, match="no quantised layer"):
        layer_sensitivity(tiny_onnx, tiny_onnx, calibration[:1])
    with pytest.raises(ConfigError, match="max_samples"):
        layer_sensitivity(tiny_onnx, int8_model[0], calibration, max_samples=0)


TRAINED = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue"


@pytest.mark.slow
@pytest.mark.skipif(
    not (TRAINED / "model.pt").is_file(), reason=f"no trained model at {TRAINED}/model.pt"
)
def test_property_holds_on_the_trained_model(
    calibration_set: CalibrationSet, tmp_path: Path
) -> None:
    """The same property on the trained MNI152 model (one brain; central 96x96 crops)."""

    from medseg.train import load_checkpoint

    model = load_checkpoint(TRAINED).model
    fp32 = export_fp32(model, tmp_path / "trained.onnx", 96)
    calibration = crop(calibration_set.images, 96)
    samples = calibration[::8]
    int8 = tmp_path / "trained.int8.onnx"
    quantize_int8(fp32, int8, calibration)
    ranking = layer_sensitivity(fp32, int8, samples, threads=1)
    most, least = ranking[0], ranking[-1]
    gain_most = _exclusion_snr(fp32, most.node, calibration, samples, tmp_path / "a.onnx")
    gain_least = _exclusion_snr(fp32, least.node, calibration, samples, tmp_path / "b.onnx")
    assert gain_most > gain_least
