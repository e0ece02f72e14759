"""``medseg serve``: a local NVIDIA Triton server on a bundle or a model repository."""

from __future__ import annotations

import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

import typer

from medseg.cli.common import DEBUG_OPTION, console, guard_outputs, handle_errors
from medseg.outputs import Input, Output

__all__ = ["serve"]


class _Stop(BaseException):
    """SIGTERM: stop like Ctrl-C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def serve(
    path: Path = typer.Argument(
        ..., help="A bundle (medseg export output) or a model repository (medseg export-triton)."
    ),
    port: int = typer.Option(8000, "--port", help="HTTP port (gRPC: --grpc-port, default +1)."),
    grpc_port: int | None = typer.Option(None, "--grpc-port", help="gRPC port (default port+1)."),
    http_only: bool = typer.Option(False, "--http-only", help="Do not start the gRPC endpoint."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (loopback; 0.0.0.0 exposes it)."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="A bundle's segmenter precision: fp32 (default) | fp16 | int8."
    ),
    max_voxels: int | None = typer.Option(
        None, "--max-voxels", help="A bundle's segmenter cap on voxels per request."
    ),
    log: Path | None = typer.Option(
        None, "--log", help="Write the server's log here (default: a temporary file)."
    ),
    ready_timeout: float = typer.Option(
        120.0, "--ready-timeout", help="Seconds to wait for the models to load."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Serve a bundle or a Triton model repository with a local tritonserver until stopped.

    A bundle is exported first (medseg export-triton, into a temporary folder). The server
    loads the models its backends can run (the pytriton wheel's tritonserver has the Python
    backend only: the end-to-end segmenter medseg-<name>-segment), binds 127.0.0.1 unless
    --host says otherwise, prints its URLs, and stops cleanly on Ctrl-C or SIGTERM.

    Examples:
        medseg serve models/mni152-tissue/bundle
        medseg serve model_repository --port 9000 --http-only
        medseg infer bundle scan.nii.gz --out mask.nii.gz --server http://127.0.0.1:8000
    """
    with handle_errors(debug):
        guard_outputs([Output("--log", log, "log", "append")], [Input("PATH", path)])
        from medseg.deploy.server import (
            ServerOptions,
            TritonServer,
            check_serve_options,
            find_tritonserver,
        )
        from medseg.deploy.serving import plan_serving

        options = ServerOptions(host=host, http_port=port, grpc_port=grpc_port, http_only=http_only)
        check_serve_options(ready_timeout, log)
        install = find_tritonserver()
        work = Path(tempfile.mkdtemp(prefix="medseg-serve-"))
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        server = None
        try:
            plan = plan_serving(path, work, install, precision=precision, max_voxels=max_voxels)
            for name, reason in plan.skipped:
                console.print(f"skipping {name}: {reason}", highlight=False, soft_wrap=True)
            server = TritonServer(plan.repository, plan.models, options, install, log_path=log)
            console.print(
                f"starting {install.binary} on {plan.repository} (log: {server.log_path})",
                highlight=False,
                soft_wrap=True,
            )
            server.start()
            seconds = server.wait_ready(ready_timeout)
            urls = ", ".join(u for u in (server.http_url, server.grpc_url) if u)
            console.print(
                f"[green]✓[/] serving {', '.join(plan.models)} at {urls} "
                f"(ready in {seconds:.1f} s)",
                highlight=False,
                soft_wrap=True,
            )
            bundle = shlex.quote(str(plan.exported_from or path))
            console.print(
                f"next: medseg infer {bundle} scan.nii.gz --out mask.nii.gz --server "
                f"{server.http_url}   (Ctrl-C or SIGTERM stops the server)",
                highlight=False,
                soft_wrap=True,
            )
            _wait(server)
        except (KeyboardInterrupt, _Stop):
            console.print("stopping tritonserver", highlight=False)
        finally:
            signal.signal(signal.SIGTERM, previous)
            code = server.stop() if server is not None else None
            if server is not None:
                server.cleanup()
            shutil.rmtree(work, ignore_errors=True)
        console.print(f"tritonserver stopped (exit code {code})", highlight=False)


def _wait(server: object) -> None:
    from medseg.deploy.server import TritonServer
    from medseg.errors import ServerError

    assert isinstance(server, TritonServer) and server.process is not None
    while server.process.poll() is None:
        time.sleep(0.5)
    raise ServerError(
        f"tritonserver exited unexpectedly with code {server.process.returncode}: "
        f"{server.log_tail(3)}"
    )
