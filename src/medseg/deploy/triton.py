"""Export a bundle as an NVIDIA Triton Inference Server model repository.

One ``onnxruntime_onnx`` model per ONNX precision of the bundle, one ``tensorrt_plan``
model per TensorRT engine already built into it (``bundle/engines/<device-key>/<p>.plan``), and
the end-to-end segmenter ``medseg-<model>-segment`` (Python backend, see
:mod:`medseg.deploy.triton_segment`)::

    OUT/
      README.md                       the preprocessing contract and the commands to serve
      <model>-<precision>-onnx/config.pbtxt
      <model>-<precision>-onnx/1/model.onnx
      <model>-<precision>-onnx/1/medseg.json
      <model>-<precision>-trt-<device-key>/config.pbtxt
      <model>-<precision>-trt-<device-key>/1/model.plan
      <model>-<precision>-trt-<device-key>/1/medseg.json
      medseg-<model>-segment/config.pbtxt, 1/model.py, 1/bundle/

The raw-logits models (ONNX, plan) run the network only: the client applies the bundle's
preprocessing (intensity normalisation, slicing, padding or resizing) and undoes it on the
logits (``medseg infer REPOSITORY scan --server URL --model NAME`` runs medseg's runtime with
the server as its backend, :class:`medseg.runtime.backends.triton.TritonBackend`). The manifest is
copied into every model's version folder, so a model folder moved to another server keeps its
contract; ``config.pbtxt`` carries its sha256 and the recipe as parameters.

ONNX models get ``instance_group [{ kind: KIND_GPU }]``: Triton's ONNX Runtime backend then uses
its CUDA execution provider. A CPU-only server needs ``kind: KIND_CPU`` (one edit per config).
A plan runs only on the GPU model and TensorRT version it was built for (unless built
hardware- or version-compatible): serve it with the Triton release whose TensorRT matches.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from medseg.atomic import atomic_dir
from medseg.bundle.entries import MANIFEST_NAME, PRECISIONS, DimRange, file_sha256
from medseg.bundle.folds import bundle_onnx_paths
from medseg.bundle.manifest import Manifest
from medseg.deploy.pbtxt import ModelConfigText, TensorConfig
from medseg.deploy.segment_service import DEFAULT_MAX_VOXELS, VERSION, SegmentSettings
from medseg.deploy.triton_plans import BundlePlan, find_plans
from medseg.deploy.triton_readme import README_NAME, render_readme
from medseg.deploy.triton_segment import PYTHON_BACKEND, segment_config, write_segment_model
from medseg.errors import ConfigError
from medseg.outputs import Input, Output, guard, write_marker
from medseg.runtime.pipelines import pipeline_for

__all__ = [
    "ONNX_PLATFORM",
    "PLAN_PLATFORM",
    "PYTHON_BACKEND",
    "TritonModel",
    "export_triton",
    "model_slug",
]

ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"


@dataclass(frozen=True)
class TritonModel:
    """One model written into the repository.

    Attributes:
        name: Triton's model name (its folder).
        platform: ``onnxruntime_onnx``, ``tensorrt_plan``, or ``python`` (the segmenter).
        precision: ``fp32`` / ``fp16`` / ``int8``.
        path: the model folder (``OUT/<name>``).
        source: the bundle file its ``model.onnx`` / ``model.plan`` was copied from.
        max_batch_size: the largest batch Triton will form.
        device_key: for a plan, the ``engines/`` folder it came from; None for ONNX.
        tensorrt_version, gpu_name: for a plan, what it was built with and for.
    """

    name: str
    platform: str
    precision: str
    path: Path
    source: Path
    max_batch_size: int
    device_key: str | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None


def model_slug(name: str) -> str:
    """A Triton model-name prefix: lower case, ``[a-z0-9._-]`` only."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "medseg"


def _dims(channels: int, height: DimRange, width: DimRange) -> tuple[int, ...]:
    """``(C, H, W)`` without the batch axis; -1 where the size is dynamic."""
    return (
        channels,
        height.min if height.is_static else -1,
        width.min if width.is_static else -1,
    )


def _check_batch(max_batch: int | None, batch: DimRange, what: str) -> int:
    """``max_batch`` (default ``batch.max``); ConfigError naming the range if outside it."""
    if max_batch is None:
        return batch.max
    if not batch.contains(max_batch):
        raise ConfigError(
            f"--max-batch {max_batch} is outside the batch range of {what}: choose "
            f"{batch.min} to {batch.max} (min:opt:max {batch.min}:{batch.opt}:{batch.max})"
        )
    return max_batch


