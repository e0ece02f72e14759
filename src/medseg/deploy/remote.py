"""Segment through a Triton server's ``medseg-<name>-segment`` model (HTTP or gRPC).

What ``medseg infer --server URL`` uses: the volume and its affine go to the server, which
runs :class:`medseg.runtime.Segmenter` on its copy of the bundle; the labels come back on the
input's grid. Before the first volume the client checks that the server's model was exported
from the bundle the client names (``medseg_manifest_sha256``), so the same bundle gives the
same mask locally and remotely. The connection (URL, protocol, errors as one-line medseg
errors) is :class:`medseg.runtime.backends.triton.TritonClient`, shared with the Triton
backend that runs only the network (``medseg infer --server URL --model <name>-fp32-onnx``).

    with RemoteSegmenter("http://127.0.0.1:8000", "medseg-x-segment") as remote:
        remote.check_manifest(sha256_of_medseg_json)
        labels = remote.segment(scan.image, scan.affine)
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from medseg.deploy.segment_service import INPUT_AFFINE, INPUT_NIFTI, INPUT_VOLUME, OUTPUT_LABELS
from medseg.runtime.backends.triton import TritonClient, parse_server_url

if TYPE_CHECKING:
    from medseg.runtime import Segmenter

__all__ = ["RemoteSegmenter", "network_segmenter", "parse_server_url", "serves_volumes"]


def serves_volumes(url: str, model: str, timeout_s: float = 600.0) -> bool:
    """Whether ``model`` on ``url`` is a segment model (volumes in, labels out: use
    :class:`RemoteSegmenter`) rather than a raw-logits network (:func:`network_segmenter`),
    from the server's model metadata.

    Raises:
        ConfigError: the server has no such model ready.
        ServerError: the server is unreachable or failed.
    """
    client = TritonClient(url, model, timeout_s)
    try:
        inputs, _ = client.metadata()
    finally:
        client.close()
    return INPUT_VOLUME in inputs or INPUT_NIFTI in inputs


def network_segmenter(
    url: str, model: str, manifest_file: Path, timeout_s: float = 600.0
) -> Segmenter:
    """A :class:`medseg.runtime.Segmenter` whose network is ``model`` on the server (a
    ``<name>-<precision>-onnx`` or ``-trt-<device>`` model of ``medseg export-triton``):
    preprocessing, sliding window and post-processing here, as in ``medseg infer``.

    Args:
        manifest_file: the ``medseg.json`` the model was exported with (checked by sha256
            against its ``medseg_manifest_sha256`` when the segmenter is entered).

    Raises:
        ConfigError: a manifest that cannot be read.
    """
    from medseg.bundle.entries import file_sha256
    from medseg.bundle.manifest import Manifest
    from medseg.runtime import Segmenter
    from medseg.runtime.backends.triton import TritonBackend

    manifest = Manifest.load(manifest_file.parent)
    backend = TritonBackend(
        url,
        model,
        manifest.input,
        manifest.output_name,
        manifest.num_classes,
        manifest_sha256=file_sha256(manifest_file),
        manifest_path=manifest_file,
        timeout_s=timeout_s,
    )
    return Segmenter(backend, manifest)


class RemoteSegmenter:
    """A client of one segment model.

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        model: the model name (``medseg-<name>-segment``).
        timeout_s: how long one request may take (a whole volume on CPU takes seconds).
    """

    def __init__(self, url: str, model: str, timeout_s: float = 600.0) -> None:
        self.url, self.model = url, model
        self.client = TritonClient(url, model, timeout_s)
        self.protocol, self.timeout_s = self.client.protocol, timeout_s

    def parameters(self) -> dict[str, str]:
        """The model's ``config.pbtxt`` parameters, as the server reports them."""
        return self.client.parameters()

    def check_manifest(self, sha256: str, where: str | Path) -> None:
        """Refuse a server model exported from another manifest than ``where`` (sha256)."""
        self.client.check_manifest(sha256, where)

    def _infer(self, tensors: list[tuple[str, np.ndarray, str]]) -> np.ndarray:
        labels = self.client.infer(tensors, [OUTPUT_LABELS])[OUTPUT_LABELS]
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
        self.client.close()

    def __enter__(self) -> RemoteSegmenter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
