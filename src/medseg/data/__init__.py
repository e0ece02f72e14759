"""Datasets: nnU-Net raw folders, NIfTI files, slicing and splits.

The preprocessing recipe and the other scanner-side transforms live in :mod:`medseg.transforms`;
planning in :mod:`medseg.plan`.

Imports here cost numpy only: nibabel is loaded when a file is first read.
"""

from __future__ import annotations

from medseg.data.check import DatasetReport, check_dataset
from medseg.data.nifti import NiftiImage, load_nifti, save_nifti
from medseg.data.nnunet import CaseFiles, DatasetSpec, NnUNetDataset
from medseg.data.samples import SliceSet, TrainingData, load_training_data
from medseg.data.slicing import Slice, SliceRef, Split, iter_slices, make_split, take_slice

__all__ = [
    "CaseFiles",
    "DatasetReport",
    "DatasetSpec",
    "NiftiImage",
    "NnUNetDataset",
    "Slice",
    "SliceRef",
    "SliceSet",
    "Split",
    "TrainingData",
    "check_dataset",
    "iter_slices",
    "load_nifti",
    "load_training_data",
    "make_split",
    "save_nifti",
    "take_slice",
]
