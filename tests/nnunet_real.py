"""Real nnU-Net v2 result folders for the test suite, written by nnU-Net's own commands.

:func:`build` makes, under one folder (once per test session; see tests/conftest.py)::

    nnUNet_raw/Dataset901_Cohort/   4 coarse MNI152 cohort cases (``medseg data mni152-cohort``)
    unseen/                     2 other cohort cases (the parity cases, never trained on)
    nnUNet_preprocessed/ nnUNet_results/   nnU-Net's folders (the usual sibling layout)
    oracle/<configuration>/<case>.npz   nnUNetPredictor's labels, probabilities, ... per case
    build.json                  what was built and the seconds each step took

Steps: ``nnUNetv2_plan_and_preprocess -c 2d 3d_fullres`` (the real console script); a plans
variant ``nnUNetPlansMedsegCI`` (non-default identifier; ``features_per_stage`` divided so the
widest stage has 32 features, batch size 2: CPU-fast); ``nnUNetv2_train 901 <cfg> <fold> -tr
nnUNetTrainer_medsegCI -p nnUNetPlansMedsegCI -device cpu`` for 2d and 3d_fullres, folds 0 and
1 (nnU-Net's own ``run_training_entry``: the trainer subclass in tests/nnunet_trainer/ is found
through nnU-Net's ``nnUNet_extTrainer`` search path); then ``nnUNetPredictor`` (folds 0+1,
mirroring, tile step 0.5) on the unseen cases is the oracle.

One workaround, for this environment only: nnU-Net's trainer lookup imports every module of its
trainer package before it reaches ``nnUNet_extTrainer``, and its Primus module fails to import
here (the index's torchvision does not match the CPU torch wheel: ``operator torchvision::nms
does not exist``). When, and only when, that import fails, the child process registers an empty
module under the Primus module's name so the lookup goes on; the Primus trainers are not used.
Nothing is written into the installed nnunetv2 package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRAINER = "nnUNetTrainer_medsegCI"
PLANS = "nnUNetPlansMedsegCI"
DATASET_ID = 901
DATASET = f"Dataset{DATASET_ID}_Cohort"
CONFIGURATIONS = ("2d", "3d_fullres")
FOLDS = (0, 1)
MAX_FEATURES = 32
TRAINER_DIR = Path(__file__).resolve().parent / "nnunet_trainer"
_PRIMUS = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def result_folder(root: Path, configuration: str, trainer: str = TRAINER) -> Path:
    """``root/nnUNet_results/Dataset901_Cohort/<trainer>__nnUNetPlansMedsegCI__<configuration>``."""
    return root / "nnUNet_results" / DATASET / f"{trainer}__{PLANS}__{configuration}"


def nnunet_env(root: Path) -> dict[str, str]:
    """The environment nnU-Net's commands run with (folders, no compile, single-process DA)."""
    return {
        **os.environ,
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_extTrainer": str(TRAINER_DIR),
        "nnUNet_compile": "false",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": "2",
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict[str, str], log: Path, cpu: dict[str, float], step: str) -> float:
    """Run one nnU-Net step; its CPU seconds go to ``cpu[step]``; returns its wall seconds."""
    t0, c0 = time.perf_counter(), _children_cpu()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        head = f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):"
        raise RuntimeError("\n".join([head, *tail]))
    cpu[step] = round(_children_cpu() - c0, 1)
    return time.perf_counter() - t0


