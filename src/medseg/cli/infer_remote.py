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
        The manifest file and, for a repository, the segment model it belongs to.

    Raises:
        ConfigError: neither a bundle nor a repository with one (or the ``--model``) segment
            model.
    """
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME, None
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
    from medseg.deploy.remote import RemoteSegmenter
    from medseg.deploy.triton import model_slug
    from medseg.deploy.triton_segment import segment_model_name

    started = time.perf_counter()
    manifest_file, repo_model = find_manifest(bundle, model)
    manifest = Manifest.load(manifest_file.parent)
    name = manifest.model.get("name") or manifest.model.get("arch") or "medseg"
    model = model or repo_model or segment_model_name(model_slug(str(name)))
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
