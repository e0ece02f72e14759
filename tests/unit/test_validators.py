"""Issue 22, items 14-24: bad options and files refused by the shared validators, in one line.

Each family is checked where its rule lives (``medseg.limits``, the schema dataclasses, the
serve and server-URL checks), so every command that reads the option or file gets it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medseg.errors import ConfigError, MedsegError

REPO = Path(__file__).resolve().parents[2]
DEMO_BUNDLE = REPO / "models" / "mni152-tissue" / "bundle"


def _refused(call: object, *words: str) -> str:
    with pytest.raises(MedsegError) as exc:
        call()  # type: ignore[operator]
    message = str(exc.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"val_fraction": 1.5}, ("--val-fraction 1.5", "(0, 1)")),
        ({"val_fraction": math.nan}, ("--val-fraction nan",)),
        ({"batch_size": 100000}, ("--batch-size 100000", "1..1024")),
        ({"lr": math.inf}, ("--lr inf",)),
        ({"epochs": 10**7}, ("--epochs",)),
    ],
)
def test_training_options(changes: dict[str, object], words: tuple[str, ...]) -> None:
    from medseg.train.config import TrainConfig

    _refused(lambda: TrainConfig(**changes), *words)  # type: ignore[arg-type]


def test_plans_json_batch_size_and_orientation(tmp_path: Path) -> None:
    from medseg.plan.planner import Plan

    good = {
        "dataset": "d", "fingerprint": "f", "channel_names": ("MR",), "labels": {"bg": 0},
        "modality": "MR", "slice_axis": 2, "target_spacing": (1.0, 1.0),
        "patch_size": (64, 64), "batch_size": 8,
    }  # fmt: skip
    Plan(**good)  # type: ignore[arg-type]
    _refused(lambda: Plan(**{**good, "batch_size": 100000}), "plan batch_size 100000")  # type: ignore[arg-type]
    _refused(lambda: Plan(**{**good, "orientation": "QQQ"}), "plan orientation 'QQQ'")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"int8": True, "max_dice_drop": math.nan}, ("--max-dice-drop nan",)),
        ({"batch": (1, 8, 100000)}, ("--batch 1:8:100000", "at most 1024")),
        ({"calib_slices": 5}, ("--calib-slices", "--int8")),
        ({"calib_method": "entropy"}, ("--calib-method", "--int8")),
        ({"calib_data": DEMO_BUNDLE}, ("--calib-data", "--int8")),
    ],
)
def test_export_options(kwargs: dict[str, object], words: tuple[str, ...], tmp_path: Path) -> None:
    from medseg.export.options import ExportOptions

    if kwargs.get("int8"):
        kwargs = {**kwargs, "calib_data": tmp_path}
    _refused(lambda: ExportOptions(**kwargs), *words)  # type: ignore[arg-type]


def test_a_manifest_with_duplicate_class_values_is_refused(tmp_path: Path) -> None:
    from medseg.bundle import Manifest

    data = json.loads((DEMO_BUNDLE / "medseg.json").read_text())
    data["classes"]["GM"] = 1
    _refused(lambda: Manifest.from_dict(data), "classes", "0..3", "[0, 1, 1, 3]")


def _record(folder: Path, fold: object, folds: object, dice: object, case: str = "a") -> Path:
    folder.mkdir(parents=True)
    content = {
        "fingerprint": "f", "plan_fingerprint": "p", "fold": fold, "folds": folds,
        "cases": {case: {"disc": {"dice": dice, "hd95": 1.0}}},
    }  # fmt: skip
    (folder / "validation.json").write_text(json.dumps(content))
    return folder


@pytest.mark.parametrize(
    ("fold", "folds", "dice", "words"),
    [
        ("one", 3, 0.9, ("fold", "must be an integer", "'one'")),
        (7, 3, 0.9, ("fold 7 must be in 0..2",)),
        (0, 3, 7.5, ("dice 7.5", "0..1")),
        (0, 3, math.nan, ("dice nan",)),
    ],
)
def test_cv_summary_refuses_impossible_records(
    tmp_path: Path, fold: object, folds: object, dice: object, words: tuple[str, ...]
) -> None:
    from medseg.train.cv import summarise_runs

    run = _record(tmp_path / "run", fold, folds, dice)
    _refused(lambda: summarise_runs([run]), "validation.json", *words)


def test_cv_summary_refuses_a_case_in_two_folds(tmp_path: Path) -> None:
    from medseg.train.cv import summarise_runs

    runs = [_record(tmp_path / f"f{k}", k, 3, 0.9) for k in (0, 1)]
    _refused(lambda: summarise_runs(runs), "case a is validated in two folds")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", ("Invalid IPv6 URL",)),
        ("http://h:99999", ("Port out of range",)),
        ("http://h:0", ("port 0",)),
        ("h:80/x", ("expected http://HOST:PORT",)),
    ],
)
def test_server_urls(url: str, words: tuple[str, ...]) -> None:
    from medseg.deploy.remote import parse_server_url

    _refused(lambda: parse_server_url(url), f"--server {url}", *words)
    assert parse_server_url("http://[::1]:8000") == ("http", "[::1]:8000")


def test_serve_options(tmp_path: Path) -> None:
    from medseg.deploy.server import ServerOptions, check_serve_options

    _refused(lambda: ServerOptions(host="999.1.1.1"), "--host 999.1.1.1", "not a valid IP")
    _refused(lambda: ServerOptions(host="no-such-host.invalid"), "does not resolve")
    for bad in (-1.0, math.nan, 0.0, math.inf):
        _refused(lambda bad=bad: check_serve_options(bad, None), "--ready-timeout")
    _refused(lambda: check_serve_options(5.0, tmp_path), "--log", "is a folder")
    _refused(lambda: check_serve_options(5.0, tmp_path / "no" / "log.txt"), "does not exist")
    check_serve_options(5.0, tmp_path / "log.txt")


def test_serve_settings_of_a_repository_are_refused(tmp_path: Path) -> None:
    from medseg.deploy.server import TritonInstall
    from medseg.deploy.serving import plan_serving

    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    install = TritonInstall(binary=tmp_path / "tritonserver")
    given: list[tuple[dict[str, object], str]] = [
        ({"precision": "fp16"}, "--precision"),
        ({"max_voxels": 10}, "--max-voxels"),
    ]
    for kwargs, word in given:
        _refused(
            lambda kwargs=kwargs: plan_serving(repo, tmp_path / "w", install, **kwargs),  # type: ignore[arg-type]
            word,
            "model repository",
        )


def test_sizes_name_the_option_and_the_unit() -> None:
    from medseg.build.options import parse_size

    _refused(
        lambda: parse_size("1000TB", "--workspace"), "--workspace '1000TB'", "unknown unit 'TB'"
    )
    _refused(lambda: parse_size("9999GiB", "--workspace"), "at most 1 TiB")


def test_the_limits_module_message() -> None:
    from medseg.limits import check_batch, check_number

    with pytest.raises(ConfigError, match=r"^--x nan must be a finite number in \(0, 1\)$"):
        check_number(math.nan, "--x", low=0, high=1, low_open=True, high_open=True)
    with pytest.raises(ConfigError, match=r"^--b 0 must be an integer in 1\.\.1024$"):
        check_batch(0, "--b")


@pytest.mark.slow  # imports torch and the nnU-Net importer
def test_nan_weights_in_an_nnunet_checkpoint_are_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from medseg.importers.nnunet_folder import _check_finite

    weights = {"conv.weight": torch.ones(2, 2), "conv.bias": torch.tensor([1.0, math.nan])}
    where = tmp_path / "fold_0" / "checkpoint_final.pth"
    _refused(lambda: _check_finite(where, weights), str(where), "conv.bias", "NaN")
    _check_finite(where, {"conv.weight": torch.ones(2, 2), "steps": torch.tensor([3])})


def test_an_nnunet_dataset_json_without_labels_is_named() -> None:
    from medseg.data.dataset_json import _parse_spec

    raw = {"channel_names": {"0": "CT"}, "numTraining": 2, "file_ending": ".nii.gz"}
    _, problems = _parse_spec(Path("R"), raw)
    assert problems and "labels" in problems[0]
