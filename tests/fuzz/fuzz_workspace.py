"""The files the fuzz cases read: real good inputs, and each bad input made from one of them.

Everything lives under one folder (``root/in``); outputs go to ``root/out`` (empty at the
start of every case). Good inputs: ``B`` (the committed demo bundle, hard-linked), ``RUN``
(the committed demo run), ``DS`` (a 4-case toy dataset), ``S`` (one of its images), ``PLAN``
(its plans.json). Each bad input is named for what is wrong with it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEMO_RUN = REPO / "models" / "mni152-tissue"

__all__ = ["REPO", "build_workspace"]


def _link_tree(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose files are hard links (no data copied; nothing may write them)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.unlink()  # a hard link: replace the file, not the shared content
    path.write_text(json.dumps(data))


def _bundle_variants(root: Path) -> dict[str, Path]:
    b = _link_tree(DEMO_RUN / "bundle", root / "B")
    out = {"B": b}

    def variant(name: str, edit: Callable[[dict], object]) -> None:
        folder = _link_tree(b, root / name)
        _edit_json(folder / "medseg.json", edit)
        out[name] = folder

    variant("B_dup_classes", lambda m: m["classes"].update({"GM": 1}))
    variant("B_channels2", lambda m: m["input"].update({"channels": 2}))
    variant(
        "B_classes2",
        lambda m: m.update({"classes": {"background": 0, "CSF": 1}, "postprocess": None}),
    )
    variant("B_input_name", lambda m: m["input"].update({"name": "no_such_input"}))
    variant("B_schema99", lambda m: m.update({"schema_version": 99}))
    variant("B_unknown_key", lambda m: m.update({"surprise": 1}))
    variant("B_height_str", lambda m: m["input"]["height"].update({"min": "1"}))
    garbage = _link_tree(b, root / "B_garbage_json")
    (garbage / "medseg.json").unlink()
    (garbage / "medseg.json").write_text("{not json")
    no_manifest = _link_tree(b, root / "B_no_manifest")
    (no_manifest / "medseg.json").unlink()
    no_onnx = _link_tree(b, root / "B_no_onnx")
    (no_onnx / "model.onnx").unlink()
    tampered = _link_tree(b, root / "B_tampered")
    (tampered / "model.onnx").unlink()
    (tampered / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:-10] + b"0123456789")
    out.update(
        B_garbage_json=garbage, B_no_manifest=no_manifest, B_no_onnx=no_onnx, B_tampered=tampered
    )
    return out


def _scans(root: Path, good: Path) -> dict[str, Path]:
    import nibabel as nib

    from medseg.data.nifti import save_nifti

    d = root / "scans"
    d.mkdir()
    image = np.asarray(nib.load(good).dataobj, dtype=np.float32)
    out: dict[str, Path] = {}
    raw = bytearray(good.read_bytes())
    raw[-6] ^= 0xFF  # the gzip CRC
    (d / "crc.nii.gz").write_bytes(bytes(raw))
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    (d / "huge.nii").write_bytes(header.binaryblock + b"\0" * 700)
    header.set_data_shape((1000, 1000, 1000))
    (d / "short.nii").write_bytes(header.binaryblock + b"\0" * 700)
    with gzip.open(d / "short.nii.gz", "wb") as f:
        f.write(header.binaryblock + b"\0" * 700)
    nib.save(nib.Nifti1Image(np.zeros((120, 42, 0), np.float32), np.eye(4)), d / "empty_dim.nii.gz")
    save_nifti(d / "zero.nii.gz", np.zeros_like(image), np.eye(4))
    save_nifti(d / "constant.nii.gz", np.full_like(image, 7.0), np.eye(4))
    save_nifti(d / "four_d.nii.gz", np.stack([image, image], axis=-1), np.eye(4))
    save_nifti(d / "spacing100.nii.gz", image, np.diag([1.0, 1.0, 100.0, 1.0]))
    save_nifti(d / "probabilities.nii.gz", image / (image.max() + 1.0), np.eye(4))
    save_nifti(d / "other_shape.nii.gz", image[:-1].astype(np.uint8), np.eye(4))
    save_nifti(d / "complex_ok_shape.nii.gz", image[:, :, :3], np.eye(4))
    (d / "text.nii.gz").write_text("not a nifti file\n")
    (d / "empty.nii.gz").write_bytes(b"")
    (d / "truncated.nii.gz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (d / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in (
        "crc.nii.gz", "huge.nii", "short.nii", "short.nii.gz", "empty_dim.nii.gz", "zero.nii.gz",
        "constant.nii.gz", "four_d.nii.gz", "spacing100.nii.gz", "probabilities.nii.gz",
        "other_shape.nii.gz", "complex_ok_shape.nii.gz", "text.nii.gz", "empty.nii.gz",
        "truncated.nii.gz", "scan.png",
    ):  # fmt: skip
        out[name] = d / name
    return out


def _dicoms(root: Path) -> dict[str, Path]:
    import pydicom
    from pydicom.data import get_testdata_file

    source = Path(str(get_testdata_file("CT_small.dcm")))
    out: dict[str, Path] = {}

    def series(name: str, edit: Callable[[pydicom.Dataset], object] | None = None) -> None:
        folder = root / "dicom" / name
        folder.mkdir(parents=True)
        ds = pydicom.dcmread(source)
        if edit is not None:
            edit(ds)
        ds.save_as(folder / "slice.dcm")
        out[f"dcm_{name}"] = folder

    series("slope0", lambda ds: setattr(ds, "RescaleSlope", 0))
    series("pixel_spacing0", lambda ds: setattr(ds, "PixelSpacing", [0, 0]))
    empty = root / "dicom" / "empty"
    empty.mkdir()
    cut = root / "dicom" / "cut200"
    cut.mkdir()
    (cut / "a.dcm").write_bytes(source.read_bytes()[:200])
    text = root / "dicom" / "text"
    text.mkdir()
    (text / "readme.txt").write_text("hello")
    out.update(dcm_empty=empty, dcm_cut200=cut, dcm_text=text)
    return out


def _datasets(root: Path, ds: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}

    def variant(name: str, edit: Callable[[Path], object]) -> None:
        folder = shutil.copytree(ds, root / name)
        edit(folder)
        out[name] = folder

    def set_json(**changes: object) -> Callable[[Path], object]:
        return lambda f: _edit_json(f / "dataset.json", lambda d: d.update(changes))

    variant("DS_file_ending", set_json(file_ending=".nii"))
    variant("DS_num_training", set_json(numTraining=7))
    variant("DS_no_labels", lambda f: _edit_json(f / "dataset.json", lambda d: d.pop("labels")))
    variant("DS_v1_labels", set_json(labels={"0": "background", "1": "disc"}))
    variant("DS_dup_labels", set_json(labels={"background": 0, "disc": 1, "ring": 1}))
    variant("DS_garbage_json", lambda f: (f / "dataset.json").write_text("{"))
    variant(
        "DS_no_cases",
        lambda f: (
            [p.unlink() for p in (*f.glob("imagesTr/*"), *f.glob("labelsTr/*"))]
            and _edit_json(f / "dataset.json", lambda d: d.update(numTraining=0))
        ),
    )
    variant(
        "DS_no_suffix",
        lambda f: (f / "imagesTr" / "toy_000_0000.nii.gz").rename(
            f / "imagesTr" / "toy_000.nii.gz"
        ),
    )
    variant(
        "DS_orphan_label",
        lambda f: shutil.copy(f / "labelsTr" / "toy_000.nii.gz", f / "labelsTr" / "toy_999.nii.gz"),
    )
    variant(
        "DS_crc",
        lambda f: (f / "imagesTr" / "toy_001_0000.nii.gz").write_bytes(
            _flip_crc((f / "imagesTr" / "toy_001_0000.nii.gz").read_bytes())
        ),
    )
    variant("DS_constant", lambda f: _constant_image(f / "imagesTr" / "toy_002_0000.nii.gz"))
    variant("DS_label_9", lambda f: _label_value(f / "labelsTr" / "toy_003.nii.gz", 9))
    return out


def _flip_crc(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[-6] ^= 0xFF
    return bytes(raw)


def _constant_image(path: Path) -> None:
    from medseg.data.nifti import load_nifti, save_nifti

    img = load_nifti(path)
    save_nifti(path, np.zeros_like(img.data), img.affine)


def _label_value(path: Path, value: int) -> None:
    from medseg.data.nifti import load_nifti, save_nifti

    img = load_nifti(path)
    data = np.asarray(img.data).copy()
    data[0, 0, 0] = value
    save_nifti(path, data, img.affine)


def _plans(root: Path, ds: Path) -> dict[str, Path]:
    from medseg.plan.planner import plan_dataset, save_plan

    (root / "plans").mkdir()
    good = save_plan(plan_dataset(ds), root / "plans" / "plans.json")
    out = {"PLAN": good}
    for name, edit in (
        ("plan_batch_huge", lambda p: p["configuration"].update({"batch_size": 100000})),
        ("plan_orientation_qqq", lambda p: p["configuration"].update({"orientation": "QQQ"})),
        ("plan_batch_zero", lambda p: p["configuration"].update({"batch_size": 0})),
        ("plan_spacing_nan", lambda p: p["configuration"].update({"target_spacing": [1, "x"]})),
    ):
        path = root / "plans" / f"{name}.json"
        shutil.copy(good, path)
        _edit_json(path, edit)
        out[name] = path
    garbage = root / "plans" / "plan_garbage.json"
    garbage.write_text("[1, 2")
    out["plan_garbage"] = garbage
    return out


def _cv_records(root: Path) -> dict[str, Path]:
    def record(fold: object, folds: object, cases: dict[str, float]) -> dict[str, object]:
        return {
            "dataset": "toy", "fingerprint": "f", "plan_fingerprint": "p", "fold": fold,
            "folds": folds,
            "cases": {c: {"disc": {"dice": d, "hd95": 1.0}} for c, d in cases.items()},
        }  # fmt: skip

    out: dict[str, Path] = {}
    for name, content in (
        ("cv_fold_one", record("one", 3, {"a": 0.9})),
        ("cv_fold_7_of_3", record(7, 3, {"a": 0.9})),
        ("cv_dice_7_5", record(0, 3, {"a": 7.5})),
        ("cv_dice_nan", record(0, 3, {"a": float("nan")})),
        ("cv_case_twice_a", record(0, 3, {"a": 0.9})),
        ("cv_case_twice_b", record(1, 3, {"a": 0.8})),
        ("cv_folds_1", record(0, 1, {"a": 0.9})),
        ("cv_not_object", [1, 2]),
        ("cv_no_cases", {"fold": 0, "folds": 3, "fingerprint": "f"}),
    ):
        folder = root / "cv" / name
        folder.mkdir(parents=True)
        (folder / "validation.json").write_text(json.dumps(content))
        out[name] = folder
    garbage = root / "cv" / "cv_garbage"
    garbage.mkdir()
    (garbage / "validation.json").write_text("{")
    out["cv_garbage"] = garbage
    return out


def _nnunet_results(root: Path) -> dict[str, Path]:
    """Result folders of nnU-Net's layout with one thing wrong each (no real training)."""
    out: dict[str, Path] = {}
    base = root / "nnunet" / "Dataset001_Toy" / "nnUNetTrainer__nnUNetPlans__2d"

    def result(name: str, dataset_json: object, *, checkpoint: bytes | None = b"not torch") -> None:
        folder = base.parent.parent / name / base.name
        (folder / "fold_0").mkdir(parents=True)
        (folder / "plans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
        (folder / "dataset_fingerprint.json").write_text("{}")
        if checkpoint is not None:
            (folder / "fold_0" / "checkpoint_final.pth").write_bytes(checkpoint)
        out[name] = folder

    good_json = {
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "disc": 1},
        "numTraining": 4, "file_ending": ".nii.gz",
    }  # fmt: skip
    result("R_not_torch", good_json)
    result("R_no_checkpoint", good_json, checkpoint=None)
    result("R_no_labels", {k: v for k, v in good_json.items() if k != "labels"})
    empty = root / "nnunet" / "R_empty"
    empty.mkdir(parents=True)
    out["R_empty"] = empty
    return out


