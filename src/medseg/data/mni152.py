"""The embedded real dataset: the MNI ICBM152 2009a brain template with tissue labels.

The template's T1 image and its grey- and white-matter probability maps ship as files
inside the ``nilearn`` wheel (``nilearn/datasets/data/mni_icbm152_*``); they are read as
files, nilearn itself is never imported, and nothing is downloaded. Labels follow
DESIGN.md: brain = T1 > 0; CSF = clip(1 - GM - WM, 0, 1); label = argmax(CSF, GM, WM) + 1
inside the brain, 0 outside (ties go to the first class). 197 x 233 x 189 voxels at 1 mm.

It is ONE template brain (an average of 152 subjects): results on it say that the
pipeline works on real anatomy, not how a model generalises across patients.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_dir
from medseg.data.nifti import load_nifti, save_nifti
from medseg.errors import DatasetError, MissingDependencyError
from medseg.outputs import Output, guard, write_marker

__all__ = ["MNI152_CASE_ID", "MNI152_LABELS", "mni152_source_dir", "mni152_volume", "write_mni152"]

MNI152_CASE_ID = "MNI152_001"
MNI152_LABELS: dict[str, int] = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_NOTICE = (
    "MNI ICBM152 2009a nonlinear symmetric template (Fonov et al., NeuroImage 2011; 2009). "
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
    "Neurological Institute, McGill University. Files as shipped in the nilearn wheel."
)


def mni152_source_dir() -> Path:
    """Folder inside the installed nilearn wheel that holds the template files."""
    spec = importlib.util.find_spec("nilearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the embedded MNI152 data comes from the nilearn wheel, which is not installed; "
            "install it with: pip install 'medseg-edge[data]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in _FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DatasetError(f"the nilearn wheel at {folder} lacks the MNI152 files {missing}")
    return folder


def mni152_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the template and derive its labels.

    Returns:
        ``(t1, label, affine)``: T1 intensities ``(X, Y, Z)`` uint8 as shipped, labels
        ``(X, Y, Z)`` uint8 in {0: background, 1: CSF, 2: GM, 3: WM}, the ``(4, 4)`` affine.
    """
    folder = mni152_source_dir()
    t1 = load_nifti(folder / _FILES["t1"])
    gm = load_nifti(folder / _FILES["gm"]).data.astype(np.float32) / 255.0
    wm = load_nifti(folder / _FILES["wm"]).data.astype(np.float32) / 255.0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    brain = t1.data > 0
    label = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.uint8)
    label[~brain] = 0
    return np.asarray(t1.data), label, t1.affine


def write_mni152(out_dir: Path, force: bool = False) -> Path:
    """Write the MNI152 tissue dataset in the nnU-Net raw layout, atomically.

    Layout: ``dataset.json``, ``imagesTr/MNI152_001_0000.nii.gz`` (T1),
    ``labelsTr/MNI152_001.nii.gz`` (0 background, 1 CSF, 2 GM, 3 WM).

    Args:
        out_dir: target folder; its parent must exist.
        force: replace a non-empty ``out_dir`` (only once the new dataset is complete).

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    guard([Output("out_dir", out_dir, "dataset")], force=force)
    t1, label, affine = mni152_volume()
    dataset_json = {
        "name": "MNI152-tissue",
        "description": "Brain tissue (CSF/GM/WM) of the MNI ICBM152 2009a T1 template: one "
        "template brain, not a patient cohort.",
        "reference": _NOTICE,
        "label_recipe": "brain = T1 > 0; CSF = clip(1 - GM - WM); label = argmax(CSF, GM, WM) "
        "+ 1 inside the brain, 0 outside",
        "channel_names": {"0": "T1"},
        "labels": MNI152_LABELS,
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        save_nifti(tmp / "imagesTr" / f"{MNI152_CASE_ID}_0000.nii.gz", t1, affine)
        save_nifti(tmp / "labelsTr" / f"{MNI152_CASE_ID}.nii.gz", label, affine)
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
        write_marker(tmp, "dataset", "medseg data mni152")
    return out_dir
