"""``medseg infer --server URL``: the same outputs as local inference, segmented by Triton."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from medseg.bundle.entries import MANIFEST_NAME, file_sha256
from medseg.bundle.manifest import Manifest
from medseg.cli.common import console
from medseg.errors import ConfigError, ServerError
from medseg.runtime.io import OutputPaths, Scan, write_outputs

__all__ = ["find_manifest", "infer_remote", "local_only_options"]

_LOCAL_DEFAULTS: dict[str, object] = {
    "backend": "auto",
    "precision": "fp32",
    "probabilities": False,
    "batch_size": None,
    "providers": None,
    "threads": None,
    "cuda_graph": False,
    "tta": None,
    "no_postprocess": False,
}


def local_only_options(**values: object) -> None:
    """Refuse options that only local inference has (the server's model decides those)."""
    for name, value in values.items():
        if value != _LOCAL_DEFAULTS[name]:
            option = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{option} applies to local inference; with --server the served model decides "
                "(its config.pbtxt parameters medseg_backend, medseg_precision)"
            )


def find_manifest(path: Path, model: str | None) -> tuple[Path, str | None]:
    """The ``medseg.json`` to check the server against: a bundle's, or a repository's copy.

    Returns:
        The manifest file and, for a repository, the model it belongs to (the ``--model``
        when it names a raw-logits model folder of the repository).

    Raises:
        ConfigError: neither a bundle nor a repository with one (or the ``--model``) segment
            model or the ``--model`` network model.
    """
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME, None
    if model is not None and (path / model / "1" / MANIFEST_NAME).is_file():  # a network model
        return path / model / "1" / MANIFEST_NAME, model
    copies = sorted(path.glob(f"*/1/bundle/{MANIFEST_NAME}"))
    if model is not None:
        copies = [c for c in copies if c.parents[2].name == model]
    if len(copies) == 1:
        return copies[0], copies[0].parents[2].name
    found = ", ".join(c.parents[2].name for c in copies) or "none"
    raise ConfigError(
        f"{path}: expected a bundle ({MANIFEST_NAME}) or a repository with one segment model "
        f"(found: {found}); name it with --model"
    )


def infer_remote(
    bundle: Path, scan: Scan, paths: OutputPaths, server: str, model: str | None
) -> tuple[np.ndarray, dict[str, int]]:
    """Segment ``scan`` on ``server`` and write ``paths``; the labels and the class map."""
    from medseg.deploy.remote import RemoteSegmenter, serves_volumes
    from medseg.deploy.triton import model_slug
    from medseg.deploy.triton_segment import segment_model_name

    started = time.perf_counter()
    manifest_file, repo_model = find_manifest(bundle, model)
    manifest = Manifest.load(manifest_file.parent)
    name = manifest.model.get("name") or manifest.model.get("arch") or "medseg"
    model = model or repo_model or segment_model_name(model_slug(str(name)))
    if not serves_volumes(server, model):  # a raw-logits network: the runtime runs here
        return _infer_network(scan, paths, server, model, manifest_file, started)
    with RemoteSegmenter(server, model) as remote:
        remote.check_manifest(file_sha256(manifest_file), manifest_file)
        console.print(
            f"{scan.source}: {'x'.join(map(str, scan.image.shape[1:]))} voxels, "
            f"Triton {server}, model {model}",
            highlight=False,
            soft_wrap=True,
        )
        t0 = time.perf_counter()
        labels = remote.segment(scan.image, scan.affine)
        seconds = time.perf_counter() - t0
    if labels.shape != scan.image.shape[1:]:
        raise ServerError(
            f"server {server} returned labels of shape {labels.shape} for a volume of "
            f"{scan.image.shape[1:]}"
        )
    written = write_outputs(
        paths,
        scan,
        labels,
        manifest.classes,
        None,
        algorithm_version=str(manifest.tool_versions.get("medseg-edge", "")),
    )
    console.print(f"segmented on the server in {seconds:.2f} s (request + response)")
    for path in written:
        console.print(f"[green]✓[/] wrote [bold]{path}[/]", highlight=False)
    console.print(f"done in {time.perf_counter() - started:.1f} s", highlight=False)
    return labels, manifest.classes


def _infer_network(
    scan: Scan, paths: OutputPaths, server: str, model: str, manifest_file: Path, started: float
) -> tuple[np.ndarray, dict[str, int]]:
    """``--model`` is a raw-logits model: :class:`~medseg.runtime.Segmenter` runs here with the
    server as its backend (:func:`medseg.deploy.remote.network_segmenter`)."""
    from medseg.deploy.remote import network_segmenter

    with network_segmenter(server, model, manifest_file) as segmenter:
        console.print(
            f"{scan.source}: {'x'.join(map(str, scan.image.shape[1:]))} voxels, "
            f"Triton {server}, network model {model}, batch {segmenter.batch_size} "
            f"{segmenter.pipeline.unit}",
            highlight=False,
            soft_wrap=True,
        )
        result = segmenter.segment(
            scan.image, source=scan.source, affine=scan.affine, spacing=scan.spacing
        )
    manifest = segmenter.manifest
    written = write_outputs(
        paths,
        scan,
        result.labels,
        manifest.classes,
        None,
        algorithm_version=str(manifest.tool_versions.get("medseg-edge", "")),
    )
    timing = result.timing
    console.print(
        f"{result.num_slices} {segmenter.pipeline.unit} in {timing.total_s:.2f} s (network on "
        f"the server {timing.inference_s:.2f} s, request + response)",
        highlight=False,
    )
    for path in written:
        console.print(f"[green]✓[/] wrote [bold]{path}[/]", highlight=False)
    console.print(f"done in {time.perf_counter() - started:.1f} s", highlight=False)
    return result.labels, manifest.classes
