"""Segment through a Triton server's ``medseg-<name>-segment`` model (HTTP or gRPC).

What ``medseg infer --server URL`` uses: the volume and its affine go to the server, which
runs :class:`medseg.runtime.Segmenter` on its copy of the bundle; the labels come back on the
input's grid. Before the first volume the client checks that the server's model was exported
from the bundle the client names (``medseg_manifest_sha256``), so the same bundle gives the
same mask locally and remotely.

    with RemoteSegmenter("http://127.0.0.1:8000", "medseg-x-segment") as remote:
        remote.check_manifest(sha256_of_medseg_json)
        labels = remote.segment(scan.image, scan.affine)
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from medseg.deploy.segment_service import INPUT_AFFINE, INPUT_NIFTI, INPUT_VOLUME, OUTPUT_LABELS
from medseg.errors import ConfigError, DatasetError, MissingDependencyError, ServerError

__all__ = ["RemoteSegmenter", "parse_server_url"]

_SCHEMES = ("http", "grpc")


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


class RemoteSegmenter:
    """A client of one segment model.

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        model: the model name (``medseg-<name>-segment``).
        timeout_s: how long one request may take (a whole volume on CPU takes seconds).
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
        self._module: Any = client_module
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

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
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
        config = self._call("get_model_config", self.model)
        if self.protocol == "grpc":
            params = config.config.parameters
            return {k: v.string_value for k, v in params.items()}
        return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}

    def check_manifest(self, sha256: str, where: str | Path) -> None:
        """Refuse a server model exported from another manifest than ``where`` (sha256)."""
        served = self.parameters().get("medseg_manifest_sha256", "")
        if served != sha256:
            raise ConfigError(
                f"server {self.url} model {self.model} was exported from another bundle than "
                f"{where} (manifest sha256 {served[:12] or 'none'}... vs {sha256[:12]}...); "
                "serve this bundle (medseg serve BUNDLE) or name the bundle the server runs"
            )

    def _infer(self, tensors: list[tuple[str, np.ndarray, str]]) -> np.ndarray:
        inputs = []
        for name, array, dtype in tensors:
            tensor = self._module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        wanted = [self._module.InferRequestedOutput(OUTPUT_LABELS)]
        kwargs: dict[str, Any] = {"outputs": wanted}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._call("infer", self.model, inputs, **kwargs)
        labels = result.as_numpy(OUTPUT_LABELS)
        if labels is None:
            raise ServerError(f"server {self.url}: the response has no {OUTPUT_LABELS} output")
        return np.asarray(labels, dtype=np.uint8)

    def segment(self, image: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        """``(C, X, Y, Z)`` intensities (+ ``(4, 4)`` affine) -> ``(X, Y, Z)`` uint8 labels.

        Raises:
            DatasetError: the server refused the volume (its message says why).
            ServerError: the server is unreachable, went away, or failed.
        """
        tensors = [(INPUT_VOLUME, np.asarray(image, dtype=np.float32), "FP32")]
        if affine is not None:
            tensors.append((INPUT_AFFINE, np.asarray(affine, dtype=np.float64), "FP64"))
        return self._infer(tensors)

    def segment_nifti(self, data: bytes) -> np.ndarray:
        """The bytes of a ``.nii`` / ``.nii.gz`` file -> ``(X, Y, Z)`` uint8 labels."""
        return self._infer([(INPUT_NIFTI, np.frombuffer(data, dtype=np.uint8), "UINT8")])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteSegmenter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
