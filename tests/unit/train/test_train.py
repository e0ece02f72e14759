"""Training: the run directory, checkpoints, resume, augmentation, and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.cli.common import parse_patch_size  # noqa: E402
from medseg.errors import ConfigError, DatasetError  # noqa: E402
from medseg.train import TrainConfig, load_checkpoint, train  # noqa: E402
from medseg.train.augment import build_augmentation  # noqa: E402

FAST = {"arch": "unet", "variant": "tiny", "batch_size": 4, "lr": 5e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_directory_holds_a_loadable_checkpoint_and_logs(
    toy_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train(toy_dataset, run, TrainConfig(epochs=3, **FAST))
    for name in ("model.pt", "last.pt", "config.json", "metrics.jsonl", "training_curve.png"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == {"background": 0, "disc": 1, "ring": 2}
    assert config["recipe"]["modality"] == "MR" and config["recipe"]["slice_axis"] == 2
    assert config["split"]["kind"] == "case-level"
    assert len(config["dataset"]["fingerprint"]) == 16
    assert config["train"]["arch"] == "unet" and config["seed"] == 0
    assert config["best"]["epoch"] == result.best_epoch
    # the task is easy: a few epochs already separate the classes
    assert result.best_mean_dice > 0.5, result.epochs
    loaded = load_checkpoint(run)
    assert loaded.record["arch"] == "unet" and loaded.meta["classes"]["ring"] == 2
    payload = torch.load(run / "model.pt", weights_only=True)
    assert set(payload) == {"state_dict", "model", "meta"}
    with torch.no_grad():
        assert loaded.model(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.slow
def test_steps_after_a_validation_train_batchnorm_again(toy_dataset: Path, tmp_path: Path) -> None:
    """Validation puts the network in eval mode; the steps after it must leave it again, or
    BatchNorm would normalise with frozen running statistics for the rest of the run."""
    run = tmp_path / "run"
    means: list[torch.Tensor] = []

    def keep(_log: object) -> None:
        state = torch.load(run / "last.pt", weights_only=True)["state_dict"]
        means.append(torch.cat([v for k, v in state.items() if k.endswith("running_mean")]))

    train(toy_dataset, run, TrainConfig(epochs=2, **FAST), on_epoch=keep)
    assert len(means) == 2
    assert not torch.equal(means[1], means[0])  # epoch 2 (after validation 1) updated them


def test_resume_continues_and_checks_the_architecture(toy_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_dataset, run, TrainConfig(epochs=1, **FAST))
    with pytest.raises(ConfigError, match=r"not empty.*--force"):
        train(toy_dataset, run, TrainConfig(epochs=1, **FAST))
    result = train(toy_dataset, run, TrainConfig(epochs=2, **FAST), resume=True)
    assert [e.epoch for e in result.epochs] == [1, 2]
    with pytest.raises(ConfigError, match="already ran 2 epochs"):
        train(toy_dataset, run, TrainConfig(epochs=2, **FAST), resume=True)
    with pytest.raises(ConfigError, match="cannot resume it as attention-unet"):
        train(
            toy_dataset,
            run,
            TrainConfig(epochs=3, **{**FAST, "arch": "attention-unet"}),
            resume=True,
        )
    train(toy_dataset, run, TrainConfig(epochs=1, **FAST), force=True)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_without_a_run_is_an_error(toy_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot resume"):
        train(toy_dataset, tmp_path / "empty", TrainConfig(epochs=1, **FAST), resume=True)


def test_too_few_labels_and_too_small_dataset(
    tmp_path: Path, make_toy_dataset: Callable[..., Path]
) -> None:
    one_label = make_toy_dataset(tmp_path / "one", labels={"background": 0})
    with pytest.raises(DatasetError, match="at least one class"):
        train(one_label, tmp_path / "r1", TrainConfig(epochs=1, **FAST))
    assert not (tmp_path / "r1" / "model.pt").exists()
    small = make_toy_dataset(tmp_path / "small", num_cases=2, shape=(32, 32, 3))
    whole = {**FAST, "batch_size": 8, "geometry": "whole-slice"}
    with pytest.raises(DatasetError, match="fewer than the batch size 8"):
        train(small, tmp_path / "r2", TrainConfig(epochs=1, **whole))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "--batch-size 0 must be an integer in 1.."),
        ({"patch_size": (100, 128), "geometry": "whole-slice"}, "multiples of 16"),
        ({"patch_size": (48, 64)}, "multiples of 32"),
        ({"patch_size": (512, 512)}, "exceeds the cap 256x256"),
        ({"max_patch": (100, 100)}, "--max-patch 100x100 must be two multiples of 32"),
        ({"fold": 5, "folds": 5}, r"--fold 5 is outside 0..4"),
        ({"folds": 1}, "--folds 1 must be"),
        ({"geometry": "volume"}, "geometry"),
        ({"flip_axes": (2,)}, "flip axes"),
        ({"schedule": "step"}, "schedule"),
    ],
)
def test_bad_training_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_config_round_trip_and_unknown_keys() -> None:
    config = TrainConfig(patch_size=(64, 64), flip_axes=(0,))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {k: v for k, v in config.to_dict().items() if k not in ("geometry", "fold", "folds")}
    old.update(slice_axis=2, batch_size=8, patch_size=[128, 128])  # a record before plans
    assert TrainConfig.from_dict(old).geometry == "whole-slice"
    with pytest.raises(ConfigError, match="training config: unknown key momentum"):
        TrainConfig.from_dict({"epochs": 1, "momentum": 0.9})


def test_parse_patch_size() -> None:
    assert parse_patch_size("128") == (128, 128)
    assert parse_patch_size("128x160") == (128, 160)
    assert parse_patch_size(None) is None
    with pytest.raises(ConfigError, match="HxW"):
        parse_patch_size("big")


def test_augmentation_keeps_labels_as_classes_and_crops_to_patch() -> None:
    config = TrainConfig(patch_size=(32, 32), flip_axes=(0, 1), seed=3)
    aug = build_augmentation(config)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (1, 48, 64)).astype(np.float32)
    image = rng.normal(size=(2, 48, 64)).astype(np.float32)
    seen_change = False
    for _ in range(5):
        out = aug({"image": image, "label": label})
        assert tuple(out["image"].shape) == (2, 32, 32) and tuple(out["label"].shape) == (1, 32, 32)
        assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0, 2.0, 3.0}
        seen_change |= not np.allclose(np.asarray(out["image"]), image[:, :32, :32])
    assert seen_change
    # seeded: the same config gives the same first sample
    a = build_augmentation(config)({"image": image, "label": label})["image"]
    b = build_augmentation(config)({"image": image, "label": label})["image"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ConfigError, match="not a medseg checkpoint"):
        load_checkpoint(foreign)
    unknown = tmp_path / "unknown.pt"
    record = {
        "arch": "segformer",
        "variant": "b0",
        "in_channels": 1,
        "num_classes": 2,
        "config": {},
    }
    torch.save({"state_dict": {}, "model": record, "meta": {}}, unknown)
    with pytest.raises(ConfigError, match="unknown architecture 'segformer'"):
        load_checkpoint(unknown)
