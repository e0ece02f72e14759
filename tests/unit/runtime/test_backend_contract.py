"""The contract every inference backend meets, run on each backend this machine has.

ONNX Runtime CPU runs everywhere; OpenVINO (CPU) runs where it is installed, with ``bf16``
where the CPU has native BF16; TensorRT runs under the ``tensorrt`` marker where TensorRT
and an NVIDIA GPU exist, and skips with the reason elsewhere. Inputs are real: the toy
dataset's volumes, preprocessed by the bundle's own recipe, and the bundle's ONNX files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medseg.bundle import Manifest
from medseg.data.nifti import load_nifti
from medseg.errors import ChannelMismatchError, ConfigError
from medseg.runtime import Backend, Segmenter, create_backend

PRECISIONS = ("fp32", "fp16", "int8")
#: Least argmax agreement with the PyTorch FP32 model, per precision (toy model, 2 epochs).
MIN_AGREEMENT_WITH_TORCH = {"fp32": 0.999, "fp16": 0.99, "int8": 0.95}


def _tensorrt_skip_reason() -> str | None:
    try:
        from medseg.runtime.cuda import gpu_available
        from medseg.runtime.engines import tensorrt_module

        tensorrt_module()
    except Exception as exc:  # MissingDependencyError or an import problem
        return f"TensorRT is not usable here: {exc}"
    if not gpu_available():
        return "no NVIDIA GPU visible"
    return None


def _openvino_skip_reason() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("openvino") else "openvino is not installed"


BACKEND_PARAMS = [
    pytest.param("onnxruntime", id="onnxruntime"),
    pytest.param("openvino", id="openvino"),
    pytest.param("tensorrt", id="tensorrt", marks=pytest.mark.tensorrt),
    pytest.param("tensorrt-rtx", id="tensorrt-rtx", marks=pytest.mark.gpu),
]
#: backends that take a thread count (TensorRT refuses the option)
CPU_BACKEND_NAMES = ("onnxruntime", "openvino")
#: backend -> the fixture giving its bundle (engine backends need plans built first)
BUNDLE_FIXTURE = {"tensorrt": "engine_bundle", "tensorrt-rtx": "rtx_engine_bundle"}


def _rtx_skip_reason() -> str | None:
    try:
        from medseg.runtime.engines_rtx import ACCEPTED_CAPABILITIES, tensorrt_rtx_module

        tensorrt_rtx_module()
    except Exception as exc:  # MissingDependencyError or an import problem
        return f"TensorRT-RTX is not usable here: {exc}"
    from medseg.runtime.cuda import gpu_available, gpu_info

    if not gpu_available():
        return "no NVIDIA GPU visible (TensorRT-RTX plans run on RTX GPUs)"

    major, minor = gpu_info().compute_capability
    if f"{major}.{minor}" not in ACCEPTED_CAPABILITIES:
        return f"TensorRT-RTX does not target this GPU (sm{major}{minor})"
    return None


@pytest.fixture(scope="module")
def rtx_engine_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with TensorRT-RTX plans for this GPU (RTX GPUs only)."""
    reason = _rtx_skip_reason()
    if reason:
        pytest.skip(reason)
    from medseg.build import BuildOptions, build_engines
    from medseg.runtime.cuda import gpu_info

    bundle = tmp_path_factory.mktemp("rtx") / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    major, minor = gpu_info().compute_capability
    options = BuildOptions(
        precisions=PRECISIONS, runtime="tensorrt-rtx", compute_capabilities=(f"{major}.{minor}",)
    )
    build_engines(bundle, options, lambda _: None)
    return bundle


@pytest.fixture(scope="module")
def engine_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with TensorRT engines for every precision (TensorRT only)."""
    reason = _tensorrt_skip_reason()
    if reason:
        pytest.skip(reason)
    from medseg.build import BuildOptions, build_engines

    bundle = tmp_path_factory.mktemp("trt") / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    build_engines(bundle, BuildOptions(precisions=PRECISIONS), lambda _: None)
    return bundle


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name in BUNDLE_FIXTURE:
        request.getfixturevalue(BUNDLE_FIXTURE[name])
    if name == "openvino" and (reason := _openvino_skip_reason()):
        pytest.skip(reason)
    return name


def _bundle_for(backend_name: str, request: pytest.FixtureRequest) -> Path:
    fixture = BUNDLE_FIXTURE.get(backend_name, "tiny_bundle")
    path: Path = request.getfixturevalue(fixture)
    return path


@pytest.fixture
def open_backend(backend_name: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """A factory: precision -> loaded backend (closed after the test)."""
    bundle = _bundle_for(backend_name, request)
    manifest = Manifest.load(bundle)
    opened: list[Backend] = []

    def make(precision: str) -> Backend:
        threads = 1 if backend_name in CPU_BACKEND_NAMES else None  # a CPU-backend option
        backend = create_backend(bundle, manifest, backend_name, precision, threads=threads)
        opened.append(backend.load())
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture(scope="module")
def toy_slices(tiny_bundle: Path, toy_data: Path) -> np.ndarray:
    """Network-size slices ``(12, 1, 32, 48)`` of one toy case, via the bundle's recipe."""
    manifest = Manifest.load(tiny_bundle)
    image = load_nifti(toy_data / "imagesTr" / "toy_003_0000.nii.gz").data
    segmenter = Segmenter.from_bundle(tiny_bundle, backend="onnxruntime", threads=1)
    slices = segmenter.preprocess(image[None])
    assert slices.shape[1:] == (1, manifest.input.height.opt, manifest.input.width.opt)
    return slices


