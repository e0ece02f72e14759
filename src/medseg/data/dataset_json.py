"""nnU-Net v2 ``dataset.json``: validation, and the problem list every dataset check shares.

An nnU-Net v2 ``dataset.json`` looks like::

    {"channel_names": {"0": "T1", "1": "T2"},
     "labels": {"background": 0, "CSF": 1, "GM": 2},
     "numTraining": 3, "file_ending": ".nii.gz", "name": "MNI152"}

medseg accepts only NIfTI endings and one integer value per class, consecutive from 0
(not nnU-Net's region-based labels). The file is validated by its schema (``_DatasetJson``,
:mod:`medseg.schema`), which reports every problem, not only the first. Problems are
collected as :class:`Issue` objects and raised as one line by :func:`format_problems`, so a
check can report all of them at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

from medseg.data.nifti import NIFTI_ENDINGS
from medseg.errors import DatasetError
from medseg.schema import After, Before, StrictInt, StrictStr, collect

__all__ = [
    "REQUIRED_KEYS",
    "DatasetSpec",
    "Issue",
    "format_problems",
    "read_dataset_json",
]

#: Keys every nnU-Net v2 ``dataset.json`` must have.
REQUIRED_KEYS: tuple[str, ...] = ("channel_names", "labels", "numTraining", "file_ending")
_MAX_ITEMS = 5


@dataclass(frozen=True)
class DatasetSpec:
    """The validated content of ``dataset.json``.

    Attributes:
        root: the dataset folder.
        name: ``name`` from dataset.json, else the folder name.
        channel_names: input channel names ordered by channel index (``"0000"``, ``"0001"``, ...).
        labels: class name -> integer value, sorted by value; values are ``0..N-1``, 0 is
            background.
        file_ending: ``".nii.gz"`` or ``".nii"``.
        num_training: ``numTraining`` as declared (checked against the files by ``check``).
    """

    root: Path
    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    num_training: int

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names ordered by label value (index ``i`` is the class of value ``i``)."""
        return tuple(self.labels)

    @property
    def num_channels(self) -> int:
        """Number of input channels ``C``."""
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.labels)


@dataclass(frozen=True)
class Issue:
    """One problem found in a dataset; issues of the same ``kind`` are reported together.

    Attributes:
        kind: heading of the group, with ``{n}`` (number of items) and ``{s}`` (plural "s")
            placeholders, e.g. ``"label file missing for {n} case{s}"``.
        item: one file or detail, e.g. ``"labelsTr/case_001.nii.gz"``; empty for a problem
            that has no list.
        fatal: whether the dataset cannot be opened for training with it (a missing file),
            as opposed to a problem only ``medseg data check`` reports (a stray file).
    """

    kind: str
    item: str = ""
    fatal: bool = False


def format_problems(root: Path, issues: Sequence[Issue], subject: str | None = None) -> str:
    """One line summarising ``issues`` grouped by kind (first 5 items of each group shown).

    Example: ``"dataset /d has 2 problems: label file missing for 1 case:
    labelsTr/a.nii.gz; numTraining is 4 in dataset.json but imagesTr has 3 cases"``.
    """
    groups: dict[str, list[str]] = {}
    for issue in issues:
        items = groups.setdefault(issue.kind, [])
        if issue.item:
            items.append(issue.item)
    parts = []
    for kind, items in groups.items():
        head = kind.replace("{n}", str(len(items))).replace("{s}", "" if len(items) == 1 else "s")
        if items:
            shown = ", ".join(items[:_MAX_ITEMS])
            more = f" and {len(items) - _MAX_ITEMS} more" if len(items) > _MAX_ITEMS else ""
            head = f"{head}: {shown}{more}"
        parts.append(head)
    what = f"dataset {root}" + (f" {subject}" if subject else "")
    n = len(parts)
    return f"{what} has {n} problem{'' if n == 1 else 's'}: " + "; ".join(parts)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, Path) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_LABELS_EXAMPLE = '{"background": 0, "CSF": 1}'


