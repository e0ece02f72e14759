"""One backend per fold of an nnU-Net bundle (ONNX Runtime or OpenVINO)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import ConfigError
from medseg.runtime.backends import OPENVINO_CACHE_DIR, Backend, onnx_file_backend

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest

__all__ = ["NNUNET_BACKENDS", "fold_backends"]

#: Backends that run an nnU-Net bundle here (per-fold TensorRT engines: not yet).
NNUNET_BACKENDS = ("onnxruntime", "openvino")


def fold_backends(
    bundle: Path,
    manifest: Manifest,
    backend: str,
    precision: str,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    cuda_graph: bool = False,
) -> dict[str, Backend]:
    """One (unloaded) backend per fold of ``precision`` (sha256-checked files).

    Args:
        backend: ``"auto"`` (ONNX Runtime), ``"onnxruntime"`` or ``"openvino"``.
    """
    from medseg.bundle.folds import bundle_onnx_paths

    if cuda_graph:
        raise ConfigError("--cuda-graph is a TensorRT option; nnU-Net bundles run on CPU")
    if backend == "auto":
        backend = "onnxruntime"
    if backend not in NNUNET_BACKENDS:
        raise ConfigError(
            f"backend {backend!r} does not run nnU-Net bundles yet; accepted: "
            f"auto, {', '.join(NNUNET_BACKENDS)}"
        )
    if providers and backend != "onnxruntime":
        raise ConfigError("--providers sets ONNX Runtime; pass --backend onnxruntime")
    paths = bundle_onnx_paths(manifest, bundle, precision)
    cache = Path(bundle) / OPENVINO_CACHE_DIR
    return {
        fold: onnx_file_backend(
            backend,
            path,
            manifest,
            precision,
            providers,
            threads,
            cache / path.parent.name / path.stem,
        )
        for fold, path in paths.items()
    }
