"""Import an nnU-Net v2 result folder into a medseg run directory.

An nnU-Net result folder (``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``)
holds ``plans.json``, ``dataset.json``, ``dataset_fingerprint.json`` and ``fold_<k>/<checkpoint>``.
:func:`import_nnunet` checks all of it first (one line naming what is wrong, nothing written),
rebuilds the planned network with nnU-Net's ``get_network_from_plans``
(dynamic_network_architectures ``network_class_name`` + ``arch_kwargs``,
``_kw_requires_import``), loads every fold's ``network_weights`` with
``torch.load(weights_only=True)`` into it (strict) and writes, atomically::

    RUN/nnunet.json          source facts + nnU-Net's preprocessing recipe (see recipe_dict)
    RUN/plans.json  RUN/dataset.json  RUN/dataset_fingerprint.json   copies of the originals
    RUN/fold_<k>/weights.pt  the fold's state dict (tensors only: loads with weights_only=True)

Supported: any trainer whose ``network_weights`` load strictly into the network the plans
describe (nnU-Net's own trainers and the variants people write that change only the training;
the architecture is verified from the weights, and a trainer that overrides
``build_network_architecture`` is refused naming the first missing or mis-shaped key), any
plans identifier, networks :data:`SUPPORTED_NETWORKS`, configurations 2d / 3d_fullres /
3d_lowres, integer labels.
Refused: cascades (``3d_cascade_fullres``, any configuration with ``previous_stage``; their input
holds the previous stage's segmentation), region-based labels, folds trained with other plans.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_dir
from medseg.errors import ConfigError, DatasetError
from medseg.importers.nnunet_checkpoint import is_nnunet_trainer
from medseg.importers.nnunet_folder import (
    FOLDER_RE,
    NnunetResult,
    load_json,
    read_nnunet_result,
    require_nnunet,
)
from medseg.outputs import Input, Output, guard

__all__ = [
    "IMPORT_FILE",
    "ImportedRun",
    "build_network",
    "check_weights_fit",
    "import_nnunet",
    "read_imported_run",
    "recipe_dict",
]

IMPORT_FILE = "nnunet.json"


def build_network(result: NnunetResult) -> Any:
    """The planned network (no deep supervision), as nnU-Net's predictor builds it.

    Returns:
        A ``torch.nn.Module`` mapping ``(B, C, *patch)`` to logits ``(B, K, *patch)``.
    """
    require_nnunet()
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = result.config["architecture"]
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        result.num_input_channels,
        len(result.labels),
        allow_init=True,
        deep_supervision=False,
    )


def check_weights_fit(network: Any, state: dict[str, Any], result: NnunetResult, fold: str) -> None:
    """Refuse, naming the first missing, unexpected or mis-shaped key, weights that are not the
    plans' network (e.g. a trainer that overrides ``build_network_architecture``)."""
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    where = f"{result.checkpoint_path(fold)}: the weights are not the {result.configuration} "
    where += f"network of plans.json (trainer {result.trainer_name!r} builds another one?)"
    for key, shape in expected.items():
        if key not in state:
            raise ConfigError(f"{where}: missing key {key!r}")
        got = tuple(getattr(state[key], "shape", ()))
        if got != shape:
            raise ConfigError(
                f"{where}: key {key!r} has shape {list(got)}, the plans' network {list(shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ConfigError(f"{where}: unexpected key {extra[0]!r}")


def recipe_dict(result: NnunetResult) -> dict[str, Any]:
    """nnU-Net's preprocessing of the imported configuration, as the manifest records it.

    :meth:`medseg.transforms.nnunet_recipe.NnunetRecipe.from_plans` (normalisation statistics from
    ``plans.json``'s ``foreground_intensity_properties_per_channel``, which nnU-Net's planner
    copies from the fingerprint; mirroring axes from the checkpoints), validated.
    """
    from medseg.transforms.nnunet_recipe import NnunetRecipe

    recipe = NnunetRecipe.from_plans(
        result.plans, result.dataset_json, result.configuration, result.mirror_axes
    )
    return recipe.to_dict()


@dataclass(frozen=True)
class ImportedRun:
    """What :func:`import_nnunet` wrote: the run folder and the facts recorded in it."""

    run: Path
    result: NnunetResult
    parameters: int
    notes: tuple[str, ...] = ()


def import_nnunet(
    folder: Path,
    out: Path,
    configuration: str | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    force: bool = False,
) -> ImportedRun:
    """Check, rebuild and write an nnU-Net model as a medseg run (see the module docstring)."""
    out = Path(out)
    guard([Output("out", out, "run")], [Input("folder", folder)], force=force)
    result, weights = read_nnunet_result(folder, configuration, folds, checkpoint)
    import torch

    network = build_network(result)
    for fold, state in weights.items():
        check_weights_fit(network, state, result, fold)
        network.load_state_dict(state, strict=True)
    notes = []
    if not is_nnunet_trainer(result.trainer_name):
        notes.append(
            f"trainer {result.trainer_name!r} is not one of nnU-Net's own: architecture verified "
            f"from the weights (they load strictly into the {result.configuration} network of "
            "plans.json)"
        )
    parameters = sum(int(p.numel()) for p in network.parameters())
    name = result.folder.name
    match = FOLDER_RE.match(name)
    source = {
        "kind": "nnunet",
        "dataset_name": result.plans.get("dataset_name"),
        "plans_name": result.plans.get("plans_name", match["plans"] if match else None),
        "trainer": result.trainer_name,
        "trainer_is_nnunet": is_nnunet_trainer(result.trainer_name),
        "configuration": result.configuration,
        "folds": list(result.folds),
        "checkpoint": result.checkpoint,
        "result_folder": str(result.folder.resolve()),
        "network_class_name": result.config["architecture"]["network_class_name"],
        "parameters": parameters,
    }
    record = {"source": source, "preprocessing": recipe_dict(result)}
    with atomic_dir(out) as tmp:
        for fname in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            (tmp / fname).write_bytes((result.folder / fname).read_bytes())
        for fold, state in weights.items():
            (tmp / f"fold_{fold}").mkdir()
            torch.save(dict(state), tmp / f"fold_{fold}" / "weights.pt")
        (tmp / IMPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return ImportedRun(out, result, parameters, tuple(notes))


def read_imported_run(run: Path) -> tuple[NnunetResult, dict[str, dict[str, Any]], dict[str, Any]]:
    """Read a run written by :func:`import_nnunet`.

    Returns:
        The result (``folder`` = the run), ``{fold: state dict}`` (``weights_only=True``) and
        the ``nnunet.json`` record (``source``, ``preprocessing``).

    Raises:
        DatasetError: not an imported nnU-Net run, or a missing / unreadable file.
    """
    run = Path(run)
    if not (run / IMPORT_FILE).is_file():
        raise DatasetError(f"{run} is not an imported nnU-Net run (no {IMPORT_FILE})")
    record = load_json(run / IMPORT_FILE, IMPORT_FILE)
    require_nnunet()
    import pickle

    import torch

    source = record.get("source", {})
    folds = tuple(str(f) for f in source.get("folds", ()))
    weights: dict[str, dict[str, Any]] = {}
    for fold in folds:
        path = run / f"fold_{fold}" / "weights.pt"
        try:
            weights[fold] = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise DatasetError(f"{path}: cannot load the fold's weights ({exc})") from None
    mirror = record.get("preprocessing", {}).get("mirror_axes", ())
    result = NnunetResult(
        folder=run,
        configuration=str(source.get("configuration")),
        folds=folds,
        checkpoint="weights.pt",
        trainer_name=str(source.get("trainer")),
        mirror_axes=tuple(int(a) for a in mirror),
        plans=load_json(run / "plans.json", "plans.json"),
        dataset_json=load_json(run / "dataset.json", "dataset.json"),
        fingerprint=load_json(run / "dataset_fingerprint.json", "dataset_fingerprint.json"),
    )
    return result, weights, record
