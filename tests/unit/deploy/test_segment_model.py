"""The end-to-end segmenter model without a server: its settings, load check and requests.

:class:`SegmentService` is what ``model.py`` runs inside Triton, here with the real demo bundle
on ONNX Runtime; requests use a block of the embedded MNI152 brain. ``test_triton_server.py``
runs the same model inside a real ``tritonserver``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.deploy import export_triton
from medseg.deploy.remote import parse_server_url
from medseg.deploy.segment_service import SegmentService, SegmentSettings, check_segment_model
from medseg.deploy.server import ServerOptions, TritonInstall
from medseg.deploy.serving import plan_serving
from medseg.errors import ConfigError, DatasetError
from medseg.runtime import Segmenter

DEMO_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"
MODEL = "medseg-mni152-tissue-attention-fusion-segment"
runner = CliRunner()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton(DEMO_BUNDLE, out, max_voxels=2_000_000)
    return out


@pytest.fixture(scope="module")
def brain() -> tuple[np.ndarray, np.ndarray]:
    """Two axial slices of the MNI152 T1 (1, 197, 233, 2) and its affine."""
    from medseg.data.mni152 import mni152_volume

    t1, _, affine = mni152_volume()
    return np.ascontiguousarray(t1[None, :, :, 90:92], dtype=np.float32), affine


@pytest.fixture(scope="module")
def service(repository: Path) -> SegmentService:
    from medseg.deploy.serving import read_model_config

    config = read_model_config(repository / MODEL / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    return SegmentService.from_model_dir(repository / MODEL, params)


def _nifti_bytes(volume: np.ndarray, affine: np.ndarray, compress: bool) -> bytes:
    import nibabel as nib

    data = nib.Nifti1Image(volume[0], affine).to_bytes()
    return gzip.compress(data) if compress else data


def test_segment_requests_match_local_inference(
    service: SegmentService, brain: tuple[np.ndarray, np.ndarray]
) -> None:
    volume, affine = brain
    with Segmenter.from_bundle(DEMO_BUNDLE) as local:
        expected = local.segment(volume, affine=affine).labels
    labels = service.segment_request(volume=volume, affine=affine)
    assert labels.dtype == np.uint8 and labels.shape == volume.shape[1:]
    assert np.array_equal(labels, expected)
    assert len(np.unique(labels)) >= 3  # real tissue classes, not an empty mask
    for compress in (False, True):
        nifti = np.frombuffer(_nifti_bytes(volume, affine, compress), np.uint8)
        assert np.array_equal(service.segment_request(nifti=nifti), expected)


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({}, "exactly one of the inputs volume"),
        ({"volume": np.zeros((2, 8, 8, 2), np.float32)}, "has 2 channel(s); the model takes 1"),
        ({"volume": np.zeros((8, 8, 2), np.float32)}, "is not (C, X, Y, Z)"),
        ({"volume": np.zeros((1, 8, 8, 2), np.float32), "affine": np.eye(3)}, "(4, 4) matrix"),
        ({"volume": np.zeros((1, 200, 200, 60), np.float32)}, "exceed this model's cap of 2000000"),
        ({"nifti": np.frombuffer(b"\x1f\x8b\x08\x00junk", np.uint8)}, "nifti: gzip data"),
        ({"nifti": np.frombuffer(b"not a nifti" * 40, np.uint8)}, "nifti: not a readable NIfTI"),
        ({"nifti": np.zeros(10, np.uint8), "affine": np.eye(4)}, "a NIfTI file carries its own"),
    ],
)
def test_bad_requests_name_the_problem(
    service: SegmentService, inputs: dict[str, np.ndarray], words: str
) -> None:
    with pytest.raises(DatasetError) as info:
        service.segment_request(**inputs)
    assert words in str(info.value)


def test_a_nan_voxel_and_a_nifti_above_the_cap_are_refused(
    service: SegmentService, brain: tuple[np.ndarray, np.ndarray]
) -> None:
    volume, affine = brain
    bad = volume.copy()
    bad[0, 3, 4, 1] = np.inf
    with pytest.raises(DatasetError, match=r"volume: 1 voxel\(s\) are NaN or infinite"):
        service.segment_request(volume=bad, affine=affine)
    big = np.zeros((1, 130, 130, 130), np.float32)  # 2.2 M voxels, compresses to a few KB
    nifti = np.frombuffer(_nifti_bytes(big, affine, compress=True), np.uint8)
    with pytest.raises(DatasetError, match="nifti: 2197000 voxels exceed this model's cap"):
        service.segment_request(nifti=nifti)
    bomb = np.frombuffer(gzip.compress(bytes(40_000_000)), np.uint8)
    with pytest.raises(DatasetError, match="decompresses to more than"):
        service.segment_request(nifti=bomb)


def test_a_tampered_bundle_copy_is_refused_with_the_rebuild_command(
    repository: Path, tmp_path: Path
) -> None:
    import shutil

    from medseg.deploy.serving import read_model_config

    copy = tmp_path / "repo"
    shutil.copytree(repository / MODEL, copy / MODEL)
    config = read_model_config(copy / MODEL / "config.pbtxt")
    settings = SegmentSettings.from_parameters(
        {k: v.string_value for k, v in config.parameters.items()}, "config.pbtxt"
    )
    assert check_segment_model(copy / MODEL, settings).name == "bundle"
    onnx = copy / MODEL / "1" / "bundle" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    rebuild = f"medseg export-triton {DEMO_BUNDLE.resolve()} --out {copy} --force"
    with pytest.raises(ConfigError, match="does not match the sha256") as info:
        check_segment_model(copy / MODEL, settings)
    assert rebuild in str(info.value)
    manifest = copy / MODEL / "1" / "bundle" / "medseg.json"
    manifest.write_text(manifest.read_text().replace('"fp32"', '"fp32" '))
    with pytest.raises(ConfigError, match="is not the manifest this model was exported with"):
        check_segment_model(copy / MODEL, settings)
    # medseg serve checks the same before it starts a server
    install = TritonInstall(binary=tmp_path / "tritonserver", python_backend=tmp_path)
    with pytest.raises(ConfigError, match="rebuild the repository: medseg export-triton"):
        plan_serving(copy, tmp_path / "work", install)


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="segment precision 'fp8'"):
        SegmentSettings(precision="fp8")
    with pytest.raises(ConfigError, match="--max-voxels must be >= 1"):
        SegmentSettings(max_voxels=0)
    with pytest.raises(ConfigError, match="segment instances must be >= 1"):
        export_triton(DEMO_BUNDLE, tmp_path / "repo", segment_instances=0)
    assert not (tmp_path / "repo").exists()
    params = SegmentSettings(manifest_sha256="ab").to_parameters()
    params["medseg_max_voxels"] = "lots"
    with pytest.raises(ConfigError, match="parameter medseg_max_voxels is 'lots'"):
        SegmentSettings.from_parameters(params, "x/config.pbtxt")


def test_serving_plan_loads_what_the_binary_can_run(repository: Path, tmp_path: Path) -> None:
    wheel = TritonInstall(binary=tmp_path / "tritonserver", python_backend=tmp_path)
    plan = plan_serving(repository, tmp_path / "work", wheel)
    assert plan.models == [MODEL]
    assert {n for n, _ in plan.skipped} == {
        f"mni152-tissue-attention-fusion-{p}-onnx" for p in ("fp32", "fp16", "int8")
    }
    assert all("no onnxruntime backend" in reason for _, reason in plan.skipped)
    exported = plan_serving(DEMO_BUNDLE, tmp_path / "work2", wheel, precision="int8")
    assert exported.exported_from == DEMO_BUNDLE and exported.models == [MODEL]
    with pytest.raises(ConfigError, match="not a folder; expected a bundle"):
        plan_serving(tmp_path / "missing", tmp_path / "work3", wheel)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no \*/config.pbtxt"):
        plan_serving(tmp_path / "empty", tmp_path / "work4", wheel)


def test_server_urls_and_options_are_checked() -> None:
    assert parse_server_url("grpc://127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    assert parse_server_url("localhost:8000") == ("http", "localhost:8000")
    with pytest.raises(ConfigError, match="scheme https:// is not one of"):
        parse_server_url("https://host:443")
    with pytest.raises(ConfigError, match="expected http://HOST:PORT"):
        parse_server_url("http://host")
    with pytest.raises(ConfigError, match=r"--port must be 1\.\.65535, got 0"):
        ServerOptions(http_port=0)
    with pytest.raises(ConfigError, match="--grpc-port 8000 is the HTTP port"):
        ServerOptions(http_port=8000, grpc_port=8000)


def test_cli_infer_server_refuses_local_only_options_and_bad_urls(tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    import nibabel as nib

    data = np.random.default_rng(0).random((8, 8, 2)).astype(np.float32)  # a blank scan is refused
    nib.save(nib.Nifti1Image(data, np.eye(4)), scan)
    base = ["infer", str(DEMO_BUNDLE), str(scan), "--out", str(tmp_path / "m.nii.gz")]
    result = runner.invoke(app, [*base, "--server", "http://127.0.0.1:1", "--precision", "int8"])
    assert result.exit_code == 2 and "--precision applies to local inference" in result.output
    result = runner.invoke(app, [*base, "--server", "ftp://x:1"])
    assert result.exit_code == 2 and "scheme ftp:// is not one of" in result.output
    result = runner.invoke(app, [*base, "--server", "http://127.0.0.1:9"])  # nothing listens
    assert result.exit_code == 2 and "unreachable" in result.output
    assert not (tmp_path / "m.nii.gz").exists()


def test_cli_serve_refuses_a_path_that_is_neither(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "not a folder" in result.output or "no tritonserver found" in result.output
