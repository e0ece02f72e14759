"""The segmenter model inside a real ``tritonserver`` (the pytriton wheel's), on loopback.

Skipped, with the reason, where the serve extra's binary is not installed (``make
serve-install``). One server for the module: a block of the MNI152 brain over HTTP and gRPC,
bad requests answered with errors while the server keeps serving, and ``medseg infer
--server`` writing the same NIfTI mask and DICOM SEG as local ``medseg infer``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.nifti import load_nifti, save_nifti
from medseg.deploy import export_triton
from medseg.deploy.remote import RemoteSegmenter
from medseg.deploy.server import ServerOptions, TritonServer, find_tritonserver
from medseg.errors import ConfigError, DatasetError, MissingDependencyError, ServerError
from medseg.runtime import Segmenter

DEMO_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"
MODEL = "medseg-mni152-tissue-attention-fusion-segment"
runner = CliRunner()
pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    pytest.importorskip("tritonclient.http")
    try:
        install = find_tritonserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no tritonserver here ({exc})")
    repository = tmp_path_factory.mktemp("served") / "repo"
    export_triton(DEMO_BUNDLE, repository)
    options = ServerOptions(http_port=_port(), grpc_port=_port())
    with TritonServer(repository, [MODEL], options, install) as running:
        running.wait_ready(120)
        yield running


@pytest.fixture(scope="module")
def block() -> tuple[np.ndarray, np.ndarray]:
    from medseg.data.mni152 import mni152_volume

    t1, _, affine = mni152_volume()
    return np.ascontiguousarray(t1[None, :, :, 88:91], dtype=np.float32), affine


def test_http_and_grpc_give_the_local_mask_and_errors_do_not_stop_the_server(
    server: TritonServer, block: tuple[np.ndarray, np.ndarray]
) -> None:
    volume, affine = block
    with Segmenter.from_bundle(DEMO_BUNDLE) as local:
        expected = local.segment(volume, affine=affine).labels
    assert server.grpc_url is not None
    for url in (server.http_url, server.grpc_url):
        with RemoteSegmenter(url, MODEL) as remote:
            assert np.array_equal(remote.segment(volume, affine), expected), url
            with pytest.raises(DatasetError, match="has 2 channel"):
                remote.segment(np.repeat(volume, 2, axis=0), affine)
            with pytest.raises(DatasetError, match=r"nifti: (corrupt )?gzip"):
                remote.segment_nifti(b"\x1f\x8b\x08\x00broken")
            assert np.array_equal(remote.segment(volume, affine), expected), url
    with (
        RemoteSegmenter(server.http_url, "no-such-model") as remote,
        pytest.raises((ConfigError, ServerError), match="no-such-model"),
    ):
        remote.segment(volume, affine)


def test_cli_infer_server_writes_the_same_nifti_and_dicom_seg(
    server: TritonServer, block: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    pytest.importorskip("highdicom")
    from medseg.runtime.io.dicom_write import write_dicom_series

    volume, affine = block
    series = write_dicom_series(volume[0], affine, tmp_path / "dicom", modality="MR")
    nifti = save_nifti(tmp_path / "scan.nii.gz", volume[0], affine)
    for name, source in (("dicom", series), ("nifti", nifti)):
        outputs = {}
        for where, extra in (("local", []), ("server", ["--server", server.http_url])):
            out = tmp_path / f"{name}-{where}.nii.gz"
            args = ["infer", str(DEMO_BUNDLE), str(source), "--out", str(out), *extra]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
            outputs[where] = load_nifti(out)
        np.testing.assert_array_equal(outputs["server"].data, outputs["local"].data)
        np.testing.assert_allclose(outputs["server"].affine, outputs["local"].affine)
    import highdicom as hd

    local = hd.seg.segread(tmp_path / "dicom-local.seg.dcm")
    remote = hd.seg.segread(tmp_path / "dicom-server.seg.dcm")
    np.testing.assert_array_equal(local.pixel_array, remote.pixel_array)
    labels = [remote.get_segment_description(n).segment_label for n in remote.segment_numbers]
    assert labels == ["CSF", "GM", "WM"]


def test_medseg_serve_prints_the_url_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    try:
        find_tritonserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no tritonserver here ({exc})")
    port = _port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[3] / "src"), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, "-m", "medseg", "serve", str(DEMO_BUNDLE), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--http-only"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        lines = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving" in line or not line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}" in output and "grpc://" not in output, output
        assert "skipping" in output and "no onnxruntime backend" in output
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "tritonserver stopped (exit code 0)" in rest
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.xfail(
    reason="not yet reliable: in the clean-clone CI run of 2026-12-07 (2 pytest workers) the "
    "request after an abandoned one took as long as a full one (18.96 s vs 18.72 s); "
    "cancellation between window batches is not proven under load",
    strict=False,
)
def test_a_request_whose_client_gave_up_is_abandoned(server: TritonServer) -> None:
    """Issue 22, 27: a gRPC client whose deadline passes cancels its request; the segmenter
    checks ``request.is_cancelled()`` before it starts and after every batch and stops, so the
    next request does not wait for a volume nobody will read (one model instance here)."""
    from medseg.data.mni152 import mni152_volume

    t1, _, affine = mni152_volume()
    volume = np.ascontiguousarray(t1[None, :, :, 50:130], dtype=np.float32)  # 80 slices
    block = np.ascontiguousarray(volume[:, :, :, :2])
    assert server.grpc_url is not None
    with RemoteSegmenter(server.grpc_url, MODEL) as patient:
        started = time.perf_counter()
        patient.segment(volume, affine)
        full_s = time.perf_counter() - started
        with (
            RemoteSegmenter(server.grpc_url, MODEL, timeout_s=0.5) as impatient,
            pytest.raises(ServerError, match=r"(?i)deadline"),
        ):
            impatient.segment(volume, affine)
        started = time.perf_counter()
        assert patient.segment(block, affine).shape == block.shape[1:]
        next_s = time.perf_counter() - started
    # without cancellation the block waits for the abandoned volume (about full_s)
    assert next_s < full_s / 3, (next_s, full_s)
