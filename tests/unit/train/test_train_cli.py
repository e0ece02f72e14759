"""``medseg train`` on the embedded MNI152 brain, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.cli.app import app

runner = CliRunner()


@pytest.mark.slow  # ~70 s on 2 shared cores: planning, patches, sliding-window validation
def test_train_attention_fusion_one_epoch_on_mni(mni_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        str(mni_dataset),
        "--arch",
        "attention-fusion",
        "--variant",
        "tiny",
        "--epochs",
        "1",
        "--patch",
        "64",
        "--val-fraction",  # a few validation slices: their sliding-window pass is most of the time
        "0.05",
        "--out",
        str(run),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output and "medseg export" in result.output
    assert (run / "model.pt").is_file() and (run / "training_curve.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--arch", "segformer"], "unknown architecture 'segformer'"),
        (["--patch", "100"], "multiples of 32"),
        (["--patch", "512"], "exceeds the cap 256x256"),
        (["--fold", "3", "--folds", "2"], "--fold 3 is outside 0..1"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    mni_dataset: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = runner.invoke(app, ["train", str(mni_dataset), "--out", str(tmp_path / "r"), *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "r").exists()