@pytest.fixture(scope="module")
def torch_labels(toy_runs: dict[str, Path], toy_slices: np.ndarray) -> np.ndarray:
    """What the PyTorch model (the export's source) predicts on the same slices."""
    torch = pytest.importorskip("torch")
    from medseg.train.checkpoint import load_checkpoint
    from medseg.train.slices import predict_slice_labels

    loaded = load_checkpoint(toy_runs["attention-fusion"])
    return predict_slice_labels(loaded.model, toy_slices, torch.device("cpu"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_shapes_dtype_and_timing(open_backend, precision: str, toy_slices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    backend = open_backend(precision)
    logits = backend.infer(toy_slices[:4])
    assert logits.shape == (4, backend.num_classes, *toy_slices.shape[2:])
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    timing = backend.last_timing
    assert timing is not None and timing.batch == 4
    assert 0 < timing.compute_ms <= timing.total_ms


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_invariance(open_backend, precision: str, toy_slices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    backend = open_backend(precision)
    batched = backend.infer(toy_slices[:8])
    single = np.concatenate([backend.infer(toy_slices[i : i + 1]) for i in range(8)])
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    assert np.max(np.abs(batched - single)) < tolerance
    assert np.array_equal(batched.argmax(1), single.argmax(1))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_labels_match_the_pytorch_model(  # type: ignore[no-untyped-def]
    open_backend, precision: str, toy_slices: np.ndarray, torch_labels: np.ndarray
) -> None:
    backend = open_backend(precision)
    labels = backend.infer(toy_slices[:8]).argmax(1)
    agreement = float(np.mean(labels == torch_labels[:8]))
    assert agreement >= MIN_AGREEMENT_WITH_TORCH[precision], agreement


def test_volume_labels_do_not_depend_on_the_batch_size(
    backend_name: str, request: pytest.FixtureRequest, toy_data: Path
) -> None:
    bundle = _bundle_for(backend_name, request)
    image = load_nifti(toy_data / "imagesTr" / "toy_002_0000.nii.gz").data
    results = []
    for batch_size in (1, 4, 8):
        with Segmenter.from_bundle(
            bundle,
            backend_name,
            "int8",
            batch_size=batch_size,
            threads=1 if backend_name in CPU_BACKEND_NAMES else None,
        ) as segmenter:
            results.append(segmenter.segment(image, probabilities=True))
    assert results[0].labels.shape == image.shape and results[0].labels.dtype == np.uint8
    for other in results[1:]:
        assert np.array_equal(results[0].labels, other.labels)
    probs = results[0].probabilities
    assert probs is not None and probs.shape == (3, *image.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    assert np.array_equal(probs.argmax(axis=0), results[0].labels)


@pytest.mark.parametrize(
    ("shape", "dtype", "problem"),
    [
        ((2, 32, 48), np.float32, "(N, C, H, W)"),
        ((2, 1, 32, 48), np.float64, "float32"),
        ((2, 2, 32, 48), np.float32, "channel"),
        ((2, 1, 64, 48), np.float32, "slice height 64"),
        ((9, 1, 32, 48), np.float32, "batch size 9"),
    ],
)
def test_bad_batches_are_refused_with_the_allowed_range(  # type: ignore[no-untyped-def]
    open_backend, shape: tuple[int, ...], dtype: type, problem: str
) -> None:
    backend = open_backend("fp32")
    # a channel mismatch is the same error class wherever it is found (scan, batch, dataset)
    error = ChannelMismatchError if problem == "channel" else ConfigError
    with pytest.raises(error, match=problem.replace("(", r"\(").replace(")", r"\)")):
        backend.infer(np.zeros(shape, dtype=dtype))


# -- every backend compares the model with the manifest when it loads (issue 22, item 18) ------
def _mismatched(manifest: Manifest, what: str) -> Manifest:
    import dataclasses

    if what == "channels":
        return dataclasses.replace(manifest, input=dataclasses.replace(manifest.input, channels=2))
    if what == "classes":  # cut to 2 classes: the model outputs 3
        kept = dict(list(manifest.classes.items())[:2])
        return dataclasses.replace(manifest, classes=kept, postprocess=None)
    return dataclasses.replace(
        manifest, input=dataclasses.replace(manifest.input, name="no_such_input")
    )


def _backend_for(name: str, bundle: Path, manifest: Manifest, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if name == "torch":
        pytest.importorskip("torch")
        from medseg.bench.torch_reference import TorchBackend

        toy_runs = request.getfixturevalue("toy_runs")
        return TorchBackend(toy_runs["attention-fusion"], manifest, threads=1)
    return create_backend(
        bundle, manifest, name, "fp32", threads=1 if name in CPU_BACKEND_NAMES else None
    )


@pytest.mark.parametrize("what", ["channels", "classes", "input name"])
@pytest.mark.parametrize("name", [*BACKEND_PARAMS, pytest.param("torch", id="torch")])
def test_a_manifest_the_model_does_not_match_is_refused_at_load(
    name: str, what: str, request: pytest.FixtureRequest
) -> None:
    from medseg.errors import ModelMismatchError

    if name in BUNDLE_FIXTURE:
        request.getfixturevalue(BUNDLE_FIXTURE[name])
    if name == "openvino" and (reason := _openvino_skip_reason()):
        pytest.skip(reason)
    bundle = _bundle_for(name, request)
    manifest = _mismatched(Manifest.load(bundle), what)
    if name == "torch" and what == "input name":
        pytest.skip("a PyTorch module has no input names")
    backend = _backend_for(name, bundle, manifest, request)
    expected = {"channels": "input.channels", "classes": "classes", "input name": "input.name"}
    with pytest.raises(ModelMismatchError, match=expected[what]):
        backend.load()
    assert not backend.is_loaded