def build_workspace(root: Path, toy_data: Path) -> dict[str, Path]:
    """Write every input of the fuzz cases under ``root/in``; name -> path.

    Args:
        root: an empty folder.
        toy_data: the session's 4-case toy dataset (copied, never written).
    """
    inputs = root / "in"
    inputs.mkdir(parents=True)
    ds = shutil.copytree(toy_data, inputs / "DS")
    run = inputs / "RUN"
    run.mkdir()
    for name in ("config.json", "model.pt", "metrics.jsonl"):
        os.link(DEMO_RUN / name, run / name)
    paths: dict[str, Path] = {"DS": ds, "RUN": run, "S": ds / "imagesTr" / "toy_000_0000.nii.gz"}
    paths["LABEL"] = ds / "labelsTr" / "toy_000.nii.gz"
    paths.update(_bundle_variants(inputs))
    paths.update(_scans(inputs, paths["S"]))
    paths.update(_dicoms(inputs))
    paths.update(_datasets(inputs, ds))
    paths.update(_plans(inputs, ds))
    paths.update(_cv_records(inputs))
    paths.update(_nnunet_results(inputs))
    repo = inputs / "REPO"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    paths["REPO"] = repo
    existing = inputs / "existing_file.txt"
    existing.write_text("a file that is not a folder\n")
    paths["FILE"] = existing
    (root / "out").mkdir()
    return paths
