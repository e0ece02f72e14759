"""Triton backend: the network runs on an NVIDIA Triton server, the rest of the runtime here.

A raw-logits model of a repository written by ``medseg export-triton``
(``<name>-<precision>-onnx``, ``<name>-<precision>-trt-<device>``) takes network-size slices
``(N, C, H, W)`` and returns logits ``(N, K, H, W)``: the same contract as every backend, so
:class:`medseg.runtime.Segmenter` runs unchanged against a server (preprocessing, sliding
window, resampling and post-processing stay on the client). Input and output names and shapes
come from the server's model metadata and are checked against the manifest when the backend
loads; the server's ``max_batch_size`` splits larger batches; the model's
``medseg_manifest_sha256`` parameter must match the client's manifest when one is given.

:class:`TritonClient` is the connection (HTTP or gRPC, errors as one-line medseg errors) that
this backend and :class:`medseg.deploy.remote.RemoteSegmenter` share. ``tritonclient`` is
imported when a client is made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import InputSpec
from medseg.errors import (
    BackendError,
    ConfigError,
    DatasetError,
    MissingDependencyError,
    ServerError,
)
from medseg.runtime.backends.base import Backend, ModelIO, _missing

__all__ = ["TritonBackend", "TritonClient", "parse_server_url"]

_SCHEMES = ("http", "grpc")
#: A tensor shape as the server declares it (``None``: a variable dimension).
Shape = tuple[int | str | None, ...]
#: Triton's name of the datatype the backend sends.
_FP32 = "FP32"


def parse_server_url(url: str) -> tuple[str, str]:
    """``"grpc://host:8001"`` -> ``("grpc", "host:8001")``; no scheme means HTTP.

    Raises:
        ConfigError: another scheme, or no port.
    """
    from urllib.parse import urlsplit

    scheme, sep, address = url.partition("://")
    if not sep:
        scheme, address = "http", url
    address = address.rstrip("/")
    if scheme not in _SCHEMES:
        raise ConfigError(f"--server {url}: scheme {scheme}:// is not one of http://, grpc://")
    expected = "expected http://HOST:PORT or grpc://HOST:PORT (e.g. http://127.0.0.1:8000)"
    try:
        parts = urlsplit(f"{scheme}://{address}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ConfigError(f"--server {url}: {exc}; {expected}") from None
    if not host or port is None or parts.path or parts.query or parts.fragment:
        raise ConfigError(f"--server {url}: {expected}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--server {url}: port {port} is not in 1..65535; {expected}")
    return scheme, address


def _quiet_gevent_interrupts() -> None:
    """Ctrl-C during an HTTP request: let it propagate without gevent's printout.

    The HTTP client runs on gevent, whose hub prints a ``KeyboardInterrupt`` raised in its loop
    (with a timestamp line) before passing it on; the CLI then says "interrupted" once. The
    hub's own ``NOT_ERROR`` setting (on this thread's hub instance) stops the printout only.
    """
    try:
        import gevent
    except ImportError:
        return
    hub = gevent.get_hub()
    if not issubclass(KeyboardInterrupt, hub.NOT_ERROR):
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


class TritonClient:
    """A connection to one model of a Triton server (``tritonclient.http`` or ``.grpc``).

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        model: the model name.
        timeout_s: how long one request may take (a whole volume on CPU takes seconds).

    Raises:
        ConfigError: a URL :func:`parse_server_url` refuses.
        MissingDependencyError: tritonclient (for this protocol) is not installed.
    """

    def __init__(self, url: str, model: str, timeout_s: float = 600.0) -> None:
        self.url, self.model = url, model
        self.protocol, address = parse_server_url(url)
        try:
            if self.protocol == "http":
                import tritonclient.http as client_module
            else:
                import tritonclient.grpc as client_module
        except ImportError as exc:
            raise MissingDependencyError(
                f"--server needs tritonclient ({exc}): pip install 'medseg-edge[serve]'"
            ) from None
        self.module: Any = client_module
        self.timeout_s = timeout_s
        if self.protocol == "http":
            self._client: Any = client_module.InferenceServerClient(
                address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            _quiet_gevent_interrupts()
        else:
            self._client = client_module.InferenceServerClient(address)

    def _fail(self, exc: BaseException) -> Exception:
        """A one-line medseg error for a failed call (DatasetError when the input was refused)."""
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            status = str(exc.status() or "")
            message = exc.message() or str(exc)
            if status in ("400", "StatusCode.INVALID_ARGUMENT"):
                return DatasetError(f"server {self.url} refused the input: {message}")
            if "unknown model" in message or "is not found" in message:
                return ConfigError(
                    f"server {self.url} has no model {self.model!r} ready ({message}); "
                    "serve the repository with medseg serve or name the model with --model"
                )
            return ServerError(f"server {self.url}, model {self.model}: {message}")
        if type(exc).__name__ == "HTTPParseError":  # e.g. the gRPC port given to http://
            return ServerError(
                f"server {self.url} does not answer in HTTP ({exc}); is that the gRPC port? "
                "pass grpc://HOST:PORT for it, or the HTTP port (medseg serve's --port)"
            )
        return ServerError(
            f"server {self.url} is unreachable or went away during the request "
            f"({type(exc).__name__}: {exc}); is it running (medseg serve)?"
        )

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)``, its failures as one-line medseg errors."""
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, method)(*args, **kwargs)
        except (InferenceServerException, OSError, ConnectionError) as exc:
            raise self._fail(exc) from None
        except Exception as exc:  # gevent / grpc transport errors have no common base
            module = type(exc).__module__.split(".")[0]
            if module in ("gevent", "geventhttpclient", "grpc", "_parser"):
                raise self._fail(exc) from None
            raise

    def parameters(self) -> dict[str, str]:
        """The model's ``config.pbtxt`` parameters, as the server reports them."""
        config = self.call("get_model_config", self.model)
        if self.protocol == "grpc":
            params = config.config.parameters
            return {k: v.string_value for k, v in params.items()}
        return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}

    def max_batch_size(self) -> int:
        """The model's ``max_batch_size`` (0: the model does not batch)."""
        config = self.call("get_model_config", self.model)
        if self.protocol == "grpc":
            return int(config.config.max_batch_size)
        return int(config.get("max_batch_size") or 0)

    def metadata(self) -> tuple[dict[str, Shape], dict[str, Shape]]:
        """The model's inputs and outputs (name -> shape, ``None`` for a variable dimension),
        from the server's model metadata (batching models list the batch dimension as -1)."""
        meta = self.call("get_model_metadata", self.model)

        def shapes(tensors: Any) -> dict[str, Shape]:
            found: dict[str, Shape] = {}
            for tensor in tensors:
                name, shape = (
                    (tensor["name"], tensor["shape"])
                    if isinstance(tensor, dict)
                    else (tensor.name, tensor.shape)
                )
                found[str(name)] = tuple(None if int(d) < 0 else int(d) for d in shape)
            return found

        if self.protocol == "grpc":
            return shapes(meta.inputs), shapes(meta.outputs)
        return shapes(meta.get("inputs", [])), shapes(meta.get("outputs", []))

    def check_manifest(self, sha256: str, where: str | Path) -> None:
        """Refuse a server model exported from another manifest than ``where`` (sha256)."""
        served = self.parameters().get("medseg_manifest_sha256", "")
        if served != sha256:
            raise ConfigError(
                f"server {self.url} model {self.model} was exported from another bundle than "
                f"{where} (manifest sha256 {served[:12] or 'none'}... vs {sha256[:12]}...); "
                "serve this bundle (medseg serve BUNDLE) or name the bundle the server runs"
            )

    def infer(
        self, tensors: list[tuple[str, np.ndarray, str]], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """One request: ``(name, array, Triton datatype)`` inputs; the ``outputs`` by name.

        Raises:
            ServerError: the response lacks an output asked for.
        """
        inputs = []
        for name, array, dtype in tensors:
            tensor = self.module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        wanted = [self.module.InferRequestedOutput(name) for name in outputs]
        kwargs: dict[str, Any] = {"outputs": wanted}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self.call("infer", self.model, inputs, **kwargs)
        found = {}
        for name in outputs:
            value = result.as_numpy(name)
            if value is None:
                raise ServerError(f"server {self.url}: the response has no {name} output")
            found[name] = value
        return found

    def close(self) -> None:
        self._client.close()


class TritonBackend(Backend):
    """Runs the network on a Triton server: ``(N, C, H, W)`` float32 in, logits out.

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        model: a raw-logits model of the server (``<name>-<precision>-onnx``...).
        input_spec, output_name, num_classes: from the bundle manifest (checked against the
            server's model metadata at :meth:`load`).
        manifest_sha256: the client's ``medseg.json`` sha256; when given, the served model's
            ``medseg_manifest_sha256`` must equal it.
        manifest_path: that ``medseg.json``, for the message.
        timeout_s: how long one request may take.
    """

    name = "triton"

    def __init__(
        self,
        url: str,
        model: str,
        input_spec: InputSpec,
        output_name: str,
        num_classes: int,
        *,
        manifest_sha256: str | None = None,
        manifest_path: str | Path = "medseg.json",
        timeout_s: float = 600.0,
    ) -> None:
        super().__init__(input_spec, output_name, num_classes)
        parse_server_url(url)  # a bad URL is refused before anything connects
        self.url, self.model = url, model
        self.manifest_sha256, self.manifest_path = manifest_sha256, manifest_path
        self.timeout_s = timeout_s
        self.client: TritonClient | None = None
        self.max_batch = 0
        self._io: ModelIO | None = None

    @classmethod
    def available(cls) -> str | None:
        return _missing("tritonclient", "serve")

    def describe(self) -> str:
        return f"triton ({self.url}, model {self.model})"

    def _load_impl(self) -> None:
        client = TritonClient(self.url, self.model, self.timeout_s)
        try:
            if self.manifest_sha256 is not None:
                client.check_manifest(self.manifest_sha256, self.manifest_path)
            inputs, outputs = client.metadata()
            self.max_batch = client.max_batch_size()
        except BaseException:
            client.close()
            raise
        self.client = client
        self._io = ModelIO(f"server {self.url} model {self.model}", inputs, outputs)

    def _model_io(self) -> ModelIO:
        if self._io is None:
            raise BackendError(f"{self.describe()}: not loaded")
        return self._io

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        if self.client is None:
            raise BackendError(f"{self.describe()}: not loaded")
        step = self.max_batch if self.max_batch > 0 else len(batch)
        start = time.perf_counter_ns()
        parts = [
            self.client.infer(
                [(self.input_spec.name, batch[i : i + step], _FP32)], [self.output_name]
            )[self.output_name]
            for i in range(0, len(batch), step)
        ]
        compute_ms = (time.perf_counter_ns() - start) / 1e6
        logits = np.concatenate(parts).astype(np.float32, copy=False)
        return logits, compute_ms

    def _close_impl(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self._io = None