@dataclass(frozen=True)
class _Common:
    """What every model of one export shares."""

    manifest: Manifest
    manifest_sha: str
    slug: str
    max_queue_delay_us: int
    origin: str

    def tensors(
        self, height: DimRange, width: DimRange
    ) -> tuple[list[TensorConfig], list[TensorConfig]]:
        spec, classes = self.manifest.input, self.manifest.num_classes
        return (
            [TensorConfig(spec.name, _dims(spec.channels, height, width))],
            [TensorConfig(self.manifest.output_name, _dims(classes, height, width))],
        )

    def parameters(self, model_sha: str, precision: str) -> dict[str, str]:
        recipe = self.manifest.preprocessing.to_dict()
        return {
            "medseg_manifest": f"{VERSION}/{MANIFEST_NAME}: the client applies its preprocessing",
            "medseg_manifest_sha256": self.manifest_sha,
            "medseg_model_sha256": model_sha,
            "medseg_precision": precision,
            "medseg_preprocessing": json.dumps(recipe, sort_keys=True, separators=(",", ":")),
            "medseg_classes": json.dumps(self.manifest.classes, separators=(",", ":")),
        }


def _onnx_config(common: _Common, precision: str, max_batch: int) -> ModelConfigText:
    spec = common.manifest.input
    inputs, outputs = common.tensors(spec.height, spec.width)
    return ModelConfigText(
        name=f"{common.slug}-{precision}-onnx",
        platform=ONNX_PLATFORM,
        max_batch_size=max_batch,
        inputs=inputs,
        outputs=outputs,
        preferred_batch_size=[min(spec.batch.opt, max_batch)],
        max_queue_delay_us=common.max_queue_delay_us,
        parameters=common.parameters(common.manifest.precisions[precision].sha256, precision),
        comments=[
            f"{precision.upper()} ONNX model, {common.origin}.",
            "ONNX Runtime on the GPU (CUDA execution provider); a CPU-only Triton needs",
            "kind: KIND_CPU in instance_group. Inputs must be preprocessed as in",
            f"{VERSION}/{MANIFEST_NAME} (see the repository README.md).",
        ],
    )


def _plan_config(common: _Common, plan: BundlePlan, max_batch: int) -> ModelConfigText:
    side = plan.sidecar
    inputs, outputs = common.tensors(plan.height, plan.width)
    params = common.parameters(side.engine_sha256, side.precision)
    # A plan is a compiled engine: it deserialises only on the GPU model (or, built ampere+,
    # any sm >= 80) and the TensorRT version (or, built version-compatible, later ones) it was
    # built with. The sidecar says which; the Triton release serving it must ship that TensorRT.
    params.update(
        medseg_tensorrt_version=side.tensorrt_version,
        medseg_gpu=plan.built_for,
        medseg_hardware_compat=str(side.flags["hardware_compat"]),
        medseg_version_compatible=str(bool(side.flags["version_compatible"])).lower(),
        medseg_source_onnx_sha256=side.source_onnx_sha256,
        medseg_engine_note=(
            f"runs only on {plan.built_for} with TensorRT {side.tensorrt_version} unless built "
            "hardware/version-compatible: serve it with the Triton release that ships that "
            "TensorRT, or rebuild it on the target with medseg build"
        ),
    )
    return ModelConfigText(
        name=f"{common.slug}-{side.precision}-trt-{plan.device_key}",
        platform=PLAN_PLATFORM,
        max_batch_size=max_batch,
        inputs=inputs,
        outputs=outputs,
        preferred_batch_size=[min(plan.batch.opt, max_batch)],
        max_queue_delay_us=common.max_queue_delay_us,
        parameters=params,
        comments=[
            f"{side.precision.upper()} TensorRT plan from engines/{plan.device_key}/, "
            f"{common.origin}.",
            f"Built with TensorRT {side.tensorrt_version} on {plan.built_for}: it runs only on",
            "that GPU model and TensorRT version (unless built hardware/version-compatible);",
            "serve it with the Triton release whose TensorRT matches.",
        ],
    )


def _write_model(root: Path, config: ModelConfigText, source: Path, bundle: Path) -> None:
    version = root / config.name / VERSION
    version.mkdir(parents=True)
    filename = "model.plan" if config.platform == PLAN_PLATFORM else "model.onnx"
    shutil.copyfile(source, version / filename)
    shutil.copyfile(bundle / MANIFEST_NAME, version / MANIFEST_NAME)
    (root / config.name / "config.pbtxt").write_text(config.render())


def _check_ensemble_options(bundle: Path, max_batch: int | None, segment: bool) -> None:
    """Options of the raw-logits models given for a fold ensemble (nnU-Net bundle)."""
    why = (
        f"bundle {bundle} is an nnU-Net fold ensemble: Triton serves it through the end-to-end "
        "segmenter only (raw per-fold logits would leave nnU-Net's preprocessing, window "
        "blending and fold averaging to every client)"
    )
    if not segment:
        raise ConfigError(f"{why}; it cannot be exported without the segmenter")
    if max_batch is not None:
        raise ConfigError(f"--max-batch sets the raw-logits models; {why}: drop --max-batch")


