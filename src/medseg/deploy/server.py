"""Run a local NVIDIA Triton Inference Server on a medseg model repository.

The binary comes from the ``serve`` extra: the ``nvidia-pytriton`` wheel carries a real
``tritonserver`` with the Python backend (``pytriton/tritonserver/``, its libraries in
``nvidia_pytriton.libs/``, one backend stub per Python version); inside NVIDIA's Triton image,
``tritonserver`` on ``PATH`` is used instead. pytriton's own Python code is never imported
(it pins numpy < 2).

The Python backend's stub embeds the interpreter found as ``python3`` on ``PATH`` (and ignores
``PYTHONPATH``); the server gets this interpreter's folder first on ``PATH`` and this
``medseg``'s folder in ``MEDSEG_SOURCE`` (the segment model's ``model.py`` puts it first on
``sys.path``), so the segmenter runs the same medseg, numpy 2 and ONNX Runtime as the CLI.
Tensors cross the stub by DLPack (see :mod:`medseg.deploy.triton_model`).

    with TritonServer(repository, ["medseg-x-segment"], ServerOptions(http_port=8000)) as s:
        s.wait_ready()
        print(s.http_url)
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from medseg.errors import ConfigError, MissingDependencyError, ServerError

__all__ = [
    "ServerOptions",
    "TritonInstall",
    "TritonServer",
    "check_serve_options",
    "find_tritonserver",
]

_INSTALL_HINT = (
    "install the serve extra: pip install 'medseg-edge[serve]' and "
    "pip install --no-deps nvidia-pytriton==0.7.0 (make serve-install does both), or run "
    "inside NVIDIA's Triton image (tritonserver on PATH)"
)


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens.

    Attributes:
        host: the address HTTP and gRPC bind to; loopback by default (``0.0.0.0`` exposes
            the server to the network: put it behind the hospital's access control).
        http_port: HTTP/REST port.
        grpc_port: gRPC port (default ``http_port + 1``); unused with ``http_only``.
        http_only: do not start the gRPC endpoint.
        log_verbose: Triton's ``--log-verbose`` level.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = None
    http_only: bool = False
    log_verbose: int = 0

    def __post_init__(self) -> None:
        for name, port in (("--port", self.http_port), ("--grpc-port", self.grpc)):
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name} must be 1..65535, got {port}")
        if not self.http_only and self.grpc == self.http_port:
            raise ConfigError(f"--grpc-port {self.grpc} is the HTTP port; choose another")
        if not self.host:
            raise ConfigError("--host must not be empty; 127.0.0.1 is loopback only")
        _check_host(self.host)

    @property
    def grpc(self) -> int:
        return self.http_port + 1 if self.grpc_port is None else self.grpc_port


def _check_host(host: str) -> None:
    """Refuse an address tritonserver could not bind: a malformed IP, an unknown name."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host) or ":" in host:
        raise ConfigError(
            f"--host {host} is not a valid IP address; expected e.g. 127.0.0.1 (loopback), "
            "0.0.0.0 (every interface) or ::1"
        )
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"--host {host} does not resolve ({exc}); expected an IP address such as "
            "127.0.0.1 or a host name of this machine"
        ) from None


def check_serve_options(ready_timeout: float, log: Path | None) -> None:
    """Refuse a ``--ready-timeout`` that is not a positive number of seconds and a ``--log``
    that is a folder or lies in a missing one (before anything starts)."""
    import math

    if not (math.isfinite(ready_timeout) and ready_timeout > 0):
        raise ConfigError(
            f"--ready-timeout {ready_timeout} must be a positive number of seconds (e.g. 120)"
        )
    if log is not None:
        if log.is_dir():
            raise ConfigError(f"--log {log} is a folder; expected a file path for the log")
        if not log.parent.is_dir():
            raise ConfigError(f"--log {log}: its folder {log.parent} does not exist")


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and what it needs.

    Attributes:
        binary: the executable.
        libs: a folder to put on ``LD_LIBRARY_PATH`` (the wheel's), or ``None``.
        python_backend: the wheel's ``backends/python`` folder, or ``None`` (the image's
            default backend directory is used).
        stub: the wheel's Python backend stub for this Python version, or ``None``.
    """

    binary: Path
    libs: Path | None = None
    python_backend: Path | None = None
    stub: Path | None = None


def find_tritonserver() -> TritonInstall:
    """The pytriton wheel's ``tritonserver``, else ``tritonserver`` on ``PATH``.

    Raises:
        MissingDependencyError: neither is there, or the wheel has no stub for this Python.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        binary = root / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = root / "tritonserver" / "python_backend_stubs" / version
            stub = stub / "triton_python_backend_stub"
            if not stub.is_file():
                raise MissingDependencyError(
                    f"{stub}: nvidia-pytriton has no Python backend stub for Python {version}"
                )
            return TritonInstall(
                binary=binary,
                libs=root.parent / "nvidia_pytriton.libs",
                python_backend=root / "tritonserver" / "backends" / "python",
                stub=stub,
            )
    found = shutil.which("tritonserver")
    if found:
        return TritonInstall(binary=Path(found))
    raise MissingDependencyError(f"no tritonserver found: {_INSTALL_HINT}")


