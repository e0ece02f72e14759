"""Reader of the nnU-Net v2 "raw" dataset layout.

A dataset folder holds::

    dataset.json                      channel_names, labels, numTraining, file_ending
    imagesTr/<case>_<XXXX><ending>    one file per case and channel (XXXX = 0000, 0001, ...)
    labelsTr/<case><ending>           one integer label map per training case
    imagesTs/, labelsTs/              optional test cases (labels optional)

Only NIfTI files (``.nii.gz`` / ``.nii``) and one integer value per class are supported
(see :mod:`medseg.data.dataset_json`). File and content problems are collected as
:class:`Issue` objects, so that :func:`medseg.data.check.check_dataset` can report all of
them at once, and raised as one-line :class:`~medseg.errors.DatasetError` messages naming
the files relative to the dataset root.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.data.dataset_json import DatasetSpec, Issue, format_problems, read_dataset_json
from medseg.data.nifti import NiftiImage, constant_volume_problem, load_nifti
from medseg.errors import ConfigError, DatasetError
from medseg.transforms.volume import Volume

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "SUBSETS",
    "CaseFiles",
    "DatasetSpec",
    "Issue",
    "NnUNetDataset",
    "Subset",
    "format_problems",
    "read_case",
    "read_dataset_json",
    "scan_cases",
]

Subset = Literal["train", "test"]
SUBSETS: tuple[Subset, ...] = ("train", "test")
#: Largest difference between two affines (any entry, mm) still counted as the same grid.
AFFINE_TOLERANCE_MM = 1e-3
_FOLDERS: dict[str, tuple[str, str]] = {
    "train": ("imagesTr", "labelsTr"),
    "test": ("imagesTs", "labelsTs"),
}


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case.

    Attributes:
        case_id: the case name (file names without the channel suffix and ending).
        images: one path per channel, in channel order.
        label: the label map path, or ``None`` (test case without reference).
        subset: ``"train"`` (imagesTr/labelsTr) or ``"test"`` (imagesTs/labelsTs).
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    subset: Subset


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _scan_subset(spec: DatasetSpec, subset: Subset) -> tuple[list[CaseFiles], int, list[Issue]]:
    """List one subset's cases; return complete cases, number of case ids seen, issues."""
    root, ending = spec.root, spec.file_ending
    images_name, labels_name = _FOLDERS[subset]
    images_dir, labels_dir = root / images_name, root / labels_name
    issues: list[Issue] = []
    if not images_dir.is_dir():
        if subset == "train":
            issues.append(Issue(f"{images_name} folder is missing", fatal=True))
        return [], 0, issues
    pattern = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}")
    found: dict[str, dict[int, Path]] = {}
    last = f"{spec.num_channels - 1:04d}"
    for entry in sorted(images_dir.iterdir()):
        if entry.name.startswith("."):
            continue  # OS metadata (.DS_Store); nnU-Net ignores it too
        match = pattern.fullmatch(entry.name) if entry.is_file() else None
        if match is None and entry.is_file() and entry.name.endswith(ending):
            # an image of the dataset's type without a channel suffix: its case would be
            # dropped without a word (nnU-Net refuses such a folder too)
            kind = (
                f"{{n}} image file{{s}} in {images_name} without the channel suffix "
                f"(expected <case>_0000{ending})"
            )
            issues.append(Issue(kind, _rel(root, entry), fatal=True))
        elif match is None:
            kind = f"{{n}} stray file{{s}} in {images_name} (expected <case>_<XXXX>{ending})"
            issues.append(Issue(kind, _rel(root, entry)))
        elif int(match["channel"]) >= spec.num_channels:
            kind = f"{{n}} image file{{s}} with a channel not in channel_names (0000..{last})"
            issues.append(Issue(kind, _rel(root, entry)))
        else:
            found.setdefault(match["case"], {})[int(match["channel"])] = entry
    cases = []
    for case_id in sorted(found):
        channels = found[case_id]
        paths = [images_dir / f"{case_id}_{c:04d}{ending}" for c in range(spec.num_channels)]
        missing = [p for c, p in enumerate(paths) if c not in channels]
        for path in missing:
            issues.append(Issue("{n} channel file{s} missing", _rel(root, path), fatal=True))
        label = labels_dir / f"{case_id}{ending}"
        has_label = label.is_file()
        if not has_label and subset == "train":
            issues.append(Issue("label file missing for {n} case{s}", _rel(root, label), True))
        if not missing:
            cases.append(CaseFiles(case_id, tuple(paths), label if has_label else None, subset))
    if labels_dir.is_dir():
        for entry in sorted(labels_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_file() or not entry.name.endswith(ending):
                kind = f"{{n}} stray file{{s}} in {labels_name} (expected <case>{ending})"
                issues.append(Issue(kind, _rel(root, entry)))
            elif entry.name[: -len(ending)] not in found:
                kind = f"{{n}} label file{{s}} without images in {images_name}"
                issues.append(Issue(kind, _rel(root, entry), fatal=subset == "train"))
    return cases, len(found), issues


def scan_cases(
    spec: DatasetSpec, subsets: Sequence[Subset] = SUBSETS
) -> tuple[dict[Subset, tuple[CaseFiles, ...]], list[Issue]]:
    """List the cases of ``subsets`` and every file-level problem (no file is read).

    Returns:
        Per subset, the cases that have all their channel files (sorted by id), and the
        issues: stray files, missing channel or label files, label files without images,
        ``numTraining`` not matching the training cases.
    """
    cases: dict[Subset, tuple[CaseFiles, ...]] = {}
    issues: list[Issue] = []
    for subset in subsets:
        if subset not in SUBSETS:
            raise ConfigError(f"unknown subset {subset!r}; expected 'train' or 'test'")
        found, num_ids, subset_issues = _scan_subset(spec, subset)
        cases[subset] = tuple(found)
        issues += subset_issues
        if subset == "train" and (spec.root / "imagesTr").is_dir():
            if num_ids == 0:
                issues.append(
                    Issue(
                        f"imagesTr has no cases (expected <case>_0000{spec.file_ending}, the "
                        "file_ending of dataset.json)",
                        fatal=True,
                    )
                )
            elif num_ids != spec.num_training:
                issues.append(
                    Issue(
                        f"numTraining is {spec.num_training} in dataset.json but imagesTr has "
                        f"{num_ids} case{'' if num_ids == 1 else 's'}",
                        fatal=True,
                    )
                )
    return cases, issues


def _voxels(count: int) -> str:
    return f"{count} voxel{'' if count == 1 else 's'}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _check_label(spec: DatasetSpec, rel: str, data: np.ndarray) -> list[Issue]:
    """Issues of one label map: non-finite or non-integer voxels, values not in ``labels``."""
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            return [Issue("{n} file{s} with NaN/Inf voxels", f"{rel} ({_voxels(bad)})")]
        if not np.array_equal(data, np.round(data)):
            return [Issue("{n} label file{s} with non-integer values", rel)]
    if data.size and data.dtype.kind in "iu" and data.min() >= 0 and data.max() < 65536:
        values = np.flatnonzero(np.bincount(data.ravel().astype(np.intp, copy=False)))
    else:
        values = np.unique(data)
    unexpected = sorted(set(values.astype(np.int64).tolist()) - set(spec.labels.values()))
    if unexpected:
        allowed = f"0..{spec.num_classes - 1}"
        shown = ", ".join(map(str, unexpected[:10])) + (" ..." if len(unexpected) > 10 else "")
        kind = f"{{n}} label file{{s}} with values not in dataset.json labels ({allowed})"
        return [Issue(kind, f"{rel} has {shown}")]
    return []


def read_case(spec: DatasetSpec, case: CaseFiles) -> tuple[Volume | None, list[Issue]]:
    """Load one case and check it; return the volume (``None`` if any issue) and the issues.

    Checks: every file reads as 3D NIfTI; all channels and the label have one shape and
    one affine (within :data:`AFFINE_TOLERANCE_MM`); no NaN/Inf voxel; label values are
    integers listed in ``labels``. The image is stacked as float32 ``(C, X, Y, Z)``; the
    label is uint8 when its largest value is below 256, else int16 (int32 past 32767).
    Spacing and affine are channel 0's.
    """
    root = spec.root
    loaded: list[tuple[Path, NiftiImage]] = []
    issues: list[Issue] = []
    for path in (*case.images, *([case.label] if case.label is not None else [])):
        try:
            loaded.append((path, load_nifti(path)))
        except DatasetError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            issues.append(Issue("{n} unreadable file{s}", f"{_rel(root, path)} ({reason})"))
    if issues:
        return None, issues
    ref_path, ref = loaded[0]
    for path, img in loaded[1:]:
        rel, ref_rel = _rel(root, path), _rel(root, ref_path)
        if img.shape != ref.shape:
            kind = "{n} file{s} with a shape different from channel 0000"
            issues.append(
                Issue(kind, f"{rel} is {_shape(img.shape)}, {ref_rel} is {_shape(ref.shape)}")
            )
        diff = float(np.max(np.abs(img.affine - ref.affine)))
        if diff > AFFINE_TOLERANCE_MM:
            kind = "{n} file{s} with an affine different from channel 0000 (by more than "
            kind += f"{AFFINE_TOLERANCE_MM:g} mm)"
            issues.append(Issue(kind, f"{rel} differs from {ref_rel} by up to {diff:.4g} mm"))
    for path, img in loaded[: len(case.images)]:
        constant = constant_volume_problem(img.data)
        if constant is not None:
            issues.append(Issue("{n} blank or constant image{s}", f"{_rel(root, path)} {constant}"))
            continue
        if img.data.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(img.data)))
            if bad:
                issues.append(
                    Issue("{n} file{s} with NaN/Inf voxels", f"{_rel(root, path)} ({_voxels(bad)})")
                )
    label_img = loaded[-1][1] if case.label is not None else None
    if label_img is not None:
        issues += _check_label(spec, _rel(root, loaded[-1][0]), label_img.data)
    if issues:
        return None, issues
    image = np.stack(
        [img.data.astype(np.float32, copy=False) for _, img in loaded[: len(case.images)]]
    )
    label = None
    if label_img is not None:
        top = int(label_img.data.max()) if label_img.data.size else 0
        label = label_img.data.astype(
            np.uint8 if top < 256 else np.int16 if top < 32768 else np.int32
        )
    volume = Volume(case.case_id, image, label, ref.affine.copy(), ref.spacing)
    return volume, []


