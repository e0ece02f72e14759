"""What the end-to-end Triton segmenter does with one request, without Triton.

The ``medseg-<name>-segment`` model of an exported repository (Python backend) holds a copy of
the bundle in ``1/bundle/`` and runs :class:`medseg.runtime.Segmenter` on it: the code path of
``medseg infer``. This module is that model minus Triton's glue (``triton_model.py``, copied as
``1/model.py``), so it is tested here without a server:

- :class:`SegmentSettings`: the model's ``config.pbtxt`` parameters (precision, backend, volume
  cap, threads, the sha256 of the manifest it was exported with, the source bundle).
- :func:`check_segment_model`: the copied bundle still matches what was exported (manifest and
  ONNX sha256), else a :class:`~medseg.errors.ConfigError` with the rebuild command; Triton then
  refuses to load the model.
- :class:`SegmentService`: one request (a ``(C, X, Y, Z)`` float32 volume with its ``(4, 4)``
  affine, or the bytes of a NIfTI file) to ``(X, Y, Z)`` uint8 labels on the input's grid, or a
  :class:`~medseg.errors.MedsegError` whose one line names the problem.
"""

from __future__ import annotations

import shlex
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import MANIFEST_NAME, PRECISIONS, file_sha256
from medseg.bundle.folds import bundle_onnx_paths
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError, DatasetError, ServerError

__all__ = [
    "BUNDLE_DIR",
    "DEFAULT_MAX_VOXELS",
    "INPUT_AFFINE",
    "INPUT_NIFTI",
    "INPUT_VOLUME",
    "OUTPUT_LABELS",
    "VERSION",
    "RequestCancelled",
    "SegmentService",
    "SegmentSettings",
    "check_segment_model",
]

#: Where the bundle copy lives inside the model's version folder.
#: The one version folder each Triton model gets.
VERSION = "1"
BUNDLE_DIR = "bundle"
INPUT_VOLUME = "volume"
INPUT_AFFINE = "affine"
INPUT_NIFTI = "nifti"
OUTPUT_LABELS = "labels"
#: Default cap on voxels per request (C * X * Y * Z): 64 Mi, e.g. 512 x 512 x 256, one channel.
DEFAULT_MAX_VOXELS = 64 * 2**20
_BACKENDS = ("auto", "onnxruntime", "tensorrt")
_GZIP_MAGIC = b"\x1f\x8b"


def _param(params: Mapping[str, str], key: str, where: str) -> str:
    if key not in params:
        raise ConfigError(
            f"{where}: parameter {key} is missing; re-export with medseg export-triton"
        )
    return params[key]


class RequestCancelled(ServerError):
    """The client cancelled the request (or its deadline passed) while it was computed."""


@dataclass(frozen=True)
class SegmentSettings:
    """The segment model's settings (``parameters`` of its ``config.pbtxt``).

    Attributes:
        precision: the bundle precision it runs (``fp32`` / ``fp16`` / ``int8``).
        backend: ``auto`` (TensorRT with a GPU and an engine, else ONNX Runtime) or a backend.
        max_voxels: the largest request, in voxels over all channels; larger ones are refused.
        threads: ONNX Runtime intra-op threads; 0: ONNX Runtime's default (all cores).
        manifest_sha256: sha256 of the ``medseg.json`` the model was exported with.
        source_bundle: the bundle folder it was exported from (for the rebuild command).
    """

    precision: str = "fp32"
    backend: str = "auto"
    max_voxels: int = DEFAULT_MAX_VOXELS
    threads: int = 0
    manifest_sha256: str = ""
    source_bundle: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"segment precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        if self.backend not in _BACKENDS:
            raise ConfigError(
                f"segment backend {self.backend!r} is not one of {', '.join(_BACKENDS)}"
            )
        if self.max_voxels < 1:
            raise ConfigError(f"--max-voxels must be >= 1, got {self.max_voxels}")
        if self.threads < 0:
            raise ConfigError(f"segment threads must be >= 0, got {self.threads}")

    def to_parameters(self) -> dict[str, str]:
        """The ``config.pbtxt`` parameters."""
        return {
            "medseg_precision": self.precision,
            "medseg_backend": self.backend,
            "medseg_max_voxels": str(self.max_voxels),
            "medseg_threads": str(self.threads),
            "medseg_manifest_sha256": self.manifest_sha256,
            "medseg_source_bundle": self.source_bundle,
        }

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], where: str) -> SegmentSettings:
        """Read :meth:`to_parameters` back; ConfigError naming ``where`` and the key."""
        ints = {}
        for key in ("medseg_max_voxels", "medseg_threads"):
            text = _param(params, key, where)
            try:
                ints[key] = int(text)
            except ValueError:
                raise ConfigError(
                    f"{where}: parameter {key} is {text!r}; expected an integer"
                ) from None
        return cls(
            precision=_param(params, "medseg_precision", where),
            backend=_param(params, "medseg_backend", where),
            max_voxels=ints["medseg_max_voxels"],
            threads=ints["medseg_threads"],
            manifest_sha256=_param(params, "medseg_manifest_sha256", where),
            source_bundle=params.get("medseg_source_bundle", ""),
        )

    def rebuild_command(self, repository: Path) -> str:
        """The command that writes this repository again from its bundle."""
        bundle = shlex.quote(self.source_bundle or "BUNDLE")
        return f"medseg export-triton {bundle} --out {shlex.quote(str(repository))} --force"


