"""`make triton-smoke`: the demo bundle served by a real Triton server, end to end, on loopback.

1. export the committed demo bundle as a model repository (cap: --max-voxels), start the
   pytriton wheel's tritonserver on 127.0.0.1, wait for readiness;
2. segment the demo brain (MNI152, 197x233x189) with `medseg infer` locally, and with
   `medseg infer --server` over HTTP and over gRPC: the three masks must be identical;
3. bad requests (wrong channel count, a NaN voxel, corrupt NIfTI bytes, a volume above the
   cap) get error responses naming the problem, and the next request is served;
4. a bounded load run: --requests requests from --clients concurrent clients (a block of
   --block-slices axial slices of the brain, so the run fits CI's time), zero errors, every
   mask identical to local inference; p50 / p95 latency and throughput printed;
5. a gRPC client gives up (deadline: one batch's time, at least 2 s) on the whole brain: the
   segmenter abandons the request within 4 batches of 8 slices, not the 24 of the brain
   (Triton request cancellation, polled after every network call; the log names it);
5b. the server is killed (SIGKILL) during a request: the client gets a clear error; restarted,
   it serves again;
6. a repository whose bundle copy no longer matches its sha256 is refused at load, with the
   rebuild command.

The server is stopped whatever happens (finally + SIGTERM/SIGINT handlers). Exit 0 when every
check passed, 1 otherwise; the figures go to --out (JSON). One brain only: the load figures
are of this machine and this block size, not a benchmark of Triton.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from medseg.data.nifti import load_nifti  # noqa: E402
from medseg.deploy import export_triton  # noqa: E402
from medseg.deploy.remote import RemoteSegmenter  # noqa: E402
from medseg.deploy.server import ServerOptions, TritonServer, find_tritonserver  # noqa: E402
from medseg.deploy.serving import plan_serving  # noqa: E402
from medseg.errors import ConfigError, DatasetError, MedsegError, ServerError  # noqa: E402
from medseg.outputs import write_marker  # noqa: E402
from medseg.runtime import Segmenter, load_scan  # noqa: E402


class Failed(Exception):
    """A smoke check failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(ok: bool, what: str, results: dict[str, Any]) -> None:
    results.setdefault("checks", []).append({"check": what, "passed": bool(ok)})
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        raise Failed(what)


def _medseg(*args: str) -> None:
    cmd = [sys.executable, "-m", "medseg", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise Failed(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-400:]}")


def _expect_refusal(remote: RemoteSegmenter, call: Any, words: str) -> str:
    try:
        call(remote)
    except DatasetError as exc:
        return str(exc) if words in str(exc) else f"WRONG MESSAGE: {exc}"
    return "NOT REFUSED"


def bad_requests(
    remote: RemoteSegmenter,
    block: np.ndarray,
    affine: np.ndarray,
    cap: int,
    expected: np.ndarray,
    results: dict[str, Any],
) -> None:
    side = int(np.ceil((cap + 1) ** (1 / 3))) + 1
    nan = block.copy()
    nan[0, 10, 10, 0] = np.nan
    cases = [
        ("wrong channel count", lambda r: r.segment(np.repeat(block, 2, 0), affine), "channel"),
        ("a NaN voxel", lambda r: r.segment(nan, affine), "NaN"),
        ("corrupt NIfTI bytes", lambda r: r.segment_nifti(b"\x1f\x8b\x08\x00garbage"), "nifti"),
        ("truncated NIfTI", lambda r: r.segment_nifti(b"\x5c\x01" + bytes(200)), "nifti"),
        (
            "volume above the cap",
            lambda r: r.segment(np.zeros((1, side, side, side), np.float32)),
            "cap",
        ),
    ]
    for name, call, words in cases:
        message = _expect_refusal(remote, call, words)
        print(f"      {name}: {message}", flush=True)
        _check(not message.startswith(("WRONG", "NOT")), f"bad input refused: {name}", results)
        _check(
            np.array_equal(remote.segment(block, affine), expected),
            f"served the next request after: {name}",
            results,
        )


def load_run(
    url: str,
    model: str,
    block: np.ndarray,
    affine: np.ndarray,
    expected: np.ndarray,
    requests: int,
    clients: int,
    deadline_s: float,
) -> dict[str, Any]:
    lock, latencies, errors = threading.Lock(), [], []
    counter = iter(range(requests))
    stop_at = time.perf_counter() + deadline_s

    def client(index: int) -> None:
        scheme = "grpc" if index % 2 else "http"
        target = url[scheme]
        with RemoteSegmenter(target, model, timeout_s=deadline_s) as remote:
            while time.perf_counter() < stop_at:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                t0 = time.perf_counter()
                try:
                    labels = remote.segment(block, affine)
                    if not np.array_equal(labels, expected):
                        raise Failed(f"request {n}: mask differs from local inference")
                except (MedsegError, Failed) as exc:
                    with lock:
                        errors.append(f"request {n} ({scheme}): {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {
        "requests": requests,
        "completed": len(latencies),
        "errors": len(errors),
        "error_messages": errors[:5],
        "clients": clients,
        "protocols": "half HTTP, half gRPC",
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2) if wall else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
        "max_ms": round(float(ms.max()), 1) if len(ms) else None,
        "deadline_s": deadline_s,
    }