class NnUNetDataset:
    """An nnU-Net v2 raw dataset folder: its ``dataset.json`` and its cases.

    Use :meth:`open`; cases are listed once and sorted by id. Loading is lazy
    (:meth:`load_case`), one case at a time.
    """

    def __init__(self, spec: DatasetSpec, cases: Mapping[Subset, tuple[CaseFiles, ...]]) -> None:
        self._spec = spec
        self._cases = {s: tuple(cases.get(s, ())) for s in SUBSETS}

    @classmethod
    def open(cls, root: str | Path) -> NnUNetDataset:
        """Read and validate ``dataset.json`` and list the cases.

        Raises:
            DatasetError: the folder or dataset.json is missing or invalid, imagesTr is
                missing, or a training case lacks a channel or label file (all such files
                named in one line), imagesTr has no case (e.g. a ``file_ending`` that does
                not match the files), an image lacks its ``_XXXX`` channel suffix, a label
                has no image, or ``numTraining`` differs from the cases. Other stray files
                (notes, ``.DS_Store``) are left to :func:`medseg.data.check.check_dataset`.
        """
        spec = read_dataset_json(root)
        cases, issues = scan_cases(spec)
        fatal = [i for i in issues if i.fatal]
        if fatal:
            raise DatasetError(format_problems(spec.root, fatal))
        return cls(spec, cases)

    @property
    def spec(self) -> DatasetSpec:
        """The validated dataset.json."""
        return self._spec

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return self._spec.root

    def cases(self, subset: Subset = "train") -> tuple[CaseFiles, ...]:
        """The cases of ``subset`` (``"train"`` or ``"test"``), sorted by id."""
        if subset not in SUBSETS:
            raise ConfigError(f"unknown subset {subset!r}; expected 'train' or 'test'")
        return self._cases[subset]

    def case_ids(self, subset: Subset = "train") -> tuple[str, ...]:
        """The case ids of ``subset``, sorted."""
        return tuple(c.case_id for c in self.cases(subset))

    def case(self, case_id: str) -> CaseFiles:
        """The files of case ``case_id`` (training cases first, then test cases)."""
        for subset in SUBSETS:
            for case in self._cases[subset]:
                if case.case_id == case_id:
                    return case
        ids = [c.case_id for s in SUBSETS for c in self._cases[s]]
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise DatasetError(f"dataset {self.root} has no case {case_id!r}; cases: {shown or 'none'}")

    def load_case(self, case: CaseFiles | str) -> Volume:
        """Load one case as a :class:`Volume` (see :func:`read_case` for what is checked).

        Raises:
            DatasetError: one line naming each bad file and its problem.
        """
        files = self.case(case) if isinstance(case, str) else case
        volume, issues = read_case(self._spec, files)
        if volume is None:
            raise DatasetError(format_problems(self.root, issues, subject=f"case {files.case_id}"))
        return volume

    def __repr__(self) -> str:
        n_train, n_test = len(self._cases["train"]), len(self._cases["test"])
        return f"NnUNetDataset({str(self.root)!r}, train={n_train}, test={n_test})"
