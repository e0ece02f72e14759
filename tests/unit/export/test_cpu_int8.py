"""The CPU INT8 file (model.int8.cpu.onnx): ONNX Runtime's QDQ form, made at export or added
to a bundle, integer kernels for every convolution, run by the CPU backends for int8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.bundle import Manifest
from medseg.bundle.cpu_files import CPU_INT8_FILE, cpu_int8_entry, cpu_int8_path, int8_file_for
from medseg.bundle.entries import file_sha256
from medseg.calibration.int8_cpu import ort_conv_fusion, quantize_int8_cpu
from medseg.errors import ConfigError
from medseg.export.cpu_int8 import add_cpu_int8
from medseg.runtime import create_backend

pytest.importorskip("modelopt")


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, copy, ignore=shutil.ignore_patterns("cache"))
    return copy


def _slices(manifest: Manifest, n: int = 4) -> np.ndarray:
    spec = manifest.input
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (n, spec.channels, spec.height.opt, spec.width.opt)).astype("f4")


def test_export_writes_the_cpu_file_with_its_own_entry(tiny_bundle: Path) -> None:
    manifest = Manifest.load(tiny_bundle)
    entry = cpu_int8_entry(manifest)
    assert entry is not None
    path = tiny_bundle / CPU_INT8_FILE
    assert entry["sha256"] == file_sha256(path) != manifest.precisions["int8"].sha256
    assert entry["size_bytes"] == path.stat().st_size
    details = entry["details"]
    # every convolution in an ONNX Runtime integer kernel, none left in float
    assert details["ort_integer_convs"] == details["total_convs"] > 0
    assert ort_conv_fusion(path) == (details["total_convs"], 0)
    assert set(entry["accuracy"]["dice_per_class"]) == {"disc", "ring"}
    assert 0.9 < entry["parity"]["argmax_agreement"] <= 1.0
    assert manifest.precisions["int8"].file == "model.int8.onnx"  # TensorRT's file unchanged


def test_cpu_backends_run_the_cpu_file_for_int8_only(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    x = _slices(manifest)
    with create_backend(bundle, manifest, "onnxruntime", "int8", threads=1) as backend:
        assert CPU_INT8_FILE in backend.describe()
        logits = backend.infer(x)
    with create_backend(bundle, manifest, "onnxruntime", "fp32", threads=1) as backend:
        assert "model.onnx" in backend.describe()
        reference = backend.infer(x)
    assert np.mean(logits.argmax(1) == reference.argmax(1)) > 0.9
    ov_file = manifest.backend_accuracy["openvino"]["int8"]["file"]  # measured best there
    with create_backend(bundle, manifest, "openvino", "int8", threads=1) as backend:
        assert backend.loader.path.name == ov_file  # type: ignore[attr-defined]
    for named in ("model.int8.onnx", CPU_INT8_FILE):  # OpenVINO follows the record
        data = manifest.to_dict()
        data["backend_accuracy"]["openvino"]["int8"]["file"] = named
        assert int8_file_for(Manifest.from_dict(data), bundle, "openvino").name == named
        assert int8_file_for(Manifest.from_dict(data), bundle, "onnxruntime").name == CPU_INT8_FILE
    data["backend_accuracy"]["openvino"]["int8"]["file"] = "model.onnx"
    with pytest.raises(ConfigError, match=r"backend_accuracy\.openvino\.int8\.file.*accepted"):
        int8_file_for(Manifest.from_dict(data), bundle, "openvino")
    del data["backend_accuracy"]["openvino"]  # exported before per-backend accuracy
    assert int8_file_for(Manifest.from_dict(data), bundle, "openvino").name == CPU_INT8_FILE
    # a tampered CPU file is refused with the command that restores it
    (bundle / CPU_INT8_FILE).write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match=r"sha256.*add_cpu_int8"):
        create_backend(bundle, manifest, "onnxruntime", "int8")


def test_add_cpu_int8_to_an_existing_bundle(bundle: Path) -> None:
    data = json.loads((bundle / "medseg.json").read_text())
    del data["precisions"]["int8"]["details"]["cpu_file"]
    (bundle / "medseg.json").write_text(json.dumps(data))
    (bundle / CPU_INT8_FILE).unlink()
    old = Manifest.load(bundle)
    with create_backend(bundle, old, "onnxruntime", "int8") as backend:  # TensorRT-form file
        assert "model.int8.onnx" in backend.describe()
    lines: list[str] = []
    manifest = add_cpu_int8(bundle, log=lines.append)
    assert Manifest.load(bundle) == manifest
    assert cpu_int8_path(manifest, bundle) == bundle / CPU_INT8_FILE
    entry = cpu_int8_entry(manifest)
    assert entry is not None and entry["accuracy"] == {}  # no data given: parity only
    assert entry["details"]["num_calibration_slices"] == 16  # the bundle's calibration.npz
    assert "convolutions in ONNX Runtime integer kernels" in lines[0]
    # everything else of the manifest is as it was
    before, after = old.to_dict(), manifest.to_dict()
    del after["precisions"]["int8"]["details"]["cpu_file"]
    assert before == after
    with pytest.raises(ConfigError, match=r"already has model\.int8\.cpu\.onnx"):
        add_cpu_int8(bundle)
    add_cpu_int8(bundle, force=True)


def test_add_cpu_int8_bad_bundles(bundle: Path, tmp_path: Path) -> None:
    (bundle / "calibration.npz").rename(tmp_path / "calibration.npz")
    with pytest.raises(ConfigError, match=r"no calibration file calibration\.npz"):
        add_cpu_int8(bundle, force=True)
    data = json.loads((bundle / "medseg.json").read_text())
    data["precisions"]["int8"]["details"]["cpu_file"]["sha256"] = "abc"
    with pytest.raises(ConfigError, match=r"details\.cpu_file\.sha256 must be a 64-character"):
        cpu_int8_entry(Manifest.from_dict(data))
    del data["precisions"]["int8"]
    (bundle / "medseg.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="has no int8 precision"):
        add_cpu_int8(bundle)


def test_unknown_node_to_exclude_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    images = np.load(tiny_bundle / "calibration.npz")["images"]
    with pytest.raises(ConfigError, match="not nodes of"):
        quantize_int8_cpu(tiny_bundle / "model.onnx", tmp_path / "x.onnx", images, ("nope",))
    assert not (tmp_path / "x.onnx").exists()


def test_demo_bundle_tensorrt_file_fuses_few_convolutions(demo_bundle: Path) -> None:
    """Why the CPU file exists: ONNX Runtime leaves most Q/DQ convolutions of the TensorRT-form
    file in float (measured: 9 of 88 fused); its CPU file runs all of them as QLinearConv."""
    integer, floating = ort_conv_fusion(demo_bundle / "model.int8.onnx")
    assert integer < floating
    manifest = Manifest.load(demo_bundle)
    if cpu_int8_entry(manifest) is not None:
        path = cpu_int8_path(manifest, demo_bundle)
        assert path is not None
        assert ort_conv_fusion(path) == (integer + floating, 0)