def _object_like(example: str) -> Before:
    def rule(value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError(f"must be an object like {example}")
        return value

    return Before(rule)


def _channel_indices(value: dict[str, str]) -> tuple[str, ...]:
    """``{"0": "T1", "1": "T2"}`` -> ``("T1", "T2")``; the keys must be ``0..C-1``."""
    expected = [str(i) for i in range(len(value))]
    if sorted(value, key=lambda k: (len(k), k)) != expected:
        raise ValueError(
            f"channel_names keys must be the channel indices {', '.join(expected)}, "
            f"got {', '.join(value)}"
        )
    return tuple(value[k] for k in expected)


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must be a non-empty string")
    return value


def _label_shape(value: Any) -> Any:
    """Hints for nnU-Net label maps medseg does not take (regions; v1's value -> name)."""
    regions = [k for k, v in value.items() if isinstance(v, list | tuple)]
    if regions:
        raise ValueError(
            f"labels {', '.join(regions)} are region lists ({_show(value[regions[0]])}); "
            "nnU-Net region-based labels are not supported: give each class one integer value"
        )
    if all(str(k).isdigit() for k in value) and all(isinstance(v, str) for v in value.values()):
        name, got = next(iter(value.items()))
        raise ValueError(
            f"labels must map names to integer values like {_LABELS_EXAMPLE}, got "
            f"{_show(name)}: {_show(got)} (this looks like nnU-Net v1 style value -> name; "
            "v2 uses name -> value)"
        )
    return value


def _label_values(value: dict[str, int]) -> dict[str, int]:
    """Values ``0..N-1``, 0 present; returned sorted by value."""
    values = sorted(value.values())
    if 0 not in values:
        raise ValueError(
            f'labels have no background value 0 (got {_show(value)}); add "background": 0'
        )
    if values != list(range(len(values))):
        raise ValueError(
            f"labels: values must be distinct and consecutive 0..{len(values) - 1}, "
            f"got {', '.join(map(str, values))}"
        )
    return dict(sorted(value.items(), key=lambda kv: kv[1]))


def _nifti(value: str) -> str:
    if value not in NIFTI_ENDINGS:
        raise ValueError(
            f"file_ending {_show(value)} is not supported; medseg reads NIfTI only: "
            f"{' or '.join(map(repr, NIFTI_ENDINGS))}"
        )
    return value


def _refuse(message: str) -> After:
    """A key medseg does not support: present at all, it is refused with ``message``."""

    def rule(value: Any) -> Any:
        raise ValueError(message)

    return After(rule)


def _at_least_zero(value: int) -> int:
    if value < 0:
        raise ValueError("must be a non-negative integer")
    return value


@dataclass(frozen=True)
class _DatasetJson:
    """The schema of ``dataset.json`` (other nnU-Net keys, e.g. ``description``, are ignored)."""

    channel_names: Annotated[
        dict[StrictStr, Annotated[StrictStr, After(_non_empty)]],
        _object_like('{"0": "T1"}'),
        After(_channel_indices),
    ]
    labels: Annotated[
        dict[StrictStr, StrictInt],
        Before(_label_shape),  # before-rules run last-listed first: _object_like, then this
        _object_like(_LABELS_EXAMPLE),
        After(_label_values),
    ]
    numTraining: Annotated[StrictInt, After(_at_least_zero)]
    file_ending: Annotated[StrictStr, After(_nifti)]
    name: StrictStr | None = None
    regions_class_order: Annotated[
        Any, _refuse("regions_class_order (nnU-Net region-based training) is not supported")
    ] = None
    modality: Annotated[
        Any,
        _refuse(
            "modality is an nnU-Net v1 key: convert the file with "
            "nnUNetv2_convert_old_nnUNet_dataset"
        ),
    ] = None


def _parse_spec(root: Path, raw: Any) -> tuple[DatasetSpec | None, list[str]]:
    """Validate a decoded dataset.json; return the spec (or ``None``) and every problem found."""
    parsed, problems = collect(_DatasetJson, raw)
    if parsed is None:
        return None, [p if p.startswith("dataset.json") else f"dataset.json {p}" for p in problems]
    channels = cast("tuple[str, ...]", parsed.channel_names)  # After(_channel_indices)
    name = root.name if parsed.name is None else parsed.name
    spec = DatasetSpec(root, name, channels, parsed.labels, parsed.file_ending, parsed.numTraining)
    return spec, []


def _load_json(root: Path) -> Any:
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"dataset folder {root} {what}; expected an nnU-Net raw dataset folder")
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"dataset {root} has no dataset.json; an nnU-Net v2 raw dataset needs one with "
            f"{', '.join(REQUIRED_KEYS)}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read: {exc}") from exc


def read_dataset_json(root: str | Path) -> DatasetSpec:
    """Read and validate ``<root>/dataset.json``.

    Raises:
        DatasetError: one line naming the folder and every problem: folder or file missing,
            invalid JSON, missing keys, malformed ``channel_names`` / ``labels``,
            region-based labels, a non-NIfTI ``file_ending``.
    """
    root = Path(root)
    spec, problems = _parse_spec(root, _load_json(root))
    if spec is None:
        raise DatasetError(format_problems(root, [Issue(p) for p in problems]))
    return spec