def kill_during_request(
    server: TritonServer,
    url: str,
    model: str,
    volume: np.ndarray,
    affine: np.ndarray,
    results: dict[str, Any],
) -> None:
    outcome: dict[str, Any] = {}

    def call() -> None:
        with RemoteSegmenter(url, model, timeout_s=120) as remote:
            t0 = time.perf_counter()
            try:
                remote.segment(volume, affine)
                outcome["error"] = None
            except MedsegError as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)  # the whole brain takes seconds: the request is in flight
    server.kill()
    thread.join(60)
    error = outcome.get("error")
    print(f"      client after SIGKILL: {type(error).__name__}: {error}", flush=True)
    _check(
        isinstance(error, ServerError) and "went away" in str(error),
        "killed during a request: the client gets a clear ServerError",
        results,
    )


def _model_requests(grpc_url: str, model: str) -> tuple[int, int]:
    """(requests done, total ns spent on them) of ``model``, from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url.split("://", 1)[1])
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inference = stats["inference_stats"]
    kinds = ("success", "fail")
    return (
        sum(int(inference.get(k, {}).get("count", 0)) for k in kinds),
        sum(int(inference.get(k, {}).get("ns", 0)) for k in kinds),
    )


def abandoned_request_cancelled(
    grpc_url: str, model: str, volume: np.ndarray, affine: np.ndarray, results: dict[str, Any]
) -> None:
    """A gRPC client whose deadline passes: the segmenter stops within a few batches.

    The segmenter asks ``request.is_cancelled()`` after every call of the network (a batch
    of 8 slices for the demo bundle, 24 batches for the brain). Gate: the abandoned request
    spends less than its deadline plus 4 batches' time in the model (a batch's time is the
    whole brain's over HTTP divided by its batches), where running on it would take them all.
    """
    full = float(results.get("brain_grpc_s", 30.0))
    batches = -(-volume.shape[3] // 8)
    batch_s = full / batches
    deadline_s = max(2.0, batch_s)  # long enough for the 35 MB to reach the model
    count, spent = _model_requests(grpc_url, model)
    with RemoteSegmenter(grpc_url, model, timeout_s=deadline_s) as impatient:
        try:
            impatient.segment(volume, affine)
            gave_up = False
        except ServerError:
            gave_up = True
    _check(
        gave_up,
        f"a client with a {deadline_s:.1f} s deadline on the whole brain gets an error",
        results,
    )
    # Counted with its time once the model returns it (a cancelled request is counted as an
    # execution); one whose deadline passed before it reached the model is never counted.
    t0 = time.perf_counter()
    while _model_requests(grpc_url, model)[0] <= count and time.perf_counter() - t0 < 2 * full:
        time.sleep(0.2)
    done, ns = _model_requests(grpc_url, model)
    seconds = (ns - spent) / 1e9 if done > count else 0.0
    bar = deadline_s + 4 * batch_s
    results["cancelled_request_s"] = round(seconds, 2)
    results["cancelled_request_bar_s"] = round(bar, 2)
    results["cancelled_request_reached_model"] = done > count
    print(
        f"      the abandoned request spent {seconds:.2f} s in the model (deadline "
        f"{deadline_s:.1f} s; bar {bar:.1f} s; the whole brain: {full:.1f} s over gRPC)",
        flush=True,
    )
    _check(
        done > count and seconds < bar,
        "the abandoned request reached the model and stopped within 4 batches of its deadline",
        results,
    )


def tampered_refused(repository: Path, model: str, work: Path, results: dict[str, Any]) -> None:
    bad = work / "tampered"
    shutil.copytree(repository / model, bad / model)
    onnx = bad / model / "1" / "bundle" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    try:
        plan_serving(bad, work / "scratch", find_tritonserver())
        message = "NOT REFUSED"
    except ConfigError as exc:
        message = str(exc)
    print(f"      medseg serve: {message}", flush=True)
    _check("medseg export-triton" in message, "medseg serve refuses a tampered repository", results)
    options = ServerOptions(http_port=_free_port(), http_only=True)
    with TritonServer(bad, [model], options) as server:
        try:
            server.wait_ready(60)
            message = "LOADED"
        except ServerError as exc:
            message = str(exc)
    print(f"      tritonserver: {message[:300]}", flush=True)
    _check(
        "medseg export-triton" in message,
        "Triton refuses to load it, with the rebuild command",
        results,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/mni152-tissue/bundle")
    parser.add_argument("--data", type=Path, default=ROOT / "demo-output/ci-mni152")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output/triton-smoke")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--block-slices", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=300.0)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests (8, 2 clients); CI runs it in full"
    )
    parser.add_argument("--max-voxels", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.clients = 8, 2
    if args.requests < 1 or args.clients < 1 or args.block_slices < 1:
        parser.error("--requests, --clients and --block-slices must be >= 1")

    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    work = Path(tempfile.mkdtemp(prefix="medseg-triton-smoke-"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_marker(args.out, "bench-report", "benchmarks/triton_smoke.py")
    server: TritonServer | None = None

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t_start = time.perf_counter()
    try:
        if not (args.data / "imagesTr").is_dir():
            _medseg("data", "mni152", str(args.data), "--force")
        image = next((args.data / "imagesTr").glob("*_0000.nii.gz"))
        repository = work / "repository"
        # two single-threaded copies of the segmenter: concurrent requests use both cores
        models = export_triton(
            args.bundle,
            repository,
            max_voxels=args.max_voxels,
            segment_instances=args.instances,
            segment_threads=1 if args.instances > 1 else 0,
        )
        results["instances"] = args.instances
        model = next(m.name for m in models if m.platform == "python")
        install = find_tritonserver()
        plan = plan_serving(repository, work / "scratch", install)
        options = ServerOptions(http_port=_free_port(), grpc_port=_free_port())
        server = TritonServer(
            plan.repository, plan.models, options, install, log_path=args.out / "tritonserver.log"
        )
        server.start()
        ready = server.wait_ready(120)
        results["ready_s"] = round(ready, 2)
        url = {"http": server.http_url, "grpc": server.grpc_url or ""}
        print(f"tritonserver ready in {ready:.1f} s at {url['http']} and {url['grpc']}", flush=True)

        masks = {}
        for name, extra in (
            ("local", []),
            ("http", ["--server", url["http"]]),
            ("grpc", ["--server", url["grpc"]]),
        ):
            t0 = time.perf_counter()
            mask = args.out / f"brain-{name}.nii.gz"
            _medseg("infer", str(args.bundle), str(image), "--out", str(mask), "--force", *extra)
            results[f"brain_{name}_s"] = round(time.perf_counter() - t0, 2)
            masks[name] = load_nifti(mask)
            print(f"      medseg infer ({name}): {results[f'brain_{name}_s']} s", flush=True)
        for name in ("http", "grpc"):
            same = np.array_equal(masks[name].data, masks["local"].data) and np.allclose(
                masks[name].affine, masks["local"].affine
            )
            _check(same, f"demo brain over {name}: mask identical to local medseg infer", results)

        scan = load_scan([image])
        mid = scan.image.shape[3] // 2
        block = np.ascontiguousarray(scan.image[:, :, :, mid : mid + args.block_slices])
        with Segmenter.from_bundle(args.bundle) as local:
            expected = local.segment(block, affine=scan.affine).labels
        results["block_shape"] = list(block.shape)
        with RemoteSegmenter(url["http"], model) as remote:
            _check(
                np.array_equal(remote.segment(block, scan.affine), expected),
                "block over HTTP identical to local",
                results,
            )
            bad_requests(remote, block, scan.affine, args.max_voxels, expected, results)

        load = load_run(
            url, model, block, scan.affine, expected, args.requests, args.clients, args.deadline_s
        )
        results["load"] = load
        print(
            f"      load: {load['completed']}/{load['requests']} requests, {load['clients']} "
            f"clients, {load['errors']} errors, p50 {load['p50_ms']} ms, p95 "
            f"{load['p95_ms']} ms, {load['throughput_rps']} req/s, {load['wall_s']} s "
            f"(block {'x'.join(map(str, block.shape[1:]))})",
            flush=True,
        )
        for message in load["error_messages"]:
            print(f"      {message}", flush=True)
        _check(
            load["errors"] == 0 and load["completed"] == args.requests,
            f"load run: {args.requests} requests, {args.clients} clients, zero errors, "
            f"within {args.deadline_s:.0f} s",
            results,
        )

        abandoned_request_cancelled(url["grpc"], model, scan.image, scan.affine, results)
        kill_during_request(server, url["http"], model, scan.image, scan.affine, results)
        t0 = time.perf_counter()
        server.start()
        server.wait_ready(120)
        results["restart_s"] = round(time.perf_counter() - t0, 2)
        with RemoteSegmenter(url["grpc"], model) as remote:
            _check(
                np.array_equal(remote.segment(block, scan.affine), expected),
                f"restarted in {results['restart_s']} s: serves again",
                results,
            )
        server.cleanup()
        server = None
        tampered_refused(repository, model, work, results)
        results["passed"] = True
    except (Failed, MedsegError, OSError, KeyboardInterrupt) as exc:
        print(f"FAIL  {type(exc).__name__}: {exc}", flush=True)
        results["passed"] = False
        results["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        results["total_s"] = round(time.perf_counter() - t_start, 1)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"triton-smoke {'passed' if results['passed'] else 'FAILED'} in {results['total_s']} s; "
        f"figures: {args.out / 'results.json'}",
        flush=True,
    )
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