def export_triton(
    bundle: Path,
    out: Path,
    *,
    max_batch: int | None = None,
    max_queue_delay_us: int = 100,
    force: bool = False,
    segment: bool = True,
    segment_precision: str = "fp32",
    max_voxels: int = DEFAULT_MAX_VOXELS,
    segment_instances: int = 1,
    segment_threads: int = 0,
) -> list[TritonModel]:
    """Write a Triton model repository for ``bundle`` into ``out`` (atomically).

    Args:
        bundle: a bundle folder (``medseg export`` output, engines optional).
        out: the model repository to write; an existing non-empty folder needs ``force``.
        max_batch: ``max_batch_size`` of every model (default: the bundle's, or a plan's,
            maximum batch); must lie within the batch range of the bundle and of every plan.
        max_queue_delay_us: how long Triton's dynamic batcher may wait to fill a batch.
        force: replace an existing ``out`` (only once the new repository is complete).
        segment: also write the end-to-end segmenter ``medseg-<model>-segment``.
        segment_precision: the bundle precision the segmenter runs.
        max_voxels: the segmenter's cap on voxels per request (all channels).
        segment_instances: copies of the segmenter Triton runs (each its own process), so
            that concurrent requests run in parallel.
        segment_threads: ONNX Runtime threads per copy; 0: ONNX Runtime's default.

    Returns:
        The models written: ONNX ones by precision, plans by precision and device, then the
        segmenter.

    Raises:
        ConfigError: a bad option, a tampered ONNX file, a plan without or against its
            sidecar, or ``out`` not empty without ``force``.
    """
    bundle, out = Path(bundle), Path(out)
    manifest = Manifest.load(bundle)
    guard([Output("out", out, "triton-repository")], [Input("bundle", bundle)], force=force)
    if max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
    if pipeline_for(manifest).ensemble:  # a fold ensemble: only the segmenter serves it
        _check_ensemble_options(bundle, max_batch, segment)
        for precision in manifest.precisions:
            bundle_onnx_paths(manifest, bundle, precision, verify=True)
        onnx_batch, onnx_files, plans = manifest.input.batch.max, {}, []
    else:
        onnx_batch = _check_batch(max_batch, manifest.input.batch, f"bundle {bundle}")
        onnx_files = {p: manifest.onnx_path(bundle, p, verify=True) for p in manifest.precisions}
        plans = find_plans(bundle, manifest)
    plan_batches = [_check_batch(max_batch, p.batch, f"engine {p.path}") for p in plans]
    name = manifest.model.get("name") or manifest.model.get("arch") or "medseg"
    common = _Common(
        manifest=manifest,
        manifest_sha=file_sha256(bundle / MANIFEST_NAME),
        slug=model_slug(str(name)),
        max_queue_delay_us=max_queue_delay_us,
        origin=f"exported by medseg export-triton from bundle {bundle.resolve()}",
    )
    if segment and segment_precision not in manifest.precisions:
        raise ConfigError(
            f"--segment-precision {segment_precision}: bundle {bundle} has "
            f"{', '.join(sorted(manifest.precisions))}"
        )
    settings = SegmentSettings(
        precision=segment_precision,
        max_voxels=max_voxels,
        threads=segment_threads,
        manifest_sha256=common.manifest_sha,
        source_bundle=str(bundle.resolve()),
    )
    if segment_instances < 1:
        raise ConfigError(f"segment instances must be >= 1, got {segment_instances}")
    seg_config = segment_config(
        manifest, common.slug, settings, common.origin, instances=segment_instances
    )
    entries: list[tuple[ModelConfigText, Path, BundlePlan | None]] = [
        (_onnx_config(common, p, onnx_batch), onnx_files[p], None)
        for p in PRECISIONS
        if p in onnx_files
    ]
    entries += [
        (_plan_config(common, plan, batch), plan.path, plan)
        for plan, batch in zip(plans, plan_batches, strict=True)
    ]
    with atomic_dir(out) as tmp:
        for config, source, _ in entries:
            _write_model(tmp, config, source, bundle)
        if segment:
            write_segment_model(tmp, seg_config, bundle, manifest)
        configs = [config for config, _, _ in entries] + ([seg_config] if segment else [])
        (tmp / README_NAME).write_text(render_readme(manifest, bundle, configs))
        write_marker(tmp, "triton-repository", "medseg export-triton")
    written = [
        TritonModel(
            name=config.name,
            platform=config.platform,
            precision=config.parameters["medseg_precision"],
            path=out / config.name,
            source=source,
            max_batch_size=config.max_batch_size,
            device_key=plan.device_key if plan else None,
            tensorrt_version=plan.sidecar.tensorrt_version if plan else None,
            gpu_name=plan.sidecar.gpu_name if plan else None,
        )
        for config, source, plan in entries
    ]
    if segment:
        written.append(
            TritonModel(
                name=seg_config.name,
                platform=PYTHON_BACKEND,
                precision=segment_precision,
                path=out / seg_config.name,
                source=bundle / MANIFEST_NAME,
                max_batch_size=0,
            )
        )
    return written
