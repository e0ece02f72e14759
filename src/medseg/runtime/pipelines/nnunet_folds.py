"""One backend per fold of an nnU-Net bundle: ONNX files or engines, fold by fold.

Each fold is run as a one-model bundle (:func:`medseg.bundle.folds.fold_manifest`): its ONNX
files in ``bundle/fold_<k>/``, its engines in ``bundle/fold_<k>/engines/<device-key>/``
(``medseg build`` writes one per fold and precision), so backend choice and engine checks
are those of every bundle (:func:`medseg.runtime.backends.create_backend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import ConfigError
from medseg.runtime.backends import BACKENDS, Backend, create_backend

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest

__all__ = ["NNUNET_BACKENDS", "fold_backends"]

#: Backends that run an nnU-Net fold ensemble (TensorRT and TensorRT-RTX: one engine per
#: fold, built by ``medseg build``).
NNUNET_BACKENDS = BACKENDS


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
    """One (unloaded) backend per fold of ``precision`` (sha256-checked files), fold order.

    Args:
        backend: ``"auto"`` (as :func:`create_backend` decides, for every fold alike),
            ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"tensorrt-rtx"``.

    Raises:
        ConfigError / EngineBuildError: a file that does not match the manifest, a fold
            without an engine for this device (naming the fold and the build command);
            ``"auto"`` choosing different backends for different folds (an engine built
            for some folds only).
    """
    from medseg.bundle.folds import fold_bundles
    from medseg.errors import EngineBuildError

    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")
    runners: dict[str, Backend] = {}
    for fold, (folder, part) in fold_bundles(manifest, Path(bundle)).items():
        try:
            runners[fold] = create_backend(
                folder,
                part,
                backend,
                precision,
                providers=providers,
                threads=threads,
                cuda_graph=cuda_graph,
            )
        except EngineBuildError as exc:  # the rebuild command names the fold folder
            text = str(exc).replace(f"medseg build {folder}", f"medseg build {bundle}")
            raise EngineBuildError(f"fold {fold}: {text}") from None
    names = {fold: runner.name for fold, runner in runners.items()}
    if len(set(names.values())) > 1:
        raise ConfigError(
            f"backend auto chose {names} for the folds of {bundle}: build the engines of every "
            f"fold (medseg build {bundle}) or pass --backend"
        )
    return runners
