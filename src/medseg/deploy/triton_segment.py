"""The end-to-end segmenter model of an exported repository: ``medseg-<name>-segment``.

A Triton Python-backend model that runs the whole scanner-side pipeline (normalisation,
slicing, padding or resizing, the network, argmax, back onto the input grid) with
:class:`medseg.runtime.Segmenter`, the code path of ``medseg infer``::

    medseg-<name>-segment/config.pbtxt        backend "python", no batching, parameters
    medseg-<name>-segment/1/model.py          medseg/deploy/triton_model.py
    medseg-<name>-segment/1/bundle/           medseg.json, the ONNX files, engines/ if built

Inputs (all optional, a request sends ``volume`` [+ ``affine``] or ``nifti``): ``volume``
float32 ``(C, X, Y, Z)``, ``affine`` float64 ``(4, 4)``, ``nifti`` uint8 ``(N,)`` (the bytes of a
``.nii`` / ``.nii.gz`` file). Output ``labels``: uint8 ``(X, Y, Z)`` on the input's grid.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medseg.bundle.engines import ENGINES_DIR
from medseg.bundle.entries import MANIFEST_NAME
from medseg.bundle.folds import fold_bundles
from medseg.bundle.manifest import Manifest
from medseg.deploy.pbtxt import ModelConfigText, TensorConfig
from medseg.deploy.segment_service import (
    BUNDLE_DIR,
    INPUT_AFFINE,
    INPUT_NIFTI,
    INPUT_VOLUME,
    OUTPUT_LABELS,
    VERSION,
    SegmentSettings,
)

__all__ = ["PYTHON_BACKEND", "segment_config", "segment_model_name", "write_segment_model"]

PYTHON_BACKEND = "python"


def segment_model_name(slug: str) -> str:
    """``medseg-<slug>-segment``."""
    return f"medseg-{slug}-segment"


def segment_config(
    manifest: Manifest, slug: str, settings: SegmentSettings, origin: str, instances: int = 1
) -> ModelConfigText:
    """The segment model's ``config.pbtxt``."""
    params = settings.to_parameters()
    params["medseg_classes"] = ",".join(f"{k}={v}" for k, v in manifest.classes.items())
    return ModelConfigText(
        name=segment_model_name(slug),
        platform="",
        backend=PYTHON_BACKEND,
        max_batch_size=0,
        inputs=[
            TensorConfig(INPUT_VOLUME, (-1, -1, -1, -1), "TYPE_FP32", optional=True),
            TensorConfig(INPUT_AFFINE, (4, 4), "TYPE_FP64", optional=True),
            TensorConfig(INPUT_NIFTI, (-1,), "TYPE_UINT8", optional=True),
        ],
        outputs=[TensorConfig(OUTPUT_LABELS, (-1, -1, -1), "TYPE_UINT8")],
        preferred_batch_size=[],
        max_queue_delay_us=0,
        instance_kind="KIND_CPU",
        instance_count=instances,
        parameters=params,
        comments=[
            f"End-to-end segmenter (Python backend, medseg.runtime.Segmenter), {origin}.",
            f"Send {INPUT_VOLUME} float32 (C, X, Y, Z) + {INPUT_AFFINE} float64 (4, 4), or "
            f"{INPUT_NIFTI} uint8 (file bytes);",
            f"get {OUTPUT_LABELS} uint8 (X, Y, Z) on the input grid. medseg_backend auto: "
            "TensorRT with a GPU and",
            "an engine in 1/bundle/engines/, else ONNX Runtime. Needs medseg-edge[runtime] in "
            "the server's Python.",
        ],
    )


def write_segment_model(
    root: Path, config: ModelConfigText, bundle: Path, manifest: Manifest
) -> None:
    """Write the model folder: ``config.pbtxt``, ``1/model.py``, ``1/bundle/`` (a copy)."""
    version = root / config.name / VERSION
    copy = version / BUNDLE_DIR
    copy.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("triton_model.py"), version / "model.py")
    shutil.copyfile(bundle / MANIFEST_NAME, copy / MANIFEST_NAME)
    for folder, part in fold_bundles(manifest, bundle).values():  # the model, or every fold
        into = copy / folder.relative_to(bundle)
        into.mkdir(parents=True, exist_ok=True)
        for entry in part.precisions.values():
            shutil.copyfile(folder / entry.file, into / entry.file)
        if (folder / ENGINES_DIR).is_dir():
            shutil.copytree(folder / ENGINES_DIR, into / ENGINES_DIR)
    (root / config.name / "config.pbtxt").write_text(config.render())
