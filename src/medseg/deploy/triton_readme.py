"""The ``README.md`` of an exported Triton model repository, and the commands to serve it.

The README states the preprocessing contract (Triton runs only the network), lists the models
with where each may run, and gives the commands to start ``tritonserver`` and to query it with
``medseg infer --server`` (the runtime here, the network on the server).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medseg import __version__
from medseg.bundle.entries import MANIFEST_NAME
from medseg.bundle.manifest import Manifest
from medseg.deploy.pbtxt import ModelConfigText
from medseg.transforms.preprocessing import SIZE_MULTIPLE, Recipe

__all__ = ["README_NAME", "TRITON_IMAGE", "render_readme", "serve_commands"]

README_NAME = "README.md"
#: Triton's NGC image; ``<YY.MM>`` is the release whose TensorRT matches the plans (Triton's
#: release compatibility matrix lists the TensorRT of each release).
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:<YY.MM>-py3"


def serve_commands(repository: str, model: str) -> list[str]:
    """Start Triton on ``repository`` (a path as the shell should see it), then query ``model``."""
    return [
        f"tritonserver --model-repository {repository}",
        "docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 "
        f"-v {repository}:/models {TRITON_IMAGE} tritonserver --model-repository /models",
        f"medseg infer {repository} scan.nii.gz --out mask.nii.gz "
        f"--server http://localhost:8000 --model {model}",
    ]


def _pad_step(recipe: Recipe) -> str:
    return (
        f"zero-pad each slice, centred, to the next multiple of {SIZE_MULTIPLE} in H and W "
        "(crop the logits back)"
    )


def _window_step(recipe: Recipe) -> str:
    assert recipe.patch_size is not None  # guaranteed by Recipe.__post_init__
    ph, pw = recipe.patch_size
    spacing = (
        "at the scan's own spacing"
        if recipe.target_spacing is None
        else "resampled in-plane (cubic) to "
        + " x ".join(f"{v:g}" for v in recipe.target_spacing)
        + " mm before normalisation"
    )
    return (
        f"slices {spacing}; overlapping {ph}x{pw} windows (overlap {recipe.overlap:g}, "
        "Gaussian-weighted average of the logits, then softmax), probabilities resampled back "
        "(linear); `medseg infer --server` does all of it"
    )


def _resize_step(recipe: Recipe) -> str:
    assert recipe.target_size is not None  # guaranteed by Recipe.__post_init__
    h, w = recipe.target_size
    return f"resize each slice bilinearly to {h}x{w} (resize the logits back)"


#: size_policy -> the contract's "Size" step.
_SIZE_STEPS = {"pad": _pad_step, "window": _window_step, "resize": _resize_step}


def _recipe_steps(recipe: Recipe) -> list[str]:
    if recipe.modality == "CT":
        assert recipe.ct_window is not None  # guaranteed by Recipe.__post_init__
        lo, hi = recipe.ct_window
        norm = f"CT: clip to [{lo:g}, {hi:g}] HU, scale linearly to [0, 1]"
        if recipe.ct_zscore is not None:
            mean, std = recipe.ct_zscore
            norm = f"CT: clip to [{lo:g}, {hi:g}] HU, then (x - {mean:g}) / {std:g}"
    elif recipe.modality == "MR":
        lo, hi = recipe.percentiles
        norm = (
            f"MR, per channel over the whole volume: clip to the {lo:g}-{hi:g} percentiles of "
            f"the foreground (raw value > {recipe.foreground_threshold:g}), then z-score with "
            "the foreground's mean and std"
        )
    else:
        norm = "none: cast to float32"
    size = _SIZE_STEPS[recipe.size_policy](recipe)
    return [
        f"Intensity normalisation: {norm}.",
        f"Cut 2D slices along volume axis {recipe.slice_axis} ({'XYZ'[recipe.slice_axis]}) of "
        "the (X, Y, Z) voxel array, as stored (no reorientation).",
        f"Size: {size}.",
        "Send (N, C, H, W) float32 batches; take the argmax over K of the (N, K, H, W) logits.",
    ]


def _segment_section(name: str) -> str:
    return f"""## Which model to choose

`{name}` is the end-to-end segmenter: send a whole volume (float32 `volume` `(C, X, Y, Z)` with
its float64 `affine` `(4, 4)`, or the bytes of a NIfTI file as uint8 `nifti`), get uint8
`labels` `(X, Y, Z)` on the input's grid. It runs `medseg.runtime.Segmenter` on the bundle copy
in `{name}/1/bundle/` (the code of `medseg infer`: same preprocessing, same mask), on TensorRT
when the server has a GPU and an engine, else ONNX Runtime. Choose it unless you have a
reason not to: clients cannot drift from the validated preprocessing. A bad request (wrong
channel count, a NaN voxel, a corrupt NIfTI, a volume above `medseg_max_voxels`) gets an error
response naming the problem. At load it checks the bundle copy against the exported sha256 and
refuses to load, with the rebuild command, when it does not match.

