"""TensorRT engines of the tiny bundle, built and run on this GPU, against ONNX Runtime on CPU.

Marked ``tensorrt``; skipped with the reason on machines without TensorRT or an NVIDIA GPU.
Tolerances: FP32 engines may use TF32 convolutions on Ampere and newer (TensorRT's default), so
logits agree to ~1e-2, labels almost everywhere; FP16 and INT8 engines run reduced-precision
kernels that ONNX Runtime CPU only emulates, so their labels are compared, not their logits.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.build import BuildOptions, BuiltEngine, build_engines
from medseg.bundle.engines import EngineSidecar
from medseg.bundle.manifest import Manifest
from medseg.runtime import cuda
from medseg.runtime.backends.tensorrt import TensorRTBackend
from medseg.runtime.engines import check_engine, tensorrt_module

#: (bundle copy, its manifest, precision -> built engine, timing cache file)
Built = tuple[Path, Manifest, dict[str, BuiltEngine], Path]


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (the full package builds engines: medseg-edge[trt])"
    if not cuda.gpu_available():
        return "no NVIDIA GPU"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

#: precision -> least argmax agreement with ONNX Runtime CPU on the same file.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.98}


@pytest.fixture(scope="module")
def built(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The tiny bundle (copied) with fp32/fp16/int8 engines built through a timing cache."""
    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("trt") / "bundle")
    cache = bundle.parent / "timing.cache"
    engines = build_engines(bundle, BuildOptions(timing_cache=cache))
    return bundle, Manifest.load(bundle), {e.precision: e for e in engines}, cache


@pytest.fixture(scope="module")
def images(tiny_bundle: Path) -> np.ndarray:
    """8 real preprocessed toy slices (1, 32, 48) from the bundle's calibration set."""
    return np.load(tiny_bundle / "calibration.npz")["images"][:8].astype(np.float32)


def _backend(
    bundle: Path, manifest: Manifest, precision: str, cuda_graph: bool = False
) -> TensorRTBackend:
    """The backend the runtime would create: the engine that check_engine accepts here."""
    trt = tensorrt_module()
    plan = check_engine(bundle, manifest, precision, cuda.gpu_info(), trt.__version__)
    return TensorRTBackend(
        plan, manifest.input, manifest.output_name, manifest.num_classes, cuda_graph=cuda_graph
    )


def test_engines_and_sidecars_are_written(built: Built) -> None:
    bundle, manifest, engines, _ = built
    gpu = cuda.gpu_info()
    trt = tensorrt_module()
    assert sorted(engines) == ["fp16", "fp32", "int8"]
    for precision, engine in engines.items():
        assert engine.path == bundle / "engines" / cuda.device_key(gpu) / f"{precision}.plan"
        sidecar = EngineSidecar.load(engine.sidecar_path)
        assert sidecar == engine.sidecar
        assert sidecar.tensorrt_version == trt.__version__ and sidecar.gpu_name == gpu.name
        assert sidecar.source_onnx_sha256 == manifest.precisions[precision].sha256
        assert sidecar.flags["strongly_typed"] is True
        assert sidecar.profile["batch"] == {"min": 1, "opt": 4, "max": 8}
        assert check_engine(bundle, manifest, precision, gpu, trt.__version__) == engine.path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime_cpu(built: Built, images: np.ndarray, precision: str) -> None:
    from medseg.export.ort import run_onnx

    bundle, manifest, _, _ = built
    reference = run_onnx(manifest.onnx_path(bundle, precision), images)
    with _backend(bundle, manifest, precision) as backend:
        logits = backend.infer(images)
        timing = backend.last_timing
        assert backend.describe().startswith(f"tensorrt {tensorrt_module().__version__} (")
    assert logits.shape == reference.shape and logits.dtype == np.float32
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    assert agreement >= MIN_AGREEMENT[precision], (precision, agreement)
    if precision == "fp32":
        np.testing.assert_allclose(logits, reference, atol=2e-2, rtol=1e-2)
    assert timing is not None and 0 < timing.compute_ms <= timing.total_ms


def test_results_do_not_depend_on_batch_size(built: Built, images: np.ndarray) -> None:
    bundle, manifest, _, _ = built
    with _backend(bundle, manifest, "fp32") as backend:
        whole = backend.infer(images)
        singles = np.concatenate([backend.infer(images[i : i + 1]) for i in range(len(images))])
        halves = np.concatenate([backend.infer(images[:3]), backend.infer(images[3:])])
    np.testing.assert_allclose(singles, whole, atol=1e-3)
    np.testing.assert_allclose(halves, whole, atol=1e-3)


def test_cuda_graph_mode_equals_normal_mode(built: Built, images: np.ndarray) -> None:
    bundle, manifest, _, _ = built
    with _backend(bundle, manifest, "fp16") as normal:
        expected = [normal.infer(images), normal.infer(images[:2])]
    with _backend(bundle, manifest, "fp16", cuda_graph=True) as graphed:
        for _ in range(3):  # first call of a shape: warm run + capture; then replays
            np.testing.assert_allclose(graphed.infer(images), expected[0], atol=1e-3)
        assert len(graphed._graphs) == 1
        for _ in range(3):  # a shape change drops the graph and captures the new shape
            np.testing.assert_allclose(graphed.infer(images[:2]), expected[1], atol=1e-3)
        assert list(graphed._graphs) == [tuple(images[:2].shape)]
        np.testing.assert_allclose(graphed.infer(images), expected[0], atol=1e-3)
        assert graphed.last_timing is not None and graphed.last_timing.compute_ms > 0


def test_timing_cache_is_written_and_reused(built: Built, tmp_path: Path) -> None:
    bundle, manifest, engines, cache = built
    assert cache.is_file() and cache.stat().st_size > 0
    size = cache.stat().st_size
    again = build_engines(bundle, BuildOptions(precisions=("fp32",), timing_cache=cache))
    assert again[0].sidecar.flags["timing_cache"] == str(cache)
    assert cache.stat().st_size >= size
    assert check_engine(
        bundle, manifest, "fp32", cuda.gpu_info(), tensorrt_module().__version__
    ) == (engines["fp32"].path)


def test_version_compatible_engine_loads_in_full_and_lean_runtime(
    tiny_bundle: Path, tmp_path: Path, images: np.ndarray
) -> None:
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (built_vc,) = build_engines(bundle, BuildOptions(precisions=("fp32",), version_compatible=True))
    assert json.loads(built_vc.sidecar_path.read_text())["flags"]["version_compatible"] is True
    manifest = Manifest.load(bundle)
    with _backend(bundle, manifest, "fp32") as backend:
        assert backend.infer(images).shape == (8, manifest.num_classes, 32, 48)
    if importlib.util.find_spec("tensorrt_lean") is None:
        pytest.skip("tensorrt_lean is not installed: the lean-runtime half was not run")
    lean = importlib.import_module("tensorrt_lean")
    runtime = lean.Runtime(lean.Logger(lean.Logger.WARNING))
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine(built_vc.path.read_bytes()) is not None
