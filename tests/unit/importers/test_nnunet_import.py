"""``medseg import nnunet`` on real nnU-Net result folders (see conftest.py), and its bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app

torch = pytest.importorskip("torch")
runner = CliRunner()
pytestmark = pytest.mark.slow


def _import(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["import", "nnunet", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_import_matches_nnunet_predictor_network(
    nnunet_results: dict[str, Path], tmp_path: Path, configuration: str
) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medseg.importers.nnunet import build_network

    folder = nnunet_results[configuration]
    run = tmp_path / "run"
    code, out = _import(str(folder), "--out", str(run), "--folds", "0,1")
    assert code == 0, out
    record = json.loads((run / "nnunet.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"][configuration]
    prep = record["preprocessing"]
    assert record["source"]["folds"] == ["0", "1"]
    assert record["source"]["trainer"] == "nnUNetTrainer"
    assert prep["patch_size"] == config["patch_size"]
    assert prep["spacing"] == pytest.approx(config["spacing"])
    assert prep["transpose_forward"] == plans["transpose_forward"]
    assert prep["normalization"][0]["scheme"] == config["normalization_schemes"][0]
    # the trainer's mirroring axes: all axes of the patch for these near-isotropic plans
    assert prep["mirror_axes"] == list(range(len(config["patch_size"])))

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(folder), (0, 1))
    assert tuple(predictor.allowed_mirroring_axes) == tuple(prep["mirror_axes"])
    from medseg.importers.nnunet import read_nnunet_result

    result, _ = read_nnunet_result(folder, folds=("0", "1"))
    net = build_network(result).eval()
    x = torch.randn(2, 1, *config["patch_size"], generator=torch.Generator().manual_seed(0))
    for k, params in enumerate(predictor.list_of_parameters):
        predictor.network.load_state_dict(params)
        predictor.network.eval()
        ours = torch.load(run / f"fold_{k}" / "weights.pt", weights_only=True)
        net.load_state_dict(ours)
        with torch.no_grad():
            np.testing.assert_array_equal(net(x).numpy(), predictor.network(x).numpy())


def _copy(folder: Path, tmp: Path) -> Path:
    dst = tmp / folder.name
    shutil.copytree(folder, dst)
    return dst


def _edit_checkpoint(path: Path, **changes: object) -> None:
    data = torch.load(path, weights_only=True)
    data.update(changes)
    torch.save(data, path)


def test_bad_inputs_one_line_exit_2(nnunet_results: dict[str, Path], tmp_path: Path) -> None:
    folder = nnunet_results["3d_fullres"]
    run = tmp_path / "run"

    def refused(src: Path, *extra: str) -> str:
        code, out = _import(str(src), "--out", str(run), *extra)
        assert code == 2, out
        assert not run.exists(), "nothing half-written"
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1, out
        return " ".join(out.split())

    assert "missing plans.json, dataset.json" in refused(tmp_path)
    no_fp = _copy(folder, tmp_path / "a")
    (no_fp / "dataset_fingerprint.json").unlink()
    assert "missing dataset_fingerprint.json" in refused(no_fp)
    assert "no fold_3/checkpoint_final.pth" in refused(folder, "--folds", "0,3")
    assert "--folds '0,x'" in refused(folder, "--folds", "0,x")
    msg = refused(folder, "--configuration", "3d_lowres")
    assert "'3d_lowres' is not in" in msg and "planned: 2d, 3d_fullres" in msg
    assert "was trained as '3d_fullres', not '2d'" in refused(folder, "--configuration", "2d")

    trainer = _copy(folder, tmp_path / "b")
    for k in (0, 1):
        ckpt = trainer / f"fold_{k}" / "checkpoint_final.pth"
        _edit_checkpoint(ckpt, trainer_name="nnUNetTrainerPrimus")
    msg = refused(trainer)
    assert "trainer 'nnUNetTrainerPrimus' is not supported" in msg and "nnUNetTrainer," in msg

    plans_differ = _copy(folder, tmp_path / "c")
    ckpt = plans_differ / "fold_1" / "checkpoint_final.pth"
    data = torch.load(ckpt, weights_only=True)
    data["init_args"]["plans"]["configurations"]["3d_fullres"]["patch_size"] = [32, 32, 32]
    torch.save(data, ckpt)
    assert "folds with different plans" in refused(plans_differ)

    network = _copy(folder, tmp_path / "d")
    plans = json.loads((network / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "nnunetv2.training.Primus"
    (network / "plans.json").write_text(json.dumps(plans))
    for k in (0, 1):  # consistent folds: the network class itself is what is refused
        ckpt = network / f"fold_{k}" / "checkpoint_final.pth"
        data = torch.load(ckpt, weights_only=True)
        data["init_args"]["plans"] = plans
        torch.save(data, ckpt)
    msg = refused(network)
    assert "network 'nnunetv2.training.Primus' is not supported" in msg and "PlainConvUNet" in msg

    cascade = _copy(folder, tmp_path / "e")
    plans = json.loads((cascade / "plans.json").read_text())
    plans["configurations"]["3d_cascade_fullres"] = {
        "inherits_from": "3d_fullres",
        "previous_stage": "3d_lowres",
    }
    (cascade / "plans.json").write_text(json.dumps(plans))
    for k in (0, 1):
        ckpt = cascade / f"fold_{k}" / "checkpoint_final.pth"
        data = torch.load(ckpt, weights_only=True)
        data["init_args"]["plans"] = plans
        data["init_args"]["configuration"] = "3d_cascade_fullres"
        torch.save(data, ckpt)
    assert "is a cascade stage" in refused(cascade)

    regions = _copy(folder, tmp_path / "f")
    ds = json.loads((regions / "dataset.json").read_text())
    ds["labels"]["brain"] = [1, 2, 3]
    ds["regions_class_order"] = [1, 2, 3, 4]
    (regions / "dataset.json").write_text(json.dumps(ds))
    assert "region-based labels (brain)" in refused(regions)

    corrupt = _copy(folder, tmp_path / "g")
    (corrupt / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    assert "not a loadable nnU-Net checkpoint" in refused(corrupt)
