"""What ``medseg serve BUNDLE_OR_REPOSITORY`` serves, checked before the server starts.

A bundle is exported first (``export_triton`` into a temporary repository); a repository is
served as it is. Every model is read with Triton's own ``ModelConfig`` schema (tritonclient's
``model_config_pb2``); a model whose backend this ``tritonserver`` lacks (the pytriton wheel
has only the Python backend: no ONNX Runtime, no TensorRT) is skipped with the reason. A
segment model whose bundle copy no longer matches the sha256 it was exported with, or whose
source bundle changed since, is refused with the rebuild command (the model itself refuses to
load for the same reasons when another ``tritonserver`` is pointed at the repository).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.bundle.entries import MANIFEST_NAME, file_sha256
from medseg.deploy.segment_service import SegmentSettings, check_segment_model
from medseg.deploy.server import TritonInstall
from medseg.errors import ConfigError, MissingDependencyError

__all__ = ["ServePlan", "available_backends", "plan_serving", "read_model_config"]

#: The backend a Triton ``platform`` runs on.
_PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}


@dataclass(frozen=True)
class ServePlan:
    """The repository to serve and the models to load.

    Attributes:
        repository: the model repository folder.
        models: the models the server loads (segment models first).
        skipped: ``(model, reason)`` for models this server cannot run.
        exported_from: the bundle exported into ``repository``, or ``None``.
    """

    repository: Path
    models: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    exported_from: Path | None = None


def read_model_config(path: Path) -> Any:
    """A ``config.pbtxt`` parsed with Triton's ``ModelConfig`` protobuf.

    Raises:
        ConfigError: the file does not parse (the parser's message names the line).
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {path} needs tritonclient ({exc}): pip install 'medseg-edge[serve]'"
        ) from None
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: not a Triton model config ({exc})") from None


def available_backends(install: TritonInstall) -> set[str]:
    """The backends ``install`` can run: the wheel's (Python only) or the image's folder."""
    if install.python_backend is not None:
        return {"python"}
    folder = install.binary.resolve().parent.parent / "backends"
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def _check_segment(model_dir: Path, params: dict[str, str], repository: Path) -> None:
    settings = SegmentSettings.from_parameters(params, str(model_dir / "config.pbtxt"))
    check_segment_model(model_dir, settings)
    source = Path(settings.source_bundle) / MANIFEST_NAME if settings.source_bundle else None
    if source is not None and source.is_file() and file_sha256(source) != settings.manifest_sha256:
        raise ConfigError(
            f"{model_dir.name}: its bundle {settings.source_bundle} has changed since the export "
            f"({MANIFEST_NAME} sha256 differs); rebuild the repository: "
            f"{settings.rebuild_command(repository)}"
        )


def plan_serving(
    path: Path,
    work: Path,
    install: TritonInstall,
    *,
    precision: str | None = None,
    max_voxels: int | None = None,
) -> ServePlan:
    """Check ``path`` (bundle or repository) and choose the models to load.

    Args:
        path: a bundle (``medseg.json`` inside) or a model repository (``medseg export-triton``).
        work: a scratch folder; a bundle is exported into ``work/repository``.
        install: the server binary (its backends decide what can be loaded).
        precision, max_voxels: the segment model's, when a bundle is exported (fp32 and the
            default cap when ``None``); a repository's models are already set, so giving
            either with a repository is an error.

    Raises:
        ConfigError: not a bundle or repository, nothing this server can load, a segment model
            whose bundle no longer matches (with the rebuild command).
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(
            f"{path}: not a folder; expected a bundle (with {MANIFEST_NAME}) or a Triton model "
            "repository written by medseg export-triton"
        )
    exported_from = None
    if (path / MANIFEST_NAME).is_file():
        from medseg.deploy.segment_service import DEFAULT_MAX_VOXELS
        from medseg.deploy.triton import export_triton

        repository = work / "repository"
        work.mkdir(parents=True, exist_ok=True)
        export_triton(
            path,
            repository,
            segment_precision=precision or "fp32",
            max_voxels=DEFAULT_MAX_VOXELS if max_voxels is None else max_voxels,
        )
        exported_from = path
    else:
        given = [
            option
            for option, value in (("--precision", precision), ("--max-voxels", max_voxels))
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set the segmenter exported from a bundle; {path} is a "
                "model repository whose models are already set (pass the bundle, or re-run "
                "medseg export-triton with them)"
            )
        repository = path
    configs = sorted(repository.glob("*/config.pbtxt"))
    if not configs:
        raise ConfigError(
            f"{path}: no */config.pbtxt; expected a bundle (with {MANIFEST_NAME}) or a model "
            "repository written by medseg export-triton"
        )
    backends = available_backends(install)
    models: list[str] = []
    skipped: list[tuple[str, str]] = []
    for config_path in configs:
        config = read_model_config(config_path)
        name = config.name or config_path.parent.name
        backend = config.backend or _PLATFORM_BACKENDS.get(config.platform, config.platform)
        if backend not in backends:
            skipped.append((name, f"this tritonserver has no {backend} backend"))
            continue
        params = {k: v.string_value for k, v in config.parameters.items()}
        if backend == "python" and "medseg_manifest_sha256" in params:
            _check_segment(config_path.parent, params, repository)
            models.insert(0, name)
        else:
            models.append(name)
    if not models:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise ConfigError(f"{repository}: no model this tritonserver can load ({reasons})")
    return ServePlan(repository, models, skipped, exported_from)