def build(root: Path, trainers: tuple[str, ...] = (TRAINER,)) -> dict[str, Any]:
    """Build everything under ``root`` (must not hold a finished build); returns build.json."""
    from medseg.data.mni152_cohort import write_mni152_cohort

    (root / "nnUNet_raw").mkdir(parents=True, exist_ok=True)
    log = root / "nnunet.log"
    env = nnunet_env(root)
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t0 = time.perf_counter()
    pre = root / "nnUNet_preprocessed" / DATASET
    if not (pre / "nnUNetPlans.json").is_file():  # else: resuming a build (development)
        for folder in (root / "nnUNet_raw" / DATASET, root / "unseen"):
            shutil.rmtree(folder, ignore_errors=True)
        write_mni152_cohort(
            root / "nnUNet_raw" / DATASET, cases=4, seed=3, inplane_mm=(3.0, 4.0),
            thickness_mm=(4.0, 6.0),
        )  # fmt: skip
        write_mni152_cohort(
            root / "unseen", cases=2, seed=11, inplane_mm=(3.0, 4.0), thickness_mm=(4.0, 6.0)
        )
        seconds["cohort"] = time.perf_counter() - t0
        bindir = Path(sys.executable).parent
        seconds["plan_and_preprocess"] = _run(
            [str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
             *CONFIGURATIONS, "-npfp", "1", "-np", "1", "1", "--verify_dataset_integrity"],
            env, log, cpu, "plan_and_preprocess",
        )  # fmt: skip
    _write_plans_variant(root / "nnUNet_preprocessed" / DATASET)
    _write_splits(root / "nnUNet_preprocessed" / DATASET)
    runs = [(t, c, f) for t in trainers for c in CONFIGURATIONS for f in FOLDS]
    spec = {"train": [[str(DATASET_ID), c, str(f), "-tr", t, "-p", PLANS, "-device", "cpu"]
                      for t, c, f in runs]}  # fmt: skip
    shutil.rmtree(root / "nnUNet_results", ignore_errors=True)
    shutil.rmtree(root / "oracle", ignore_errors=True)
    t0 = time.perf_counter()
    # data augmentation in the training process (0 workers: SingleThreadedAugmenter)
    _run([sys.executable, __file__, json.dumps(spec)], {**env, "nnUNet_n_proc_DA": "0"}, log,
         cpu, "train")  # fmt: skip
    seconds["train"] = time.perf_counter() - t0
    oracle = {"oracle": [str(result_folder(root, c, t)) for t in trainers for c in CONFIGURATIONS],
              "unseen": str(root / "unseen"), "out": str(root / "oracle")}  # fmt: skip
    t0 = time.perf_counter()
    _run([sys.executable, __file__, json.dumps(oracle)], env, log, cpu, "oracle")
    seconds["oracle"] = time.perf_counter() - t0
    record = {
        "trainers": list(trainers),
        "plans": PLANS,
        "configurations": list(CONFIGURATIONS),
        "folds": list(FOLDS),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "cpu_seconds": cpu,
    }
    (root / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _write_plans_variant(pre: Path) -> None:
    """nnUNetPlans.json -> nnUNetPlansMedsegCI.json: narrow networks, batch 2, same data."""
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    for name in CONFIGURATIONS:
        config = plans["configurations"][name]
        kwargs = config["architecture"]["arch_kwargs"]
        features = [int(f) for f in kwargs["features_per_stage"]]
        factor = max(1, max(features) // MAX_FEATURES)
        kwargs["features_per_stage"] = [max(4, f // factor) for f in features]
        config["batch_size"] = 2
        # data_identifier unchanged: the preprocessed arrays of nnUNetPlans are reused
    (pre / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))


def _write_splits(pre: Path) -> None:
    """Two folds of two training and two validation cases (nnU-Net's default split makes five
    folds, which needs at least five cases): ``splits_final.json`` as nnU-Net reads it."""
    ids = sorted(p.name.split(".")[0] for p in (pre / "gt_segmentations").glob("*.nii.gz"))
    half = len(ids) // 2
    splits = [
        {"train": ids[half:], "val": ids[:half]},
        {"train": ids[:half], "val": ids[half:]},
    ]
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))


def _allow_trainer_lookup() -> None:  # pragma: no cover - runs in the child process
    """See the module docstring: skip past a Primus module that cannot be imported here."""
    import importlib
    import types

    try:
        importlib.import_module(_PRIMUS)
    except (ImportError, RuntimeError):
        sys.modules[_PRIMUS] = types.ModuleType(_PRIMUS)


def _train(runs: list[list[str]]) -> None:  # pragma: no cover - child process
    from nnunetv2.run.run_training import run_training_entry

    for args in runs:
        sys.argv = ["nnUNetv2_train", *args]
        run_training_entry()


def _oracle(folders: list[str], unseen: Path, out: Path) -> None:  # pragma: no cover - child
    """nnUNetPredictor on the unseen cases: the parity tests' reference, one .npz per case.

    Keys: ``data`` (preprocessed, network grid), ``logits`` (fold-mean, network grid, float16
    accumulation as nnU-Net does), ``labels`` and ``probabilities`` (original grid, SimpleITK
    order ``(z, y, x)``), ``subnormal`` (original grid: True where the voxel's value depends on a
    network-grid voxel whose float16 summed Gaussian weight is below 2**-14).
    """
    import numpy as np
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape as to_original,
    )
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    torch.set_num_threads(2)
    for folder in map(Path, folders):
        p = nnUNetPredictor(
            tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
            perform_everything_on_device=False, device=torch.device("cpu"),
            verbose=False, allow_tqdm=False,
        )  # fmt: skip
        p.initialize_from_trained_model_folder(str(folder), FOLDS)
        dest = out / folder.name
        dest.mkdir(parents=True)
        for image_file in sorted((unseen / "imagesTr").glob("*.nii.gz")):
            image, props = SimpleITKIO().read_images([str(image_file)])
            adapter = PreprocessAdapterFromNpy(
                [image], [None], [props], [None], p.plans_manager, p.dataset_json,
                p.configuration_manager, num_threads_in_multithreaded=1, verbose=False,
            )  # fmt: skip
            dct = next(adapter)
            t0 = time.perf_counter()
            logits = p.predict_logits_from_preprocessed_data(dct["data"]).cpu()
            seconds = time.perf_counter() - t0
            seg, probs = to_original(
                logits.clone(), p.plans_manager, p.configuration_manager, p.label_manager,
                dct["data_properties"], return_probabilities=True,
            )  # fmt: skip
            weight = _float16_weight(p, tuple(dct["data"].shape[1:]))
            sub = (weight < np.finfo(np.float16).tiny).astype(np.float32)
            sub_logits = torch.from_numpy(np.stack([np.zeros_like(sub), sub]))
            # nnU-Net's own resampling and un-cropping of the mask, as the logits of a 2-class
            # softmax: class 1 gets probability > 1e-5 wherever a subnormal voxel contributes
            # at least 2.5e-4 of the interpolation weight (else e**-14 = 8e-7)
            _, sub_orig = to_original(
                sub_logits * 1e4 - torch.tensor([0.0, 14.0]).view(2, *[1] * sub.ndim),
                p.plans_manager, p.configuration_manager,
                LabelManager({"background": 0, "x": 1}, None), dct["data_properties"],
                return_probabilities=True,
            )  # fmt: skip
            np.savez_compressed(
                dest / image_file.name.replace(".nii.gz", ".npz"),
                data=dct["data"].numpy(),
                logits=logits.numpy().astype(np.float32),
                labels=np.asarray(seg),
                probabilities=np.asarray(probs, dtype=np.float32),
                subnormal=np.asarray(sub_orig)[1] > 1e-5,
                subnormal_network_grid=sub > 0,
                seconds=np.float64(seconds),
            )


def _float16_weight(predictor: Any, shape: tuple[int, ...]) -> Any:  # pragma: no cover - child
    """nnU-Net's summed Gaussian weight (``n_predictions``, float16) on the network grid,
    made with the predictor's own padding, slicers and Gaussian."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    patch = tuple(predictor.configuration_manager.patch_size)
    data, revert = pad_nd_image(
        torch.zeros((1, *shape)), patch, "constant", {"value": 0}, True, None
    )
    gaussian = compute_gaussian(patch, 1.0 / 8, 10, device=torch.device("cpu"))
    weight = torch.zeros(data.shape[1:], dtype=torch.half)
    for sl in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
        weight[sl[1:]] += gaussian
    return weight[tuple(revert[1:])].numpy()


if __name__ == "__main__":  # pragma: no cover - the child process
    task = json.loads(sys.argv[1])
    _allow_trainer_lookup()
    if "train" in task:
        _train(task["train"])
    else:
        _oracle(task["oracle"], Path(task["unseen"]), Path(task["out"]))
