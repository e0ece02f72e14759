"""Real nnU-Net v2 result folders made with nnU-Net's own tools (no training, no downloads).

:func:`make_nnunet_results` turns a dataset in the nnU-Net raw layout (e.g. ``medseg data
mni152-cohort``) into the folders ``nnUNetv2_train`` would leave behind::

    <out>/<DatasetXXX_Name>/nnUNetTrainer__nnUNetPlans__<configuration>/
        plans.json  dataset.json  dataset_fingerprint.json
        fold_0/checkpoint_final.pth  fold_1/checkpoint_final.pth ...

Steps, all nnU-Net's: ``extract_fingerprints``, ``plan_experiments`` (the default
``ExperimentPlanner``: real plans) and ``preprocess`` (the trainer needs its folders), then
the plans' networks are shrunk (``features_per_stage`` divided so the widest stage has
``max_features``), an ``nnUNetTrainer`` is built per fold and its ``save_checkpoint`` writes the
checkpoint (``network_weights``, ``init_args``,
``trainer_name``, ``inference_allowed_mirroring_axes``, optimiser state, ...). The weights are
the trainer's own initialisation with a per-fold seed: an UNTRAINED network. It exercises every
step of an import and of the parity checks, not accuracy.

nnU-Net reads its folders from environment variables bound at import time, so the work runs in
a child Python process (``python -m medseg.importers.nnunet_results``) with ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` pointing into a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, DatasetError, MissingDependencyError

__all__ = ["make_nnunet_results"]

_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def make_nnunet_results(
    dataset: Path,
    out: Path,
    configurations: Sequence[str] = ("2d", "3d_fullres"),
    folds: Sequence[int] = (0, 1),
    dataset_id: int = 901,
    max_features: int = 32,
    dataset_name: str = "Cohort",
) -> dict[str, Path]:
    """Plan ``dataset`` with nnU-Net and write untrained fold checkpoints for each configuration.

    Args:
        dataset: a dataset folder in the nnU-Net raw layout (``dataset.json``, ``imagesTr``,
            ``labelsTr``).
        out: the ``nnUNet_results``-like folder to create (must not exist; its parent must).
        configurations: planned configurations to write (``2d``, ``3d_fullres``, ``3d_lowres``).
        folds: fold numbers to write a checkpoint for.
        dataset_id: the nnU-Net dataset number (``Dataset<id>_<name>``), 1..999.
        max_features: features of the widest stage after shrinking (>= 2; nnU-Net plans 320
            for 3D, 512 for 2D).
        dataset_name: the name part of ``Dataset<id>_<name>`` (letters, digits, ``-``).

    Returns:
        ``{configuration: result folder}``.

    Raises:
        ConfigError: bad arguments, or a configuration that nnU-Net did not plan.
        DatasetError: ``dataset`` is not an nnU-Net raw dataset.
        MissingDependencyError: nnunetv2 is not installed (``pip install medseg-edge[nnunet]``).
    """
    dataset, out = Path(dataset), Path(out)
    if not (dataset / "dataset.json").is_file() or not (dataset / "imagesTr").is_dir():
        raise DatasetError(f"{dataset} is not an nnU-Net raw dataset (dataset.json, imagesTr)")
    bad = [c for c in configurations if c not in _CONFIGURATIONS]
    if bad or not configurations:
        raise ConfigError(f"configurations {list(configurations)} must be among {_CONFIGURATIONS}")
    if not folds or any(isinstance(f, bool) or not isinstance(f, int) or f < 0 for f in folds):
        raise ConfigError(f"folds {list(folds)} must be non-negative integers")
    if not 1 <= dataset_id <= 999 or max_features < 2:
        raise ConfigError(f"dataset_id {dataset_id} (1..999) or max_features {max_features} (>=2)")
    if not dataset_name.replace("-", "").isalnum():
        raise ConfigError(f"dataset_name {dataset_name!r} must be letters, digits and '-'")
    if out.exists() or not out.parent.is_dir():
        raise ConfigError(f"{out} must not exist yet and its parent folder must exist")
    try:
        import nnunetv2  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "making nnU-Net result folders needs nnunetv2: pip install 'medseg-edge[nnunet]'"
        ) from exc
    name = f"Dataset{dataset_id:03d}_{dataset_name}"
    with tempfile.TemporaryDirectory(prefix="medseg-nnunet-") as tmp:
        work = Path(tmp)
        raw = work / "raw"
        raw.mkdir()
        os.symlink(dataset.resolve(), raw / name)
        env = {
            **os.environ,
            "nnUNet_raw": str(raw),
            "nnUNet_preprocessed": str(work / "preprocessed"),
            "nnUNet_results": str(work / "results"),
            "nnUNet_compile": "false",
        }
        spec = {
            "dataset_id": dataset_id,
            "configurations": list(configurations),
            "folds": list(folds),
            "max_features": max_features,
        }
        cmd = [sys.executable, "-m", "medseg.importers.nnunet_results", json.dumps(spec)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise ConfigError(f"nnU-Net planning of {dataset} failed: {' '.join(tail)}")
        shutil.copytree(work / "results", out)
    return {c: out / name / f"nnUNetTrainer__nnUNetPlans__{c}" for c in configurations}


def _shrink(arch_kwargs: dict[str, Any], max_features: int) -> None:
    features = [int(f) for f in arch_kwargs["features_per_stage"]]
    factor = max(1, max(features) // max_features)
    arch_kwargs["features_per_stage"] = [max(2, f // factor) for f in features]


def _child(spec: dict[str, Any]) -> None:  # pragma: no cover - runs in the child process
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    dataset_id = int(spec["dataset_id"])
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True)
    plan_experiments([dataset_id])
    configurations = list(spec["configurations"])
    preprocess([dataset_id], configurations=configurations, num_processes=[1] * len(configurations))
    pre = next(Path(os.environ["nnUNet_preprocessed"]).iterdir())  # noqa: SIM112
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    for configuration in spec["configurations"]:
        if configuration not in plans["configurations"]:
            raise SystemExit(
                f"nnU-Net did not plan {configuration}: {list(plans['configurations'])}"
            )
        _shrink(
            plans["configurations"][configuration]["architecture"]["arch_kwargs"],
            int(spec["max_features"]),
        )
    results = Path(os.environ["nnUNet_results"]) / pre.name  # noqa: SIM112
    for configuration in spec["configurations"]:
        folder = results / f"nnUNetTrainer__nnUNetPlans__{configuration}"
        for fold in spec["folds"]:
            torch.manual_seed(1000 * fold + 7)
            fold_plans = {**plans, "continue_training": False}  # as nnU-Net's run_training sets
            cpu = torch.device("cpu")
            trainer = nnUNetTrainer(fold_plans, configuration, fold, dataset_json, cpu)
            trainer.initialize()
            # sets inference_allowed_mirroring_axes as nnU-Net's get_dataloaders does
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(folder / f"fold_{fold}" / "checkpoint_final.pth"))
        (folder / "plans.json").write_text(json.dumps(plans, indent=2))
        shutil.copy(pre / "dataset.json", folder / "dataset.json")
        shutil.copy(pre / "dataset_fingerprint.json", folder / "dataset_fingerprint.json")


if __name__ == "__main__":  # pragma: no cover
    _child(json.loads(sys.argv[1]))
