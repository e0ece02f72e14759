"""``medseg import nnunet`` on real nnU-Net result folders (see conftest.py), and its bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

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


def test_real_checkpoints_need_numpy_globals(nnunet_results: dict[str, Path]) -> None:
    """nnUNetTrainer's checkpoints hold numpy scalars: a bare weights-only load refuses them
    (issue 21's first stop); ours allows exactly those and loads them."""
    import pickle

    from medseg.importers.nnunet_checkpoint import NUMPY_GLOBALS, load_nnunet_checkpoint

    path = nnunet_results["2d"] / "fold_0" / "checkpoint_final.pth"
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert "numpy._core.multiarray.scalar" in needed and set(needed) <= set(NUMPY_GLOBALS)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    data = load_nnunet_checkpoint(path)
    assert data["trainer_name"] == "nnUNetTrainer_medsegCI"
    assert data["current_epoch"] == 1 and data["logging"]["ema_fg_dice"]


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_import_real_result_folder(
    nnunet_results: dict[str, Path], tmp_path: Path, configuration: str
) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medseg.importers.nnunet import build_network
    from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint
    from medseg.importers.nnunet_folder import read_nnunet_result

    folder = nnunet_results[configuration]
    run = tmp_path / "run"
    code, out = _import(str(folder), "--out", str(run), "--folds", "0,1")
    assert code == 0, out
    assert "info: trainer 'nnUNetTrainer_medsegCI' is not one of nnU-Net's own" in out
    assert "architecture verified from the weights" in out
    record = json.loads((run / "nnunet.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"][configuration]
    prep, source = record["preprocessing"], record["source"]
    assert source["folds"] == ["0", "1"]
    assert source["trainer"] == "nnUNetTrainer_medsegCI" and not source["trainer_is_nnunet"]
    assert source["plans_name"] == "nnUNetPlansMedsegCI"
    assert prep["patch_size"] == config["patch_size"]
    assert prep["spacing"] == pytest.approx(config["spacing"])
    assert prep["transpose_forward"] == plans["transpose_forward"]
    assert prep["normalization"][0]["scheme"] == config["normalization_schemes"][0]
    if configuration == "2d":  # an option of the 2D-slice export given to an nnU-Net run
        bundle = tmp_path / "bundle"
        res = runner.invoke(app, ["export", str(run), "--out", str(bundle), "--height", "64"])
        assert res.exit_code == 2 and not bundle.exists(), res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert "--height/--width does not apply to" in " ".join(res.output.split())
    result, _ = read_nnunet_result(folder, folds=("0", "1"))
    net = build_network(result).eval()
    # nnU-Net's own network for these plans (what nnUNetPredictor builds for this trainer)
    pm = PlansManager(plans)
    labels = pm.get_label_manager(json.loads((folder / "dataset.json").read_text()))
    theirs = nnUNetTrainer.build_network_architecture(
        pm, pm.get_configuration(configuration), 1, labels.num_segmentation_heads,
        enable_deep_supervision=False,
    ).eval()  # fmt: skip
    x = torch.randn(2, 1, *config["patch_size"], generator=torch.Generator().manual_seed(0))
    for k in (0, 1):
        ckpt = load_nnunet_checkpoint(folder / f"fold_{k}" / "checkpoint_final.pth")
        axes = ckpt["inference_allowed_mirroring_axes"]
        assert prep["mirror_axes"] == list(axes)
        ours = torch.load(run / f"fold_{k}" / "weights.pt", weights_only=True)
        assert ours.keys() == ckpt["network_weights"].keys()
        net.load_state_dict(ours)
        theirs.load_state_dict(ckpt["network_weights"])
        with torch.no_grad():
            np.testing.assert_array_equal(net(x).numpy(), theirs(x).numpy())


def _copy(folder: Path, tmp: Path) -> Path:
    dst = tmp / folder.name
    shutil.copytree(folder, dst)
    return dst


def _load(path: Path) -> dict[str, Any]:
    from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint

    return load_nnunet_checkpoint(path)


def _edit_checkpoint(path: Path, **changes: object) -> None:
    data = _load(path)
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

    empty = tmp_path / "empty"  # not a result folder (and --out is not inside it)
    empty.mkdir()
    assert "missing plans.json, dataset.json" in refused(empty)
    no_fp = _copy(folder, tmp_path / "a")
    (no_fp / "dataset_fingerprint.json").unlink()
    assert "missing dataset_fingerprint.json" in refused(no_fp)
    assert "no fold_3/checkpoint_final.pth" in refused(folder, "--folds", "0,3")
    assert "--folds '0,x'" in refused(folder, "--folds", "0,x")
    msg = refused(folder, "--configuration", "3d_lowres")
    assert "'3d_lowres' is not in" in msg and "planned: 2d, 3d_fullres" in msg
    assert "was trained as '3d_fullres', not '2d'" in refused(folder, "--configuration", "2d")

    trainer = _copy(folder, tmp_path / "b")
    _edit_checkpoint(trainer / "fold_1" / "checkpoint_final.pth", trainer_name="nnUNetTrainer")
    msg = refused(trainer)
    assert "fold_1/checkpoint_final.pth: trainer 'nnUNetTrainer' differs from fold 0's" in msg

    plans_id = _copy(folder, tmp_path / "b2")
    ckpt = plans_id / "fold_1" / "checkpoint_final.pth"
    data = _load(ckpt)
    data["init_args"]["plans"]["plans_name"] = "nnUNetResEncUNetMPlans"
    torch.save(data, ckpt)
    msg = refused(plans_id)
    assert "trained with plans 'nnUNetResEncUNetMPlans', not" in msg
    assert "'nnUNetPlansMedsegCI'" in msg

    unsafe = _copy(folder, tmp_path / "b3")
    ckpt = unsafe / "fold_0" / "checkpoint_final.pth"
    _edit_checkpoint(ckpt, output_folder=PurePosixPath("/results/fold_0"))
    msg = refused(unsafe)
    assert "fold_0/checkpoint_final.pth: the checkpoint needs the global" in msg
    assert "'pathlib.PurePosixPath'" in msg

    for change, expected in (
        ("missing", "missing key 'decoder.seg_layers.0.weight'"),
        ("shape", "key 'decoder.seg_layers.0.weight' has shape"),
        ("extra", "unexpected key 'decoder.seg_layers.0.norm.running_mean'"),
    ):
        other = _copy(folder, tmp_path / f"arch-{change}")
        ckpt = other / "fold_0" / "checkpoint_final.pth"
        data = _load(ckpt)
        weights = data["network_weights"]
        if change == "missing":
            del weights["decoder.seg_layers.0.weight"]
        elif change == "shape":
            weights["decoder.seg_layers.0.weight"] = torch.zeros(2, 3, 1, 1, 1)
        else:
            weights["decoder.seg_layers.0.norm.running_mean"] = torch.zeros(3)
        torch.save(data, ckpt)
        msg = refused(other)
        assert "the weights are not the 3d_fullres network of plans.json" in msg, msg
        assert expected in msg, msg

    no_config = _copy(folder, tmp_path / "b4")
    plans = json.loads((no_config / "plans.json").read_text())
    del plans["configurations"]["3d_fullres"]
    (no_config / "plans.json").write_text(json.dumps(plans))
    msg = refused(no_config)
    assert "'3d_fullres' is not in" in msg and "planned: 2d" in msg

    no_labels = _copy(folder, tmp_path / "b5")
    ds = json.loads((no_labels / "dataset.json").read_text())
    del ds["labels"]
    (no_labels / "dataset.json").write_text(json.dumps(ds))
    assert "dataset.json: no 'labels'" in refused(no_labels)

    plans_differ = _copy(folder, tmp_path / "c")
    ckpt = plans_differ / "fold_1" / "checkpoint_final.pth"
    data = _load(ckpt)
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
        data = _load(ckpt)
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
        data = _load(ckpt)
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
