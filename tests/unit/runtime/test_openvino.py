"""The OpenVINO backend's own rules: precision hints, bf16 only with native BF16, the model
cache next to the bundle (a corrupt one is rebuilt with one warning), auto-selection on a
machine without an NVIDIA GPU, and the missing-extra error. Real OpenVINO on the tiny bundle."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from medseg.bundle import Manifest
from medseg.errors import ConfigError, MissingDependencyError
from medseg.runtime import Segmenter, create_backend
from medseg.runtime.cpu import CpuFeatures, _from_cpuinfo, cpu_features, require_bf16

pytest.importorskip("openvino")


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle (the cache is written into it)."""
    copy = tmp_path / "tiny"
    # without the cache other tests' OpenVINO runs of the shared bundle left in it
    shutil.copytree(tiny_bundle, copy, ignore=shutil.ignore_patterns("cache"))
    return copy


def _slices(manifest: Manifest, n: int = 4) -> np.ndarray:
    spec = manifest.input
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (n, spec.channels, spec.height.opt, spec.width.opt)).astype("f4")


def test_precision_hints_are_explicit(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    hints = {}
    for precision in ("fp32", "fp16", "int8"):
        with create_backend(bundle, manifest, "openvino", precision, threads=1) as backend:
            compiled = backend.compiled  # type: ignore[attr-defined]
            hints[precision] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert set(hints.values()) == {"<Type: 'float32'>"}, hints


def test_fp32_matches_onnxruntime(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    x = _slices(manifest)
    with create_backend(bundle, manifest, "onnxruntime", "fp32", threads=1) as ort:
        expected = ort.infer(x)
    with create_backend(bundle, manifest, "openvino", "fp32", threads=1) as ov:
        actual = ov.infer(x)
    assert np.max(np.abs(actual - expected)) < 1e-3


@pytest.mark.skipif(cpu_features().bf16 is None, reason="this CPU has no native BF16")
def test_bf16_runs_the_fp32_file_with_bf16_arithmetic(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    x = _slices(manifest)
    with create_backend(bundle, manifest, "openvino", "fp32", threads=1) as fp32:
        reference = fp32.infer(x)
    with Segmenter.from_bundle(bundle, "auto", "bf16", threads=1) as segmenter:
        backend = segmenter.backend
        assert backend.name == "openvino"
        compiled = backend.compiled  # type: ignore[attr-defined]
        assert "bfloat16" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        logits = backend.infer(x)
    diff = float(np.max(np.abs(logits - reference)))
    assert 0 < diff < 0.5 * float(np.max(np.abs(reference)))  # BF16 rounding, not FP32
    assert np.mean(logits.argmax(1) == reference.argmax(1)) > 0.98


def test_bf16_without_native_bf16_names_the_instruction_set(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_bf16 = CpuFeatures(frozenset({"avx512_vnni"}), "/proc/cpuinfo")
    monkeypatch.setattr("medseg.runtime.cpu.cpu_features", lambda: no_bf16)
    with pytest.raises(ConfigError, match="AVX512_BF16 or AMX-BF16"):
        create_backend(bundle, Manifest.load(bundle), "openvino", "bf16")
    assert require_bf16(CpuFeatures(frozenset({"amx_bf16"}), "x")) == "amx_bf16"


def test_cpuinfo_flags_are_read() -> None:
    text = "processor : 0\nflags : fpu sse avx512f avx512_vnni avx512_bf16 foo\n"
    features = CpuFeatures(_from_cpuinfo(text), "/proc/cpuinfo")
    assert features.to_dict() == {
        "bf16": "avx512_bf16",
        "int8": "avx512_vnni",
        "cpu_class": "avx512-vnni",
        "source": "/proc/cpuinfo",
    }


def test_bf16_is_refused_on_other_backends(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="--backend openvino"):
        create_backend(bundle, Manifest.load(bundle), "onnxruntime", "bf16")


def test_onnx_runtime_options_are_refused(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="--providers"):
        create_backend(bundle, Manifest.load(bundle), "openvino", "fp32", providers=["cpu"])
    with pytest.raises(ConfigError, match="--cuda-graph"):
        create_backend(bundle, Manifest.load(bundle), "openvino", "fp32", cuda_graph=True)


def test_auto_prefers_openvino_without_an_nvidia_gpu(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = Manifest.load(bundle)
    monkeypatch.setattr("medseg.runtime.cuda.gpu_available", lambda: False)
    assert create_backend(bundle, manifest, "auto", "fp32").name == "openvino"
    # a bundle that does not record OpenVINO's accuracy (exported before it was measured)
    unmeasured = dataclasses.replace(manifest, backend_accuracy={})
    assert create_backend(bundle, unmeasured, "auto", "int8").name == "onnxruntime"
    monkeypatch.setattr("medseg.runtime.cuda.gpu_available", lambda: True)  # no engine here
    assert create_backend(bundle, manifest, "auto", "int8").name == "onnxruntime"


def test_model_cache_is_written_next_to_the_bundle_and_reused(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    with create_backend(bundle, manifest, "openvino", "int8", threads=1) as first:
        assert not first.loader.loaded_from_cache  # type: ignore[attr-defined]
        expected = first.infer(_slices(manifest))
    # INT8 on OpenVINO is the file whose OpenVINO accuracy the bundle records
    ov_file = manifest.backend_accuracy["openvino"]["int8"]["file"]
    assert first.loader.path.name == ov_file  # type: ignore[attr-defined]
    blobs = list((bundle / "cache" / "openvino" / Path(ov_file).stem).glob("*.blob"))
    assert len(blobs) == 1
    with create_backend(bundle, manifest, "openvino", "int8", threads=1) as second:
        assert second.loader.loaded_from_cache  # type: ignore[attr-defined]
        assert "from cache" in second.describe()
        np.testing.assert_array_equal(second.infer(_slices(manifest)), expected)


def test_corrupt_cache_is_rebuilt_with_one_warning(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    with create_backend(bundle, manifest, "openvino", "fp32", threads=1) as backend:
        expected = backend.infer(_slices(manifest))
    (blob,) = (bundle / "cache" / "openvino" / "model").glob("*.blob")
    data = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(data[: len(data) // 2] + b"\0garbage" * 64)
    with (
        pytest.warns(RuntimeWarning, match="corrupt"),
        create_backend(bundle, manifest, "openvino", "fp32", threads=1) as rebuilt,
    ):
        assert not rebuilt.loader.loaded_from_cache  # type: ignore[attr-defined]
        np.testing.assert_array_equal(rebuilt.infer(_slices(manifest)), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: loads cleanly, no second warning
        with create_backend(bundle, manifest, "openvino", "fp32", threads=1) as again:
            assert again.loader.loaded_from_cache  # type: ignore[attr-defined]


def test_missing_openvino_names_the_extra(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingDependencyError, match=r"medseg-edge\[openvino\]"):
        create_backend(bundle, Manifest.load(bundle), "openvino", "fp32")