def check_segment_model(model_dir: Path, settings: SegmentSettings) -> Path:
    """Check the bundle copy of a segment model; return its folder (``<model>/1/bundle``).

    Raises:
        ConfigError: the copied ``medseg.json`` is not the one exported (its sha256 differs
            from ``medseg_manifest_sha256``), or the ONNX file of the precision does not
            match the manifest; the message gives the rebuild command.
    """
    bundle = Path(model_dir) / VERSION / BUNDLE_DIR
    rebuild = settings.rebuild_command(Path(model_dir).parent)
    manifest_path = bundle / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: missing; rebuild the repository: {rebuild}")
    digest = file_sha256(manifest_path)
    if digest != settings.manifest_sha256:
        raise ConfigError(
            f"{manifest_path}: sha256 {digest[:12]}... is not the manifest this model was "
            f"exported with ({settings.manifest_sha256[:12]}...); rebuild the repository: "
            f"{rebuild}"
        )
    manifest = Manifest.load(bundle)
    try:
        bundle_onnx_paths(manifest, bundle, settings.precision, verify=True)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; rebuild the repository: {rebuild}") from None
    return bundle


def _inflate(data: bytes, limit: int) -> bytes:
    """gunzip ``data`` (possibly several members), refusing more than ``limit`` bytes out."""
    out, rest = bytearray(), data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise DatasetError(
                f"nifti: corrupt gzip data ({exc}); expected a .nii or .nii.gz file"
            ) from None
        if len(out) > limit:
            raise DatasetError(
                f"nifti: decompresses to more than {limit} bytes, beyond this model's volume cap"
            )
        if not inflater.eof:
            raise DatasetError("nifti: gzip data is truncated; expected a complete .nii.gz file")
        rest = inflater.unused_data
    return bytes(out)


