"""Datasets: nnU-Net raw folders, NIfTI files, slicing, splits and preprocessing recipes.

Imports here cost numpy only: nibabel is loaded when a file is first read, so the lean
runtime can use the preprocessing recipe without pulling the dataset readers' needs.
"""

from __future__ import annotations

from medseg.data.check import DatasetReport, check_dataset
from medseg.data.nifti import NiftiImage, load_nifti, save_nifti
from medseg.data.nnunet import CaseFiles, DatasetSpec, NnUNetDataset
from medseg.data.preprocessing import (
    Geometry,
    Recipe,
    bring_to_size,
    normalize_volume,
    restore_size,
)
from medseg.data.samples import SliceSet, TrainingData, load_training_data
from medseg.data.slicing import Slice, SliceRef, Split, iter_slices, make_split, take_slice
from medseg.data.volume import Volume

__all__ = [
    "CaseFiles",
    "DatasetReport",
    "DatasetSpec",
    "Geometry",
    "NiftiImage",
    "NnUNetDataset",
    "Recipe",
    "Slice",
    "SliceRef",
    "SliceSet",
    "Split",
    "TrainingData",
    "Volume",
    "bring_to_size",
    "check_dataset",
    "iter_slices",
    "load_nifti",
    "load_training_data",
    "make_split",
    "normalize_volume",
    "restore_size",
    "save_nifti",
    "take_slice",
]
