"""Reading an nnU-Net v2 result folder: its plans, dataset files, folds and checkpoints, checked.

:func:`read_nnunet_result` checks a result folder,
``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>`` (``plans.json``,
``dataset.json``, ``dataset_fingerprint.json``, ``fold_<k>/<checkpoint>``), and returns a
:class:`NnunetResult`, one line naming what is wrong otherwise; :mod:`medseg.importers.nnunet`
rebuilds the network and writes the medseg run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, DatasetError, MissingDependencyError
from medseg.importers.nnunet_checkpoint import load_nnunet_checkpoint

__all__ = [
    "CONFIGURATIONS",
    "FOLDER_RE",
    "SUPPORTED_NETWORKS",
    "NnunetResult",
    "load_json",
    "parse_folds",
    "read_nnunet_result",
    "require_nnunet",
]

SUPPORTED_NETWORKS = (
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
)
CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
FOLDER_RE = re.compile(r"^(?P<trainer>[^_]+(?:_[^_]+)*)__(?P<plans>.+)__(?P<configuration>.+)$")


@dataclass(frozen=True)
class NnunetResult:
    """A checked nnU-Net result folder, one configuration and its chosen folds.

    Attributes:
        folder: the result folder.
        configuration: e.g. ``"3d_fullres"``.
        folds: fold names (``"0"``, ``"1"``, ... or ``"all"``), in the order given.
        checkpoint: checkpoint file name inside each ``fold_<k>/``.
        trainer_name: the checkpoints' ``trainer_name``.
        mirror_axes: the checkpoints' ``inference_allowed_mirroring_axes`` (``()`` when none).
        plans: ``plans.json``; dataset_json: ``dataset.json``; fingerprint: the fingerprint.
    """

    folder: Path
    configuration: str
    folds: tuple[str, ...]
    checkpoint: str
    trainer_name: str
    mirror_axes: tuple[int, ...]
    plans: dict[str, Any] = field(repr=False)
    dataset_json: dict[str, Any] = field(repr=False)
    fingerprint: dict[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        if self.configuration not in self.plans.get("configurations", {}):
            raise ConfigError(f"configuration {self.configuration!r} is not in plans.json")
        if not self.folds:
            raise ConfigError("an nnU-Net import needs at least one fold")

    @property
    def config(self) -> dict[str, Any]:
        """The configuration's entry of ``plans.json`` (``inherits_from`` resolved)."""
        return _resolved(self.plans, self.configuration)

    @property
    def labels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.dataset_json["labels"].items()}

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def checkpoint_path(self, fold: str) -> Path:
        return self.folder / f"fold_{fold}" / self.checkpoint


def _resolved(plans: dict[str, Any], name: str) -> dict[str, Any]:
    config = dict(plans["configurations"][name])
    seen = {name}
    while "inherits_from" in config:
        parent = config.pop("inherits_from")
        if parent in seen or parent not in plans["configurations"]:
            raise ConfigError(f"plans.json: configuration {name!r} inherits from {parent!r}")
        seen.add(parent)
        config = {**plans["configurations"][parent], **config}
    return config


def parse_folds(text: str) -> tuple[str, ...] | None:
    """``"0,1"`` -> ("0", "1"); ``"all"`` -> None (every fold found); a fold named ``all``
    (nnU-Net's train-on-everything fold) is written ``fold_all``."""
    if text.strip() == "all":
        return None
    items = [t.strip() for t in text.split(",")]
    if not items or any(not (t.isdigit() or t == "fold_all") for t in items):
        raise ConfigError(f"--folds {text!r} must be fold numbers like 0,1 or 'all'")
    out = tuple("all" if t == "fold_all" else str(int(t)) for t in items)
    if len(set(out)) != len(out):
        raise ConfigError(f"--folds {text!r} names a fold twice")
    return out


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: {what} must be a JSON object")
    return data


def _check_finite(path: Path, weights: Any) -> None:
    """Refuse a checkpoint with NaN or infinite weights (a diverged training)."""
    import torch

    bad = [
        str(name)
        for name, tensor in dict(weights).items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DatasetError(
            f"{path}: NaN or infinite values in network_weights ({', '.join(bad[:3])}{more}); "
            "the training diverged: import another checkpoint"
        )


def require_nnunet() -> None:
    try:
        import dynamic_network_architectures  # noqa: F401
        import nnunetv2  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"importing nnU-Net models needs {exc.name}: pip install 'medseg-edge[nnunet]'"
        ) from None


