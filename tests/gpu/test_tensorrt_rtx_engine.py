"""TensorRT-RTX plans of the tiny bundle run on this RTX GPU, against ONNX Runtime on CPU.

Marked ``gpu``; skipped with the reason where TensorRT-RTX, a GPU, or an RTX-class GPU
(compute capability 7.5, 8.0, 8.6, 8.9, 12.x: not Hopper, not Jetson) is missing. The builds
themselves need no GPU and are tested in tests/unit/build/. Tolerances as for standard TensorRT.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.build import BuildOptions, build_engines
from medseg.bundle.manifest import Manifest
from medseg.runtime import cuda
from medseg.runtime.backends import create_backend
from medseg.runtime.engines_rtx import ACCEPTED_CAPABILITIES, runtime_cache_path


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt_rtx") is None:
        return "TensorRT-RTX is not installed (medseg-edge[rtx])"
    if not cuda.gpu_available():
        return "no NVIDIA GPU (TensorRT-RTX builds without one, but runs on an RTX GPU)"
    major, minor = cuda.gpu_info().compute_capability
    if f"{major}.{minor}" not in ACCEPTED_CAPABILITIES:
        return f"TensorRT-RTX does not target this GPU (sm{major}{minor}; RTX-class GPUs only)"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.98}


@pytest.fixture(scope="module")
def built(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """The tiny bundle (copied) with TensorRT-RTX plans for this GPU's compute capability."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("rtx") / "bundle"))
    major, minor = cuda.gpu_info().compute_capability
    options = BuildOptions(runtime="tensorrt-rtx", compute_capabilities=(f"{major}.{minor}",))
    build_engines(bundle, options)
    return bundle, Manifest.load(bundle)


@pytest.fixture(scope="module")
def images(tiny_bundle: Path) -> np.ndarray:
    return np.load(tiny_bundle / "calibration.npz")["images"][:8].astype(np.float32)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_matches_onnxruntime_cpu(
    built: tuple[Path, Manifest], images: np.ndarray, precision: str
) -> None:
    from medseg.export.ort import run_onnx

    bundle, manifest = built
    reference = run_onnx(manifest.onnx_path(bundle, precision), images)
    with create_backend(bundle, manifest, "tensorrt-rtx", precision) as backend:
        logits = backend.infer(images)
        assert backend.describe().startswith("tensorrt-rtx ")
        timing = backend.last_timing
    assert logits.shape == reference.shape and logits.dtype == np.float32
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    assert agreement >= MIN_AGREEMENT[precision], (precision, agreement)
    assert timing is not None and 0 < timing.compute_ms <= timing.total_ms


def test_runtime_cache_is_written_beside_the_plan_and_reused(
    built: tuple[Path, Manifest], images: np.ndarray
) -> None:
    bundle, manifest = built
    backend = create_backend(bundle, manifest, "tensorrt-rtx", "fp16")
    cache = runtime_cache_path(backend.engine_path, cuda.gpu_info())  # type: ignore[attr-defined]
    cache.unlink(missing_ok=True)
    with backend:
        first = backend.infer(images)
    assert cache.is_file() and cache.stat().st_size > 0
    with create_backend(bundle, manifest, "tensorrt-rtx", "fp16") as again:
        np.testing.assert_allclose(again.infer(images), first, atol=1e-3)


def test_auto_takes_the_rtx_plan_when_no_tensorrt_engine_exists(
    built: tuple[Path, Manifest],
) -> None:
    bundle, manifest = built
    assert create_backend(bundle, manifest, "auto", "int8").name == "tensorrt-rtx"
