"""The nnU-Net v2 raw layout reader: a valid dataset reads, each bad input is one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.nnunet import CaseFiles, DatasetSpec, NnUNetDataset, read_dataset_json
from medseg.errors import ConfigError

pytest.importorskip("nibabel")


def test_valid_dataset_spec_and_cases(dataset) -> None:
    ds = NnUNetDataset.open(dataset.root)
    spec = ds.spec
    assert isinstance(spec, DatasetSpec)
    assert spec.name == "ds"
    assert spec.root == dataset.root
    assert spec.channel_names == ("T1", "T2")
    assert spec.labels == {"background": 0, "CSF": 1, "GM": 2}
    assert spec.class_names == ("background", "CSF", "GM")
    assert (spec.file_ending, spec.num_training, spec.num_channels) == (".nii.gz", 3, 2)
    assert ds.case_ids("train") == ("case_000", "case_001", "case_002")
    assert ds.case_ids("test") == ("test_000",)
    case = ds.cases()[1]
    assert case == CaseFiles(
        "case_001",
        (dataset.image_path("case_001", 0), dataset.image_path("case_001", 1)),
        dataset.label_path("case_001"),
        "train",
    )
    assert ds.cases("test")[0].label is None
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        ds.cases("val")  # type: ignore[arg-type]


def test_load_case_stacks_channels_and_keeps_geometry(dataset) -> None:
    ds = NnUNetDataset.open(dataset.root)
    volume = ds.load_case(ds.cases()[0])
    assert volume.case_id == "case_000"
    assert volume.image.shape == (2, *dataset.shape)
    assert volume.image.dtype == np.float32
    np.testing.assert_array_equal(volume.image, dataset.images["case_000"])
    assert volume.label is not None
    assert volume.label.dtype == np.uint8
    np.testing.assert_array_equal(volume.label, dataset.labels["case_000"])
    np.testing.assert_allclose(volume.affine, dataset.affine)
    assert volume.spacing == dataset.spacing
    test = ds.load_case("test_000")
    assert test.label is None
    np.testing.assert_array_equal(test.image, dataset.images["test_000"])


def test_plain_nii_and_wide_labels(make_dataset) -> None:
    labels = {"background": 0, **{f"c{i}": i for i in range(1, 300)}}
    dataset = make_dataset(num_train=1, num_test=0, ending=".nii", labels=labels)
    label = dataset.labels["case_000"].astype(np.int16)
    label[0, 0, 0] = 299
    dataset.write(dataset.label_path("case_000"), label)
    volume = NnUNetDataset.open(dataset.root).load_case("case_000")
    assert volume.label is not None and volume.label.dtype == np.int16
    assert int(volume.label.max()) == 299


def test_int_images_and_singleton_4d_label(dataset) -> None:
    image = np.arange(np.prod(dataset.shape), dtype=np.int16).reshape(dataset.shape)
    dataset.write(dataset.image_path("case_000", 1), image)
    dataset.write(dataset.label_path("case_000"), dataset.labels["case_000"][..., None])
    volume = NnUNetDataset.open(dataset.root).load_case("case_000")
    np.testing.assert_array_equal(volume.image[1], image.astype(np.float32))
    assert volume.label is not None and volume.label.shape == dataset.shape


def test_unknown_case(dataset, dataset_error) -> None:
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(lambda: ds.load_case("case_999"), "no case 'case_999'", "case_000")


# --- the folder and dataset.json --------------------------------------------------------


def test_missing_folder_and_dataset_json(tmp_path: Path, dataset_error) -> None:
    dataset_error(lambda: NnUNetDataset.open(tmp_path / "nope"), "nope", "does not exist")
    dataset_error(lambda: NnUNetDataset.open(tmp_path), "no dataset.json", "channel_names")


def test_dataset_json_not_json(dataset, dataset_error) -> None:
    (dataset.root / "dataset.json").write_text('{"labels": ')
    dataset_error(lambda: NnUNetDataset.open(dataset.root), "dataset.json", "not valid JSON")


def test_dataset_json_missing_keys(dataset, dataset_error) -> None:
    dataset.edit_json(labels=None, file_ending=None)
    dataset_error(
        lambda: NnUNetDataset.open(dataset.root),
        str(dataset.root),
        "dataset.json is missing labels, file_ending",
        "channel_names, labels, numTraining, file_ending",
    )


def test_dataset_json_v1_is_recognised(dataset, dataset_error) -> None:
    dataset.edit_json(channel_names=None, modality={"0": "T1"}, labels={"0": "background"})
    dataset_error(
        lambda: NnUNetDataset.open(dataset.root),
        "missing channel_names",
        "nnU-Net v1",
        "v2 uses name -> value",
    )


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ({"background": 0, "CSF": "1"}, "labels.CSF must be an integer, got str '1'"),
        ({"background": 0, "CSF": 1.0}, "labels.CSF must be an integer, got float 1.0"),
        ({"background": 0, "brain": [1, 2], "CSF": 1}, "region lists ([1, 2])"),
        ({"CSF": 1, "GM": 2}, "no background value 0"),
        ({"background": 0, "CSF": 1, "GM": 3}, "consecutive 0..2, got 0, 1, 3"),
        ({"background": 0, "CSF": 1, "GM": 1}, "distinct and consecutive"),
        ({"background": 0, "CSF": True}, "labels.CSF must be an integer, got bool True"),
        ({"0": "background", "1": "CSF"}, 'integer values like {"background": 0'),
        ([0, 1], "labels must be an object"),
    ],
)
def test_dataset_json_odd_labels(dataset, labels, fragment: str, dataset_error) -> None:
    dataset.edit_json(labels=labels)
    dataset_error(lambda: read_dataset_json(dataset.root), "dataset.json labels", fragment)


def test_region_class_order_is_rejected(dataset, dataset_error) -> None:
    dataset.edit_json(regions_class_order=[1, 2])
    dataset_error(lambda: read_dataset_json(dataset.root), "region-based", "not supported")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"file_ending": ".mha"}, 'file_ending ".mha" is not supported; medseg reads NIfTI only'),
        ({"numTraining": "3"}, "numTraining must be an integer, got str '3'"),
        ({"numTraining": -1}, "numTraining must be a non-negative integer, got -1"),
        ({"channel_names": {"1": "T1"}}, "keys must be the channel indices 0, got 1"),
        ({"channel_names": ["T1"]}, 'channel_names must be an object like {"0": "T1"}'),
        ({"channel_names": {"0": ""}}, "channel_names.0 must be a non-empty string"),
        ({"name": 3}, "dataset.json name must be a string, got int 3"),
    ],
)
def test_dataset_json_bad_values(dataset, changes, fragment: str, dataset_error) -> None:
    dataset.edit_json(**changes)
    dataset_error(lambda: read_dataset_json(dataset.root), fragment)


def test_all_dataset_json_problems_in_one_line(dataset, dataset_error) -> None:
    dataset.edit_json(file_ending=".nrrd", numTraining=-1, labels={"a": 1})
    dataset_error(
        lambda: read_dataset_json(dataset.root),
        "has 3 problems",
        "nrrd",
        "numTraining",
        "background",
    )


# --- files --------------------------------------------------------------------------------


def test_missing_label_file(dataset, dataset_error) -> None:
    dataset.label_path("case_001").unlink()
    dataset_error(
        lambda: NnUNetDataset.open(dataset.root),
        f"dataset {dataset.root} has 1 problem: label file missing for 1 case: "
        "labelsTr/case_001.nii.gz",
    )


def test_missing_channel_file(dataset, dataset_error) -> None:
    dataset.image_path("case_002", 1).unlink()
    dataset_error(
        lambda: NnUNetDataset.open(dataset.root),
        "1 channel file missing: imagesTr/case_002_0001.nii.gz",
    )


def test_missing_images_folder(dataset, dataset_error) -> None:
    for path in (dataset.root / "imagesTr").iterdir():
        path.unlink()
    (dataset.root / "imagesTr").rmdir()
    dataset_error(lambda: NnUNetDataset.open(dataset.root), "imagesTr folder is missing")


def test_stray_files_do_not_block_opening(dataset) -> None:
    (dataset.root / "imagesTr" / "notes.txt").write_text("hello")
    (dataset.root / "imagesTr" / ".DS_Store").write_bytes(b"\0")
    assert NnUNetDataset.open(dataset.root).case_ids() == ("case_000", "case_001", "case_002")


def test_mismatched_image_label_shapes(dataset, dataset_error) -> None:
    dataset.write(dataset.label_path("case_001"), dataset.labels["case_001"][:, :, :-1])
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_001"),
        "case case_001",
        "labelsTr/case_001.nii.gz is 16x20x11, imagesTr/case_001_0000.nii.gz is 16x20x12",
    )


def test_mismatched_channel_shapes(dataset, dataset_error) -> None:
    dataset.write(dataset.image_path("case_000", 1), dataset.images["case_000"][1, 1:])
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(lambda: ds.load_case("case_000"), "imagesTr/case_000_0001.nii.gz is 15x20x12")


def test_mismatched_affines(dataset, dataset_error) -> None:
    shifted = dataset.affine.copy()
    shifted[0, 3] += 0.5
    dataset.write(dataset.image_path("case_000", 1), dataset.images["case_000"][1], shifted)
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_000"),
        "affine different",
        "imagesTr/case_000_0001.nii.gz differs from imagesTr/case_000_0000.nii.gz by up to 0.5 mm",
    )


def test_tiny_affine_difference_is_tolerated(dataset) -> None:
    nudged = dataset.affine.copy()
    nudged[0, 3] += 1e-4
    dataset.write(dataset.label_path("case_000"), dataset.labels["case_000"], nudged)
    NnUNetDataset.open(dataset.root).load_case("case_000")


def test_label_value_not_in_labels(dataset, dataset_error) -> None:
    label = dataset.labels["case_002"].copy()
    label[0, 0, 0], label[1, 0, 0] = 7, 5
    dataset.write(dataset.label_path("case_002"), label)
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_002"),
        "values not in dataset.json labels (0..2)",
        "labelsTr/case_002.nii.gz has 5, 7",
    )


def test_non_integer_label(dataset, dataset_error) -> None:
    label = dataset.labels["case_000"].astype(np.float32)
    label[0, 0, 0] = 0.5
    dataset.write(dataset.label_path("case_000"), label)
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(lambda: ds.load_case("case_000"), "non-integer values: labelsTr/case_000.nii.gz")


def test_corrupt_file(dataset, dataset_error) -> None:
    path = dataset.image_path("case_001", 0)
    path.write_bytes(np.random.default_rng(3).bytes(4000))
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_001"), "unreadable file: imagesTr/case_001_0000.nii.gz (corrupt"
    )


def test_truncated_file(dataset, dataset_error) -> None:
    dataset.truncate(dataset.label_path("case_000"))
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_000"), "unreadable file: labelsTr/case_000.nii.gz (truncated"
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(dataset, bad: float, dataset_error) -> None:
    image = dataset.images["case_001"][0].copy()
    image[3, 4, 5] = bad
    image[0, 0, 0] = bad
    dataset.write(dataset.image_path("case_001", 0), image)
    ds = NnUNetDataset.open(dataset.root)
    dataset_error(
        lambda: ds.load_case("case_001"),
        "NaN/Inf voxels: imagesTr/case_001_0000.nii.gz (2 voxels)",
    )
