"""Segment a NIfTI scan with a medseg model served by NVIDIA Triton (``client_example.py``).

``medseg export-triton`` copies this file into the model repository. Triton runs only the
network, so the client applies the bundle's preprocessing (``<model>/1/medseg.json``) with
medseg's own numpy functions, sends the slices in batches over HTTP, takes the argmax of the
logits, undoes the padding or resizing and writes the mask with the input's affine.

Usage::

    pip install 'medseg-edge[runtime]' 'tritonclient[http]'
    tritonserver --model-repository MODEL_REPOSITORY &
    python client_example.py scan.nii.gz --model NAME --out mask.nii.gz --url localhost:8000

Multi-channel models take one NIfTI file per channel, in the channel order of training.
tritonclient, nibabel and medseg are imported when ``main`` runs, not at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["infer_logits", "load_volume", "main", "parse_args", "postprocess", "preprocess"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("inputs", nargs="+", type=Path, help="NIfTI file(s), one per channel")
    parser.add_argument("--model", required=True, help="Triton model name (a repository folder)")
    parser.add_argument("--out", required=True, type=Path, help="mask to write (.nii.gz)")
    parser.add_argument("--url", default="localhost:8000", help="Triton HTTP endpoint")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="the model's medseg.json (default: <this folder>/<model>/1/medseg.json)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="slices per request")
    return parser.parse_args(argv)


def load_volume(paths: Sequence[Path]) -> tuple[np.ndarray, Any]:
    """``(C, X, Y, Z)`` float32 from one NIfTI file per channel, and the first file's image."""
    import nibabel as nib

    images: list[Any] = [nib.load(str(p)) for p in paths]
    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in images]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 3:
        shapes = [a.shape for a in arrays]
        raise SystemExit(f"inputs must be 3D volumes of one shape, got {shapes}")
    return np.stack(arrays), images[0]


def preprocess(volume: np.ndarray, manifest: Any) -> tuple[np.ndarray, Any]:
    """``(C, X, Y, Z)`` -> network-size slices ``(N, C, H, W)`` and their geometry."""
    from medseg.transforms.preprocessing import bring_to_size, normalize_volume

    recipe = manifest.preprocessing
    stack = np.moveaxis(normalize_volume(volume, recipe), recipe.slice_axis + 1, 0)
    n, c, h, w = stack.shape
    flat, _, geometry = bring_to_size(stack.reshape(n * c, h, w), recipe)
    return np.ascontiguousarray(flat.reshape(n, c, *geometry.padded), np.float32), geometry