The raw-logits models take preprocessed `(N, C, H, W)` slices and return logits: choose them
for a client that batches slices from many scans into one GPU queue, or to run the network
with Triton's own ONNX Runtime / TensorRT backends (not in every Triton build), and apply the
contract below exactly.

```bash
medseg serve "$PWD" --port 8000               # tritonserver on 127.0.0.1 (medseg-edge[serve])
medseg infer BUNDLE scan.nii.gz --out mask.nii.gz --server http://127.0.0.1:8000
```

"""


def _segmenter_only_readme(
    manifest: Manifest, bundle: Path, rows: list[str], segment_section_name: str | None
) -> str:
    """The README of a repository holding only the end-to-end segmenter (fold ensembles)."""
    name = str(manifest.model.get("name", "medseg model"))
    folds = ", ".join(manifest.folds or ())
    section = _segment_section(segment_section_name) if segment_section_name else ""
    return f"""# Triton model repository: {name}

Written by `medseg export-triton` (medseg-edge {__version__}) from the bundle
`{Path(bundle).resolve()}`: an nnU-Net fold ensemble (folds {folds}). Triton serves it through
the end-to-end segmenter only: nnU-Net's preprocessing, the sliding window over every fold, the
mean of the folds' logits and the resampling back run inside it, as in `medseg infer`. Raw
per-fold logits models are not exported (every client would have to reproduce all of that).

| model | platform | precision | max batch | runs on |
|---|---|---|---|---|
{chr(10).join(rows)}

{section}"""


def render_readme(manifest: Manifest, bundle: Path, configs: Sequence[ModelConfigText]) -> str:
    """The repository's README: contract, models, commands."""
    spec = manifest.input
    name = str(manifest.model.get("name", "medseg model"))
    rows, segmenter = [], None
    for c in configs:
        where = "any GPU Triton (ONNX Runtime)"
        if c.backend:
            segmenter = c.name
            where = "any Triton with the Python backend and medseg-edge[runtime] (CPU or GPU)"
        elif c.platform == "tensorrt_plan":
            where = (
                f"{c.parameters['medseg_gpu']}, TensorRT {c.parameters['medseg_tensorrt_version']}"
            )
        precision = c.parameters["medseg_precision"]
        platform = c.platform or f"{c.backend} backend"
        rows.append(f"| `{c.name}` | {platform} | {precision} | {c.max_batch_size} | {where} |")
    classes = ", ".join(f"{v} = {k}" for k, v in manifest.classes.items())
    raw = [c for c in configs if not c.backend]
    if not raw:  # a fold ensemble (nnU-Net bundle): the segmenter only
        return _segmenter_only_readme(manifest, bundle, rows, segment_section_name=segmenter)
    steps = "\n".join(
        f"{i}. {s}"
        for i, s in enumerate(_recipe_steps(manifest.medseg_recipe("Triton deployment")), 1)
    )
    commands = "\n".join(serve_commands('"$PWD"', raw[0].name)) if raw else ""
    segment_section = _segment_section(segmenter) if segmenter else ""
    min_batch = (
        f"\nThe network takes at least {spec.batch.min} slices per request: pad smaller "
        "batches with zero slices and drop their outputs (the client does).\n"
        if spec.batch.min > 1
        else ""
    )
    return f"""# Triton model repository: {name}

Written by `medseg export-triton` (medseg-edge {__version__}) from the bundle
`{Path(bundle).resolve()}`. Every model folder holds `config.pbtxt` and a version folder `1/`
with the network and a copy of the bundle's `{MANIFEST_NAME}`.

| model | platform | precision | max batch | runs on |
|---|---|---|---|---|
{chr(10).join(rows)}

{segment_section}## The preprocessing contract (raw-logits models)

The ONNX and TensorRT models run only the network. Input `{spec.name}`: float32
`(N, {spec.channels}, H, W)` slices, H {spec.height} and W {spec.width} (a range reads
min:opt:max), already preprocessed; output
`{manifest.output_name}`: float32 `(N, {manifest.num_classes}, H, W)` logits. Classes: {classes}.
The client must apply the recipe in `1/{MANIFEST_NAME}` (`preprocessing`) exactly, or the masks
are wrong without any error:

{steps}
{min_batch}
`medseg infer <this folder> scan.nii.gz --out mask.nii.gz --server URL --model <model>`
does all of this with medseg's runtime, the network on the server (`pip install
'medseg-edge[runtime,serve]'`). The `medseg_manifest_sha256` parameter of each config is the
sha256 of the `{MANIFEST_NAME}` it was exported with; that command checks it.

## Serving

ONNX models run on the GPU (`instance_group [{{ kind: KIND_GPU }}]`, ONNX Runtime's CUDA
execution provider); on a CPU-only Triton change it to `kind: KIND_CPU`. A TensorRT plan runs
only on the GPU model and TensorRT version it was built with (unless built hardware- or
version-compatible): use the Triton release whose TensorRT is that version (Triton's release
compatibility matrix lists them), or rebuild the engine on the target with `medseg build` and
export again. Remove a model folder to stop serving it. From this folder:

```bash
{commands}
```
"""