def read_nnunet_result(
    folder: Path,
    configuration: str | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
) -> tuple[NnunetResult, dict[str, dict[str, Any]]]:
    """Check an nnU-Net result folder and load the chosen folds' weights (not yet in a network).

    Args:
        folder: ``<Trainer>__<Plans>__<configuration>`` folder written by nnUNetv2_train.
        configuration: the configuration to import; default: the one the checkpoints name.
        folds: fold names (``"0"``...); ``None``: every ``fold_*`` holding ``checkpoint``.
        checkpoint: the checkpoint file name inside each fold folder.

    Returns:
        The checked result and ``{fold: state dict}``.

    Raises:
        DatasetError: a missing or unreadable file (named).
        ConfigError: unsupported trainer, network, configuration, cascade, labels, or folds
            that disagree with each other or with plans.json.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such nnU-Net result folder")
    missing = [n for n in ("plans.json", "dataset.json", "dataset_fingerprint.json")
               if not (folder / n).is_file()]  # fmt: skip
    if missing:
        raise DatasetError(
            f"{folder} is not an nnU-Net result folder: missing {', '.join(missing)} "
            "(expected the <Trainer>__<Plans>__<configuration> folder of nnUNetv2_train)"
        )
    found = sorted(p.name[5:] for p in folder.glob("fold_*") if (p / checkpoint).is_file())
    if folds is None:
        if not found:
            raise DatasetError(f"{folder}: no fold_*/{checkpoint} (did training finish?)")
        folds = found
    absent = [f for f in folds if f not in found]
    if absent:
        raise DatasetError(
            f"{folder}: no {', '.join(f'fold_{f}/{checkpoint}' for f in absent)} "
            f"(folds with {checkpoint}: {', '.join(found) or 'none'})"
        )
    plans = load_json(folder / "plans.json", "plans.json")
    dataset_json = load_json(folder / "dataset.json", "dataset.json")
    fingerprint = load_json(folder / "dataset_fingerprint.json", "dataset_fingerprint.json")
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(
            f"{folder / 'dataset.json'}: no 'labels' (expected e.g. "
            '{"background": 0, "tumour": 1}, as nnU-Net writes it)'
        )
    planned = list(plans.get("configurations", {}))
    if configuration is not None and configuration not in planned:
        raise ConfigError(
            f"--configuration {configuration!r} is not in {folder / 'plans.json'} "
            f"(planned: {', '.join(planned)})"
        )
    require_nnunet()
    loaded = {f: load_nnunet_checkpoint(folder / f"fold_{f}" / checkpoint) for f in folds}
    first = loaded[folds[0]]
    init_args = first.get("init_args") or {}
    trainer = str(first.get("trainer_name", ""))
    configuration = configuration or str(init_args.get("configuration", ""))
    if configuration not in planned:
        raise ConfigError(
            f"--configuration {configuration!r} is not in {folder / 'plans.json'} "
            f"(planned: {', '.join(planned)})"
        )
    for fold, data in loaded.items():
        args = data.get("init_args") or {}
        where = folder / f"fold_{fold}" / checkpoint
        if data.get("trainer_name") != trainer:
            raise ConfigError(
                f"{where}: trainer {data.get('trainer_name')!r} differs from fold "
                f"{folds[0]}'s {trainer!r}; import folds of one training only"
            )
        if args.get("configuration", configuration) != configuration:
            raise ConfigError(
                f"{where} was trained as {args.get('configuration')!r}, not {configuration!r}"
            )
        fold_plans = args.get("plans")
        if fold_plans is not None and fold_plans.get("plans_name") != plans.get("plans_name"):
            raise ConfigError(
                f"{where} was trained with plans {fold_plans.get('plans_name')!r}, not "
                f"{folder / 'plans.json'}'s {plans.get('plans_name')!r}; folds with different "
                "plans cannot form one ensemble"
            )
        if fold_plans is not None and _resolved(fold_plans, configuration) != _resolved(
            plans, configuration
        ):
            raise ConfigError(
                f"{where} was trained with other plans than {folder / 'plans.json'} "
                f"({configuration}); folds with different plans cannot form one ensemble"
            )
    config = _resolved(plans, configuration)
    if configuration not in CONFIGURATIONS or config.get("previous_stage"):
        raise ConfigError(
            f"configuration {configuration!r} is a cascade stage (its input holds the previous "
            f"stage's segmentation); not supported: import {' or '.join(CONFIGURATIONS)}"
        )
    network = config.get("architecture", {}).get("network_class_name")
    if network not in SUPPORTED_NETWORKS:
        raise ConfigError(
            f"{folder / 'plans.json'}: network {network!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_NETWORKS)})"
        )
    regions = [k for k, v in labels.items() if not isinstance(v, int) or isinstance(v, bool)]
    if regions or "regions_class_order" in dataset_json:
        raise ConfigError(
            f"{folder / 'dataset.json'}: region-based labels ({', '.join(regions)}) are not "
            "supported; one integer per label is"
        )
    from medseg.data.dataset_json import _parse_spec

    _, problems = _parse_spec(folder, dataset_json)
    if problems:
        raise DatasetError(f"{folder / 'dataset.json'}: {'; '.join(problems)}")
    for fold, data in loaded.items():
        _check_finite(folder / f"fold_{fold}" / checkpoint, data["network_weights"])
    mirror = first.get("inference_allowed_mirroring_axes")
    result = NnunetResult(
        folder=folder,
        configuration=configuration,
        folds=tuple(folds),
        checkpoint=checkpoint,
        trainer_name=trainer,
        mirror_axes=tuple(int(a) for a in mirror) if mirror else (),
        plans=plans,
        dataset_json=dataset_json,
        fingerprint=fingerprint,
    )
    return result, {f: d["network_weights"] for f, d in loaded.items()}
