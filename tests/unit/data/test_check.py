"""``check_dataset``: a clean report on a valid dataset, every problem collected into one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import medseg.data.nnunet as nnunet_module
from medseg.cli.tables import dataset_report
from medseg.data.check import DatasetReport, check_dataset
from medseg.errors import ConfigError

pytest.importorskip("nibabel")


def test_valid_dataset_checks_clean(dataset) -> None:
    report = check_dataset(dataset.root)
    assert isinstance(report, DatasetReport)
    assert (report.name, report.root) == ("ds", dataset.root)
    assert (report.num_train_cases, report.num_test_cases) == (3, 1)
    assert report.channel_names == ("T1", "T2")
    assert report.labels == {"background": 0, "CSF": 1, "GM": 2}
    counts = sum(np.bincount(lab.ravel(), minlength=3) for lab in dataset.labels.values())
    assert report.label_voxels == {"background": counts[0], "CSF": counts[1], "GM": counts[2]}
    assert all(v > 0 for v in report.label_voxels.values())
    assert [c.case_id for c in report.cases] == ["case_000", "case_001", "case_002", "test_000"]
    assert report.shapes == dict.fromkeys(dataset.images, dataset.shape)
    assert report.spacings["case_001"] == dataset.spacing
    assert report.spacing_min == report.spacing_median == report.spacing_max == dataset.spacing
    assert [c.labelled for c in report.cases] == [True, True, True, False]


def test_intensities_are_foreground_ranges(dataset) -> None:
    report = check_dataset(dataset.root, subsets=("train",))
    assert report.num_test_cases == 0
    t1 = report.intensities[0]
    assert t1.channel == "T1"
    foreground = np.concatenate(
        [dataset.images[c][0][dataset.labels[c] > 0] for c in dataset.train_ids]
    )
    assert t1.min == pytest.approx(float(foreground.min()))
    assert t1.max == pytest.approx(float(foreground.max()))
    assert t1.num_voxels == foreground.size
    assert t1.num_samples == foreground.size  # fewer foreground voxels than samples_per_case
    assert t1.min <= t1.p0_5 <= t1.median <= t1.p99_5 <= t1.max
    assert t1.median == pytest.approx(float(np.median(foreground)))
    sampled = check_dataset(dataset.root, subsets=("train",), samples_per_case=50)
    assert sampled.intensities[1].num_samples == 150
    again = check_dataset(dataset.root, subsets=("train",), samples_per_case=50)
    assert again.intensities == sampled.intensities  # reproducible


def test_report_to_dict_and_render(dataset) -> None:
    from rich.console import Console

    report = check_dataset(dataset.root)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["num_train_cases"] == 3
    assert payload["labels"] == report.label_voxels
    assert payload["label_values"] == {"background": 0, "CSF": 1, "GM": 2}
    assert payload["spacing"]["median"] == list(dataset.spacing)
    assert payload["cases"][0]["shape"] == list(dataset.shape)
    assert payload["intensities"][1]["channel"] == "T2"
    console = Console(file=io.StringIO(), width=120)
    console.print(dataset_report(report, max_cases=2))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for fragment in ("Dataset ds", "GM", "T2", "case_001", "and 2 more cases", "1 x 1 x 2.5"):
        assert fragment in text


def test_each_case_file_is_read_once(dataset, monkeypatch) -> None:
    calls: list[str] = []
    real = nnunet_module.load_nifti

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(nnunet_module, "load_nifti", counting)
    check_dataset(dataset.root)
    assert len(calls) == len(set(calls)) == 3 * 3 + 2


def test_bad_arguments(dataset) -> None:
    with pytest.raises(ConfigError, match="'train' and/or 'test'"):
        check_dataset(dataset.root, subsets=("val",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples_per_case"):
        check_dataset(dataset.root, samples_per_case=0)


def test_missing_label_file(dataset, dataset_error) -> None:
    dataset.label_path("case_001").unlink()
    dataset_error(
        lambda: check_dataset(dataset.root),
        f"dataset {dataset.root} has 1 problem: label file missing for 1 case: "
        "labelsTr/case_001.nii.gz",
    )


def test_missing_channel_file(dataset, dataset_error) -> None:
    dataset.image_path("test_000", 0, "test").unlink()
    dataset_error(
        lambda: check_dataset(dataset.root), "1 channel file missing: imagesTs/test_000_0000.nii.gz"
    )
    check_dataset(dataset.root, subsets=("train",))  # the test subset is not checked


def test_num_training_mismatch(dataset, dataset_error) -> None:
    dataset.edit_json(numTraining=5)
    dataset_error(
        lambda: check_dataset(dataset.root),
        "numTraining is 5 in dataset.json but imagesTr has 3 cases",
    )


def test_stray_and_orphan_files(dataset, dataset_error) -> None:
    (dataset.root / "imagesTr" / "notes.txt").write_text("x")
    (dataset.root / "imagesTr" / "case_000_0.nii.gz").write_bytes(b"x")
    dataset.write(dataset.root / "imagesTr" / "case_000_0002.nii.gz", dataset.images["case_000"][0])
    dataset.write(dataset.label_path("case_777"), dataset.labels["case_000"])
    (dataset.root / "labelsTr" / "readme.md").write_text("x")
    dataset_error(
        lambda: check_dataset(dataset.root),
        "has 5 problems",
        # an image of the dataset's type without its channel suffix is named as such (its
        # case would be dropped); other files are stray
        "1 image file in imagesTr without the channel suffix (expected <case>_0000.nii.gz): "
        "imagesTr/case_000_0.nii.gz",
        "1 stray file in imagesTr (expected <case>_<XXXX>.nii.gz): imagesTr/notes.txt",
        "1 image file with a channel not in channel_names (0000..0001): "
        "imagesTr/case_000_0002.nii.gz",
        "1 label file without images in imagesTr: labelsTr/case_777.nii.gz",
        "1 stray file in labelsTr (expected <case>.nii.gz): labelsTr/readme.md",
    )


def test_content_problems(dataset, dataset_error) -> None:
    dataset.write(dataset.label_path("case_000"), dataset.labels["case_000"][1:])
    shifted = dataset.affine.copy()
    shifted[2, 3] = 3.0
    dataset.write(dataset.image_path("case_001", 1), dataset.images["case_001"][1], shifted)
    dataset_error(
        lambda: check_dataset(dataset.root),
        "has 2 problems",
        "1 file with a shape different from channel 0000: labelsTr/case_000.nii.gz is 15x20x12, "
        "imagesTr/case_000_0000.nii.gz is 16x20x12",
        "imagesTr/case_001_0001.nii.gz differs from imagesTr/case_001_0000.nii.gz by up to 18 mm",
    )


def test_invalid_dataset_json_stops_the_check(dataset, dataset_error) -> None:
    dataset.edit_json(labels={"background": 0, "CSF": [1, 2]})
    dataset_error(lambda: check_dataset(dataset.root), "dataset.json labels", "region")


def test_collects_several_problems_into_one_line(dataset, dataset_error) -> None:
    dataset.edit_json(numTraining=4)
    dataset.label_path("case_000").unlink()
    dataset.image_path("case_001", 0).write_bytes(np.random.default_rng(0).bytes(3000))
    dataset.truncate(dataset.image_path("case_001", 1))
    label = dataset.labels["case_002"].copy()
    label[0, 0, 0] = 9
    dataset.write(dataset.label_path("case_002"), label)
    image = dataset.images["test_000"][1].copy()
    image[2, 2, 2] = np.nan
    dataset.write(dataset.image_path("test_000", 1, "test"), image)
    message = dataset_error(
        lambda: check_dataset(dataset.root),
        f"dataset {dataset.root} has 5 problems: ",
        "label file missing for 1 case: labelsTr/case_000.nii.gz",
        "numTraining is 4 in dataset.json but imagesTr has 3 cases",
        "2 unreadable files: imagesTr/case_001_0000.nii.gz (corrupt",
        "imagesTr/case_001_0001.nii.gz (truncated",
        "1 label file with values not in dataset.json labels (0..2): "
        "labelsTr/case_002.nii.gz has 9",
        "1 file with NaN/Inf voxels: imagesTs/test_000_0001.nii.gz (1 voxel)",
    )
    assert message.count(";") == 4


def test_many_problems_are_abbreviated(make_dataset, dataset_error) -> None:
    dataset = make_dataset(num_train=8, num_test=0)
    for case in dataset.train_ids:
        dataset.label_path(case).unlink()
    message = dataset_error(
        lambda: check_dataset(dataset.root),
        "label file missing for 8 cases: labelsTr/case_000.nii.gz, ",
        "labelsTr/case_004.nii.gz and 3 more",
    )
    assert "case_005" not in message