class TritonServer:
    """A ``tritonserver`` process serving ``models`` of ``repository``; a context manager.

    Args:
        repository: the model repository.
        models: the models to load (explicit model control: only these).
        options: addresses and ports.
        install: the binary (default :func:`find_tritonserver`).
        log_path: where the server's output goes (default: a file in a temporary folder,
            removed by :meth:`stop`).
    """

    def __init__(
        self,
        repository: Path,
        models: Sequence[str],
        options: ServerOptions | None = None,
        install: TritonInstall | None = None,
        log_path: Path | None = None,
    ) -> None:
        if not models:
            raise ConfigError(f"{repository}: no model to serve")
        self.repository = Path(repository).resolve()
        self.models = list(models)
        self.options = options or ServerOptions()
        self.install = install or find_tritonserver()
        self._work = Path(tempfile.mkdtemp(prefix="medseg-triton-"))
        self.log_path = log_path or self._work / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str | None:
        return None if self.options.http_only else f"grpc://{self.options.host}:{self.options.grpc}"

    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        o = self.options
        cmd = [str(self.install.binary), f"--model-repository={self.repository}"]
        if self.install.python_backend is not None:
            cmd.append(f"--backend-directory={self._work / 'backends'}")
        cmd += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        cmd += [f"--http-address={o.host}", f"--http-port={o.http_port}"]
        if o.http_only:
            cmd.append("--allow-grpc=false")
        else:
            cmd += [f"--grpc-address={o.host}", f"--grpc-port={o.grpc}"]
        cmd += ["--allow-metrics=false", "--exit-on-error=true", "--strict-readiness=true"]
        return [*cmd, f"--log-verbose={o.log_verbose}", "--exit-timeout-secs=10"]

    def environment(self) -> dict[str, str]:
        """This Python first on ``PATH`` (the stub's interpreter), this medseg in MEDSEG_SOURCE."""
        import medseg

        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["MEDSEG_SOURCE"] = str(Path(medseg.__file__).resolve().parents[1])
        if self.install.libs is not None:
            libs = [str(self.install.libs), env.get("LD_LIBRARY_PATH", "")]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        return env

    def _prepare_backends(self) -> None:
        source, stub = self.install.python_backend, self.install.stub
        if source is None or stub is None:
            return
        target = self._work / "backends" / "python"
        if (target / "triton_python_backend_stub").is_file():
            return  # a restart: prepared already (a stub still exiting keeps the file busy)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copyfile(source / name, target / name)
        shutil.copy(stub, target / "triton_python_backend_stub")

    def start(self) -> TritonServer:
        """Start the process (see :meth:`wait_ready`); again after :meth:`stop` or :meth:`kill`."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError("this server is already running")
        self._prepare_backends()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # Ctrl-C reaches us; we stop the server ourselves
            )
        return self

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _load_error(self) -> str:
        """The first model-load error in the log, or its last lines."""
        for line in self.log_tail().splitlines():
            if "failed to load" in line or "Error" in line or "error:" in line:
                return line.strip()
        return self.log_tail(5).replace("\n", " | ")

    def is_ready(self) -> bool:
        """``GET /v2/health/ready`` answers 200."""
        url = f"http://{self.options.host}:{self.options.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Wait until the server and its models are ready; seconds it took.

        Raises:
            ServerError: the process exited (a model failed to load: the log's line is in
                the message) or it was not ready within ``timeout_s``.
        """
        if self.process is None:
            self.start()
        assert self.process is not None
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} before it was "
                    f"ready: {self._load_error()}"
                )
            if self.is_ready():
                return time.perf_counter() - started
            time.sleep(0.2)
        self.stop()
        raise ServerError(
            f"tritonserver was not ready after {timeout_s:.0f} s: {self._load_error()}"
        )

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the server (SIGKILL after ``timeout_s``); its exit code. Idempotent."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            code = self.process.returncode
        return code

    def kill(self) -> None:
        """SIGKILL the server now (a crash, for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cleanup(self) -> None:
        """Stop the server and remove its temporary folder."""
        self.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
