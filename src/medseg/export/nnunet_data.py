"""Where an nnU-Net export finds real patches, and the FP32-vs-PyTorch parity rule.

Patches: ``--calib-data`` when given; else the dataset the result folder names
(``nnUNet_results/<DatasetXXX_Name>/<Trainer>__<Plans>__<configuration>``): its raw folder
``$nnUNet_raw/<DatasetXXX_Name>`` (or ``nnUNet_raw/`` beside the results root), preprocessed
by nnU-Net's ``DefaultPreprocessor``; else nnU-Net's own preprocessed arrays
``$nnUNet_preprocessed/<DatasetXXX_Name>/<data_identifier>`` (or beside the results root);
standard-normal patches only when none is found (and the export says so).

Parity (:func:`fp32_parity`): Polygraphy's comparator rule, element by element
``|onnx - torch| <= atol + rtol * |torch|`` (:data:`PARITY_ATOL`, :data:`PARITY_RTOL`), plus the
argmax agreement (>= :data:`PARITY_MIN_ARGMAX`) and the largest softmax difference
(<= :data:`PARITY_MAX_SOFTMAX_DIFF`): trained networks have logits in the tens, where a fixed
absolute tolerance refuses float32 rounding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DatasetError

__all__ = [
    "PARITY_ATOL",
    "PARITY_MAX_SOFTMAX_DIFF",
    "PARITY_MIN_ARGMAX",
    "PARITY_RTOL",
    "find_nnunet_dataset",
    "fp32_parity",
    "nnunet_preprocessed_cases",
]

PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-3
PARITY_MIN_ARGMAX = 0.999
PARITY_MAX_SOFTMAX_DIFF = 1e-3


def _candidates(result_folder: Path, env: str, sibling: str) -> list[Path]:
    roots = []
    if os.environ.get(env):
        roots.append(Path(os.environ[env]))
    roots.append(result_folder.parent.parent.parent / sibling)
    return [r / result_folder.parent.name for r in roots]


def find_nnunet_dataset(source: dict[str, Any], data_identifier: str) -> tuple[str, Path] | None:
    """The training data an imported run's result folder names, if it is on this machine.

    Args:
        source: the run's ``nnunet.json`` ``source`` (``result_folder``).
        data_identifier: the configuration's ``data_identifier`` (preprocessed folder name).

    Returns:
        ``("raw", dataset folder)``, ``("preprocessed", arrays folder)`` or ``None``.
    """
    folder = source.get("result_folder")
    if not folder:
        return None
    result_folder = Path(str(folder))
    for path in _candidates(result_folder, "nnUNet_raw", "nnUNet_raw"):
        if (path / "dataset.json").is_file() and (path / "imagesTr").is_dir():
            return "raw", path
    for path in _candidates(result_folder, "nnUNet_preprocessed", "nnUNet_preprocessed"):
        if (path / data_identifier).is_dir() and any((path / data_identifier).iterdir()):
            return "preprocessed", path / data_identifier
    return None


def nnunet_preprocessed_cases(
    folder: Path, max_cases: int = 8
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cases of nnU-Net's preprocessed folder, read with nnU-Net's own dataset class.

    Returns:
        ``(images, labels)``: ``(C, z, y, x)`` float32 and ``(z, y, x)`` int16 per case
        (nnU-Net's -1 "outside the crop" label read as 0).
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    try:
        dataset = infer_dataset_class(str(folder))(str(folder))
    except (RuntimeError, OSError, ValueError, AssertionError) as exc:
        raise DatasetError(f"{folder}: cannot read nnU-Net's preprocessed cases ({exc})") from None
    images, labels = [], []
    for identifier in sorted(dataset.identifiers)[:max_cases]:
        data, seg, *_ = dataset.load_case(identifier)
        images.append(np.asarray(data[:], dtype=np.float32))
        labels.append(np.maximum(np.asarray(seg[0], dtype=np.int16), 0))
    if not images:
        raise DatasetError(f"{folder}: no preprocessed cases")
    return images, labels


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def fp32_parity(reference: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """FP32 ONNX logits against PyTorch's, ``(N, K, *patch)`` each (see the module docstring).

    Returns:
        ``max_abs_diff``, ``max_tolerance_ratio`` (largest ``|d| / (atol + rtol |ref|)``, <= 1
        passes), ``argmax_agreement``, ``max_softmax_diff``, ``logit_range`` (largest |ref|),
        ``atol``, ``rtol`` and ``passed``.
    """
    diff = np.abs(reference.astype(np.float64) - actual.astype(np.float64))
    tol = PARITY_ATOL + PARITY_RTOL * np.abs(reference.astype(np.float64))
    ratio = float((diff / tol).max())
    argmax = float((reference.argmax(1) == actual.argmax(1)).mean())
    softmax = float(np.abs(_softmax(reference) - _softmax(actual)).max())
    passed = (
        bool(np.isfinite(actual).all())
        and ratio <= 1.0
        and argmax >= PARITY_MIN_ARGMAX
        and softmax <= PARITY_MAX_SOFTMAX_DIFF
    )
    return {
        "max_abs_diff": float(diff.max()),
        "max_tolerance_ratio": ratio,
        "argmax_agreement": argmax,
        "max_softmax_diff": softmax,
        "logit_range": float(np.abs(reference).max()),
        "atol": PARITY_ATOL,
        "rtol": PARITY_RTOL,
        "passed": passed,
    }


def data_identifier(run: Path, configuration: str) -> str:
    """The configuration's ``data_identifier`` in the run's plans.json (``""`` when absent)."""
    plans = json.loads((Path(run) / "plans.json").read_text())
    config = plans.get("configurations", {}).get(configuration, {})
    parent = config.get("inherits_from")
    if "data_identifier" not in config and parent:
        config = plans["configurations"].get(parent, {})
    return str(config.get("data_identifier", ""))
