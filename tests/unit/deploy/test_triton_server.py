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


def _model_requests(grpc_url: str, model: str) -> tuple[int, float]:
    """(requests the model answered, seconds they spent in it), from Triton's statistics.

    The Python backend counts a request it answered with an error (a cancelled one
    included) as a success of the execution; one cancelled before it reached the model is
    not counted."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url.split("://", 1)[1])
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    kinds = [stats["inference_stats"].get(k, {}) for k in ("success", "fail")]
    return sum(int(k.get("count", 0)) for k in kinds), sum(int(k.get("ns", 0)) for k in kinds) / 1e9


def _settled_model_requests(grpc_url: str, model: str, quiet_s: float = 1.0) -> tuple[int, float]:
    """``_model_requests`` once the figures have not moved for ``quiet_s`` seconds (at most
    15 s): Triton records a request's statistics after its response has gone, so a read
    straight after a reply can miss that very request (CI once counted it one read late)."""
    last = _model_requests(grpc_url, model)
    still_since = time.monotonic()
    give_up = still_since + 15.0
    while time.monotonic() < give_up and time.monotonic() - still_since < quiet_s:
        time.sleep(0.1)
        now = _model_requests(grpc_url, model)
        if now != last:
            last, still_since = now, time.monotonic()
    return last


def test_a_request_whose_client_gave_up_is_abandoned(server: TritonServer) -> None:
    """Issue 22, 27: a gRPC client whose deadline passes cancels its request; the segmenter
    asks ``request.is_cancelled()`` after every call of the network (8 slices here) and stops,
    so the next request does not wait for a volume nobody will read (one model instance).

    Bars in batches of 8 slices, timed on this server just before (the whole brain is 24 of
    them): the client gives up after one batch's time (so the request is in the model, not
    still on the wire); the model may run on for 3 more batches (the one under way, the
    cancellation's round trip, load from parallel work) and the next request waits for
    that plus its own batch."""
    from medseg.data.mni152 import mni152_volume

    t1, _, affine = mni152_volume()
    brain = np.ascontiguousarray(t1[None], dtype=np.float32)  # 189 axial slices
    one_batch = np.ascontiguousarray(brain[:, :, :, 90:98])
    assert server.grpc_url is not None
    with RemoteSegmenter(server.grpc_url, MODEL, timeout_s=120) as patient:
        patient.segment(one_batch[..., :1], affine)  # warm-up
        started = time.perf_counter()
        patient.segment(one_batch, affine)
        batch_s = time.perf_counter() - started
        deadline_s = max(batch_s, 2.0)
        before, before_s = _settled_model_requests(server.grpc_url, MODEL)
        with (
            RemoteSegmenter(server.grpc_url, MODEL, timeout_s=deadline_s) as impatient,
            pytest.raises(ServerError, match=r"(?i)deadline"),
        ):
            impatient.segment(brain, affine)
        started = time.perf_counter()
        assert patient.segment(one_batch, affine).shape == one_batch.shape[1:]
        next_s = time.perf_counter() - started
    count, seconds = _settled_model_requests(server.grpc_url, MODEL)
    abandoned_s = seconds - before_s - next_s  # next_s bounds the next one's time in the model
    figures = (
        f"batch {batch_s:.2f} s, deadline {deadline_s:.2f} s, abandoned {abandoned_s:.2f} s in "
        f"the model, next request {next_s:.2f} s"
    )
    assert count == before + 2, f"the abandoned request never reached the model; {figures}"
    assert abandoned_s < deadline_s + 3 * batch_s, figures
    # without cancellation the next one would wait for the other 20-odd batches
    assert next_s < deadline_s + 4 * batch_s, figures


def _interrupt_infer_server(url: str, scan: Path, out: Path) -> tuple[int, str]:
    """``medseg infer --server url`` in a subprocess, SIGINT once its request is on the
    server; (exit code, everything it printed). Every wait has a timeout."""
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading

    src = str(Path(__file__).resolve().parents[3] / "src")
    # unbuffered: the "Triton" line must arrive when printed, not with the rest at the end
    env = {**os.environ, "PYTHONPATH": src, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "medseg", "infer", str(DEMO_BUNDLE), str(scan)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--server", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("Triton" in line for line in printed):
            assert proc.poll() is None, "".join(printed)
            assert time.monotonic() < deadline, "".join(printed)
            try:
                printed.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        time.sleep(0.5)  # the volume is on the wire or in the model
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    while not lines.empty():
        printed.append(lines.get())
    return int(proc.returncode), "".join(printed)


def test_ctrl_c_during_infer_server_prints_one_line_and_exits_130(
    server: TritonServer, tmp_path: Path
) -> None:
    """Issue 22, 28: SIGINT during ``medseg infer --server`` (HTTP and gRPC): no bare
    ``KeyboardInterrupt``, no gevent timestamp line, no traceback; just "interrupted", 130."""
    from medseg.data.mni152 import mni152_volume

    t1, _, affine = mni152_volume()
    # 16 slices (2 batches): seconds on the server; an HTTP request runs on after its client
    # is gone (Triton cannot cancel it), so the server stops up to 10 s later at teardown
    scan = save_nifti(tmp_path / "brain.nii.gz", t1[:, :, 82:98].astype(np.float32), affine)
    assert server.grpc_url is not None
    for url in (server.http_url, server.grpc_url):
        out = tmp_path / f"mask-{url.split(':')[0]}.nii.gz"
        code, output = _interrupt_infer_server(url, scan, out)
        assert code == 130, output
        lines = output.splitlines()
        after = lines[next(i for i, line in enumerate(lines) if "Triton" in line) + 1 :]
        assert [line for line in after if line.strip()] == ["interrupted"], output
        assert not out.exists(), output