class SegmentService:
    """Segments the volumes of requests with one bundle (a :class:`Segmenter` inside).

    Args:
        segmenter: an open :class:`medseg.runtime.Segmenter`.
        settings: the cap and the rest of the model's settings.
    """

    def __init__(self, segmenter: Any, settings: SegmentSettings) -> None:
        self.segmenter = segmenter
        self.settings = settings

    @classmethod
    def from_model_dir(cls, model_dir: Path, params: Mapping[str, str]) -> SegmentService:
        """Check the model folder's bundle and open it (what Triton's ``initialize`` does)."""
        from medseg.runtime import Segmenter

        settings = SegmentSettings.from_parameters(params, f"{model_dir}/config.pbtxt")
        bundle = check_segment_model(model_dir, settings)
        segmenter = Segmenter.from_bundle(
            bundle, settings.backend, settings.precision, threads=settings.threads or None
        )
        segmenter.load()  # every fold of an nnU-Net ensemble
        return cls(segmenter, settings)

    def _check_size(self, voxels: int, what: str) -> None:
        if voxels > self.settings.max_voxels:
            raise DatasetError(
                f"{what}: {voxels} voxels exceed this model's cap of {self.settings.max_voxels} "
                "(medseg_max_voxels in config.pbtxt; medseg export-triton --max-voxels)"
            )

    def segment_request(
        self,
        volume: np.ndarray | None = None,
        affine: np.ndarray | None = None,
        nifti: np.ndarray | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Labels for one request.

        Args:
            volume: ``(C, X, Y, Z)`` float32 raw intensities (input ``volume``).
            affine: ``(4, 4)`` voxel-to-world matrix (RAS+ mm) of ``volume``; optional: without
                it the volume is taken in the training data's voxel order, as ``medseg infer``
                does with an array.
            nifti: ``(N,)`` uint8, the bytes of a ``.nii`` or ``.nii.gz`` file (instead of
                ``volume``).
            cancelled: asked after every batch of slices or windows (Triton's
                ``request.is_cancelled``): once it says ``True`` the request is abandoned.

        Returns:
            ``(X, Y, Z)`` uint8 labels on the input's grid.

        Raises:
            DatasetError: none or both of ``volume`` and ``nifti``, a bad shape, channel count,
                dtype or affine, a non-finite voxel, a corrupt NIfTI payload, a volume above
                the cap.
            RequestCancelled: ``cancelled()`` turned true (the client went away or timed out).
        """
        if (volume is None) == (nifti is None):
            raise DatasetError(
                f"a request needs exactly one of the inputs {INPUT_VOLUME} (float32 C,X,Y,Z, "
                f"with {INPUT_AFFINE}) or {INPUT_NIFTI} (uint8 bytes of a .nii/.nii.gz file)"
            )
        if nifti is not None:
            if affine is not None:
                raise DatasetError(
                    f"{INPUT_AFFINE} goes with {INPUT_VOLUME}; a NIfTI file carries its own"
                )
            image, affine = self._decode_nifti(nifti)
            source = INPUT_NIFTI
        else:
            assert volume is not None  # one of the two, checked above
            image, source = volume, INPUT_VOLUME
            if image.ndim != 4:
                raise DatasetError(
                    f"{INPUT_VOLUME}: shape {tuple(image.shape)} is not (C, X, Y, Z); the model "
                    f"takes {self.segmenter.manifest.input.channels} channel(s)"
                )
            self._check_size(int(image.size), INPUT_VOLUME)
            if affine is not None:
                affine = np.asarray(affine, dtype=np.float64)
                if affine.shape != (4, 4) or not np.isfinite(affine).all():
                    raise DatasetError(
                        f"{INPUT_AFFINE}: expected a finite (4, 4) matrix, got shape "
                        f"{tuple(affine.shape)}"
                    )
        progress = None
        if cancelled is not None:

            def progress(done: int, total: int) -> None:
                if cancelled():
                    raise RequestCancelled(
                        f"request cancelled by the client after {done} of {total} slices"
                    )

        result = self.segmenter.segment(image, source=source, affine=affine, progress=progress)
        return np.ascontiguousarray(result.labels, dtype=np.uint8)

    def _decode_nifti(self, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(C, X, Y, Z)`` float32 and the affine of NIfTI bytes, read as ``medseg infer`` does."""
        from medseg.runtime.io import load_scan

        data = np.ascontiguousarray(payload, dtype=np.uint8).reshape(-1).tobytes()
        limit = 16 * self.settings.max_voxels + 2**20  # complex128 voxels + header/extensions
        if data[:2] == _GZIP_MAGIC:
            data = _inflate(data, limit)
        elif len(data) > limit:
            raise DatasetError(f"nifti: {len(data)} bytes, beyond this model's volume cap")
        with tempfile.TemporaryDirectory(prefix="medseg-nifti-") as tmp:
            path = Path(tmp) / "input.nii"
            path.write_bytes(data)
            self._check_size(_nifti_voxels(path), INPUT_NIFTI)
            try:
                scan = load_scan([path])
            except DatasetError as exc:
                raise DatasetError(str(exc).replace(str(path), INPUT_NIFTI)) from None
        return scan.image, scan.affine

    def close(self) -> None:
        self.segmenter.close()


def _nifti_voxels(path: Path) -> int:
    """Voxels the NIfTI header at ``path`` declares (header only: the cap comes first)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, HeaderTypeError

    try:
        shape = nib.load(str(path)).shape  # type: ignore[attr-defined]
    except (ImageFileError, HeaderDataError, HeaderTypeError, OSError, ValueError, EOFError) as e:
        problem = str(e).replace(str(path), INPUT_NIFTI)
        raise DatasetError(
            f"{INPUT_NIFTI}: not a readable NIfTI-1/NIfTI-2 file ({problem})"
        ) from None
    return int(np.prod(shape, dtype=np.int64))
