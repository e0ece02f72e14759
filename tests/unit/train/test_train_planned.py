"""Planned training: the run records plan, recipe and fold split; cv-summary over folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.cli.app import app  # noqa: E402
from medseg.errors import ConfigError  # noqa: E402
from medseg.plan.planner import load_plan, plan_dataset, save_plan  # noqa: E402
from medseg.train import TrainConfig, load_checkpoint, train  # noqa: E402
from medseg.train.cv import summarise_runs  # noqa: E402

FAST = {"arch": "unet", "variant": "tiny", "lr": 5e-3, "epochs": 1, "steps_per_epoch": 4}
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_planned_run_records_plan_recipe_split_and_validation(
    toy_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(toy_dataset, run, TrainConfig(fold=1, folds=4, **FAST))
    meta = load_checkpoint(run).meta
    plan = load_plan(run / "plans.json")
    assert meta["plan"] == plan.to_dict() and meta["orientation"] == "RAS"
    recipe = meta["recipe"]
    assert recipe["size_policy"] == "window" and recipe["patch_size"] == list(plan.patch_size)
    assert recipe["target_spacing"] == list(plan.target_spacing)
    split = meta["split"]
    assert (split["fold"], split["folds"], split["kind"]) == (1, 4, "case-level")
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    assert meta["network_input_hw"] == list(plan.patch_size) == [32, 32]
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["batch_size"] == plan.batch_size and config["slice_axis"] == plan.slice_axis
    validation = json.loads((run / "validation.json").read_text())
    assert validation["fold"] == 1 and list(validation["cases"]) == split["val"]
    for name in ("disc", "ring"):
        assert 0.0 <= validation["mean"][name]["dice"] <= 1.0
        assert validation["mean"][name]["hd95"] >= 0.0


def test_plan_file_of_another_dataset_is_refused(
    toy_dataset: Path, make_toy_dataset, tmp_path: Path
) -> None:
    other = make_toy_dataset(tmp_path / "other", seed=5)
    plan_path = save_plan(plan_dataset(other), tmp_path / "plans.json")
    plan = load_plan(plan_path)
    with pytest.raises(ConfigError, match=r"fingerprint .* --force"):
        train(toy_dataset, tmp_path / "r", TrainConfig(**FAST), plan=plan)
    assert not (tmp_path / "r").exists()
    result = runner.invoke(
        app, ["train", str(toy_dataset), "--plan", str(plan_path), "--out", str(tmp_path / "r2")]
    )
    assert result.exit_code == 2 and "--force" in result.output
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_cv_summary_over_two_folds(toy_dataset: Path, tmp_path: Path) -> None:
    runs = []
    for fold in (0, 1):
        run = tmp_path / f"fold{fold}"
        train(toy_dataset, run, TrainConfig(fold=fold, folds=2, **FAST))
        runs.append(run)
    summary = summarise_runs(runs)
    assert summary.folds == 2 and summary.missing == ()
    assert [r.fold for r in summary.results] == [0, 1]
    assert sorted(c for r in summary.results for c in r.cases) == [f"toy_{i:03d}" for i in range(4)]
    assert set(summary.mean_dice) == {"disc", "ring"}
    result = runner.invoke(
        app, ["cv-summary", *map(str, runs), "--json", str(tmp_path / "cv.json")]
    )
    assert result.exit_code == 0, result.output
    assert (
        "mean ± sd" in result.output
        and json.loads((tmp_path / "cv.json").read_text())["folds"] == 2
    )
    with pytest.raises(ConfigError, match="fold 0 is given twice"):
        summarise_runs([runs[0], runs[0]])
    result = runner.invoke(app, ["cv-summary", str(tmp_path)])
    assert result.exit_code == 2 and "validation.json" in result.output


def test_plan_and_cohort_commands(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    result = runner.invoke(
        app, ["data", "mni152-cohort", str(cohort), "--cases", "2", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "one template brain" in result.output
    out = tmp_path / "plans.json"
    result = runner.invoke(app, ["plan", str(cohort), "--out", str(out), "--max-patch", "128"])
    assert result.exit_code == 0, result.output
    assert "target spacing" in result.output and load_plan(out).patch_size == (128, 128)
    result = runner.invoke(app, ["plan", str(cohort), "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    result = runner.invoke(
        app, ["plan", str(cohort), "--out", str(tmp_path / "p.json"), "--max-patch", "100"]
    )
    assert result.exit_code == 2 and "multiples of 32" in result.output
    result = runner.invoke(app, ["data", "mni152-cohort", str(tmp_path / "x"), "--cases", "0"])
    assert result.exit_code == 2 and "--cases" in result.output


def test_validation_windows_count_slices_smaller_than_the_patch(toy_dataset: Path) -> None:
    """A planned patch rounds the median slice up, so many slices are smaller than it: the
    time budget's validation sizing counts them padded (one window), as validation runs them."""
    from medseg.train.planned import load_planned_data, validation_subset, validation_windows

    data = load_planned_data(toy_dataset, TrainConfig(patch_size=(64, 96), fold=0), device="cpu")
    slices = sum(c.num_slices for c in data.val)
    assert validation_windows(data) == slices  # 32x32 slices padded to 64x96: one window each
    assert validation_windows(validation_subset(data, 3)) <= max(3, len(data.val))