def infer_logits(
    client: Any, model: str, slices: np.ndarray, manifest: Any, batch_size: int
) -> np.ndarray:
    """Run ``(N, C, H, W)`` slices through ``model`` in batches; ``(N, K, H, W)`` logits.

    A last batch smaller than the model's minimum batch is padded with zero slices, whose
    outputs are dropped.
    """
    import tritonclient.http as httpclient

    spec, outputs = manifest.input, []
    for start in range(0, len(slices), batch_size):
        batch = slices[start : start + batch_size]
        real = len(batch)
        if real < spec.batch.min:
            pad = np.zeros((spec.batch.min - real, *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, pad])
        tensor = httpclient.InferInput(spec.name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        wanted = httpclient.InferRequestedOutput(manifest.output_name)
        result = client.infer(model, inputs=[tensor], outputs=[wanted])
        outputs.append(result.as_numpy(manifest.output_name)[:real])
    return np.concatenate(outputs)


def segment_windowed_remote(
    volume: np.ndarray, image: Any, manifest: Any, client: Any, model: str, batch_size: int
) -> np.ndarray:
    """Sliding-window bundles: the runtime's window path with the server as the network.

    Resampling to the recipe's spacing (from the NIfTI affine), windows of the static patch
    sent in batches, probabilities back on the input grid, argmax, then the manifest's
    post-processing; the volume is used in its stored voxel order.
    """
    from medseg.runtime.volume import segment_windowed
    from medseg.transforms.postprocess import apply_postprocess

    spacing = tuple(float(v) for v in np.linalg.norm(image.affine[:3, :3], axis=0))

    def predict(batch: np.ndarray) -> np.ndarray:
        return infer_logits(client, model, batch, manifest, batch_size)

    result = segment_windowed(
        volume, spacing, manifest.preprocessing, predict, batch_size, manifest.num_classes
    )
    labels = result.labels
    if manifest.postprocess is not None and manifest.postprocess.active:
        labels = apply_postprocess(labels, manifest.postprocess, manifest.classes, spacing)
    return np.ascontiguousarray(labels)


def postprocess(logits: np.ndarray, geometry: Any, slice_axis: int) -> np.ndarray:
    """``(N, K, H, W)`` logits -> ``(X, Y, Z)`` uint8 labels in the input's voxel grid."""
    from medseg.transforms.preprocessing import restore_size

    labels = restore_size(logits.argmax(axis=1).astype(np.uint8), geometry, is_label=True)
    return np.ascontiguousarray(np.moveaxis(labels, 0, slice_axis))


def main(argv: Sequence[str] | None = None) -> int:
    """Segment ``inputs`` with ``--model`` on the Triton server at ``--url``; write ``--out``."""
    args = parse_args(argv)
    import nibabel as nib
    import tritonclient.http as httpclient

    from medseg.bundle.manifest import Manifest

    here = Path(__file__).resolve().parent
    folder = args.manifest.parent if args.manifest else here / args.model / "1"
    manifest = Manifest.load(folder)
    client = httpclient.InferenceServerClient(url=args.url)
    config = client.get_model_config(args.model)
    expected = config.get("parameters", {}).get("medseg_manifest_sha256", {}).get("string_value")
    digest = hashlib.sha256((folder / "medseg.json").read_bytes()).hexdigest()
    if expected and expected != digest:
        print(
            f"{folder}/medseg.json is not the manifest {args.model} was exported with",
            file=sys.stderr,
        )
        return 2
    max_batch = int(config.get("max_batch_size") or manifest.input.batch.max)
    batch_size = args.batch_size or min(manifest.input.batch.opt, max_batch)
    if not 1 <= batch_size <= max_batch:
        print(f"--batch-size must be 1..{max_batch}, got {batch_size}", file=sys.stderr)
        return 2
    volume, image = load_volume(args.inputs)
    if volume.shape[0] != manifest.input.channels:
        print(
            f"{args.model} takes {manifest.input.channels} channel(s), got {volume.shape[0]}",
            file=sys.stderr,
        )
        return 2
    recipe = manifest.medseg_recipe("the Triton client")
    if recipe.pipeline_kind == "window":
        labels = segment_windowed_remote(volume, image, manifest, client, args.model, batch_size)
        nib.save(nib.Nifti1Image(labels, image.affine), str(args.out))
        print(f"wrote {args.out} (sliding window, {labels.shape[recipe.slice_axis]} slices)")
        return 0
    slices, geometry = preprocess(volume, manifest)
    spec, (height, width) = manifest.input, geometry.padded
    if not (spec.height.contains(height) and spec.width.contains(width)):
        print(
            f"slices are {height}x{width} at network size; {args.model} takes height "
            f"{spec.height} and width {spec.width} (min:opt:max)",
            file=sys.stderr,
        )
        return 2
    logits = infer_logits(client, args.model, slices, manifest, batch_size)
    labels = postprocess(logits, geometry, recipe.slice_axis)
    nib.save(nib.Nifti1Image(labels, image.affine), str(args.out))
    names = {v: k for k, v in manifest.classes.items()}
    counts = ", ".join(
        f"{names.get(int(v), v)}: {n}"
        for v, n in zip(*np.unique(labels, return_counts=True), strict=True)
    )
    print(f"wrote {args.out} ({len(slices)} slices; voxels per class: {counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
