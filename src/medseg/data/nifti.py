"""Reading and writing single NIfTI volumes, with one-line errors for every bad file.

nibabel is imported through :func:`medseg.deps.require` at the point of use, so importing
this module costs only numpy. Every failure is a :class:`~medseg.errors.DatasetError` whose
message has the form ``"<path>: <problem>"`` on one line.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file
from medseg.deps import require
from medseg.errors import DatasetError

__all__ = [
    "MAX_VOXELS",
    "NIFTI_ENDINGS",
    "NiftiImage",
    "constant_volume_problem",
    "is_nifti_path",
    "load_nifti",
    "quiet_nibabel",
    "save_nifti",
]

#: File endings medseg reads and writes as NIfTI-1 (gzip-compressed or not).
NIFTI_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii")
#: Largest volume read (voxels of one 3D file, all of its components): 2^31, 8.6 GB as
#: float32. A header claiming more is refused before any memory is allocated.
MAX_VOXELS: int = 2**31
#: deflate cannot compress better than about 1032:1, so a ``.nii.gz`` whose header declares
#: more than this many times its compressed size cannot hold its voxels.
_DEFLATE_MAX_RATIO = 1100


@dataclass(frozen=True)
class NiftiImage:
    """One NIfTI volume as stored on disk.

    Attributes:
        data: voxel array ``(X, Y, Z)`` in the file's dtype (integer or float; float when the
            header sets a scaling slope/intercept). A 4D file with a single last dimension
            is squeezed to 3D.
        affine: ``(4, 4)`` float64 voxel-to-world (RAS+, mm) matrix, as nibabel chooses it
            from the sform/qform.
        spacing: voxel size in mm along ``(X, Y, Z)``, from the header zooms (pixdim).
        header: the nibabel header (``Nifti1Header`` or ``Nifti2Header``), e.g. to pass to
            :func:`save_nifti` so an output keeps the input's metadata.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    header: Any

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` in voxels."""
        x, y, z = self.data.shape
        return int(x), int(y), int(z)


def is_nifti_path(path: str | Path) -> bool:
    """Whether ``path`` ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_ENDINGS)


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _gzip_problem(path: Path) -> str | None:
    """For a gzip file whose stream is broken, say how (``None`` when it decompresses)."""
    try:
        with path.open("rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                return None
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except EOFError:
        return "truncated file (the gzip stream ends early)"
    except (OSError, zlib.error) as exc:
        return f"corrupt gzip data ({type(exc).__name__}: {exc})"
    return None


def _describe_read_error(exc: BaseException, path: Path) -> str:
    """Turn one of the many exceptions nibabel raises on a bad file into a short phrase."""
    quoted = rf"[\"']?{re.escape(str(path))}[\"']?"
    text = re.sub(rf"\s*(?:\b(?:from|of|in|File)\s*)?{quoted}", "", str(exc))
    text = " ".join(text.split()).strip(" :")
    if len(text) > 120:
        text = text[:117] + "..."
    lowered = text.lower()
    if type(exc).__name__ == "ImageFileError" and "empty file" not in lowered:
        # nibabel could not sniff the header: tell a truncated or corrupt gzip stream apart.
        gz_problem = _gzip_problem(path)
        if gz_problem is not None:
            return gz_problem
        size = path.stat().st_size
        if size < 348:
            return f"truncated or not a NIfTI file (only {size} bytes; a NIfTI-1 header is 348)"
    if isinstance(exc, EOFError) or ("expected" in lowered and "bytes" in lowered):
        phrase = "truncated file (the voxel data ends early)"
    elif isinstance(exc, (zlib.error, gzip.BadGzipFile)) or "gzip" in lowered:
        phrase = "corrupt or not gzip-compressed data"
    elif "empty file" in lowered:
        phrase = "empty file"
    elif type(exc).__name__ == "ImageFileError":
        phrase = "not a NIfTI file or corrupt header"
    else:
        phrase = "unreadable NIfTI file"
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{phrase} ({detail})"


def _raw_pixdim(img: Any) -> tuple[float, ...]:
    """The voxel sizes ``pixdim[1:4]`` as written in the file, before nibabel fixes them."""
    from nibabel.openers import ImageOpener

    holder = img.file_map["header"] if "header" in img.file_map else img.file_map["image"]
    with ImageOpener(holder.filename) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    return tuple(float(v) for v in raw["pixdim"][1:4])


def _check_declared_size(img: Any, path: Path) -> None:
    """Refuse a header whose shape cannot be what the file holds, before reading voxels.

    An empty dimension, more than :data:`MAX_VOXELS` voxels, or more voxel bytes than the
    file could hold (uncompressed: its size; gzip: its size times deflate's best ratio).
    """
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    shown = "x".join(map(str, shape)) or "()"
    if not shape or any(n <= 0 for n in shape):
        raise _fail(
            path,
            f"the header declares an empty volume (shape {shown}); "
            "expected a 3D volume with at least one voxel along X, Y and Z",
        )
    voxels = int(np.prod(np.asarray(shape, dtype=object)))
    if voxels > MAX_VOXELS:
        raise _fail(
            path,
            f"the header declares {shown} = {voxels:.3g} voxels, more than the "
            f"{MAX_VOXELS:.3g} medseg reads; the header is corrupt or the volume must be cropped",
        )
    itemsize = int(np.dtype(header.get_data_dtype()).itemsize)
    offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 0
    holder = img.file_map["image"]
    data_path = Path(holder.filename) if holder.filename else path
    needed = voxels * itemsize + (offset if data_path == path else 0)
    size = data_path.stat().st_size
    compressed = data_path.name.lower().endswith(".gz")
    possible = size * _DEFLATE_MAX_RATIO if compressed else size
    if needed > possible:
        held = f"{size} bytes" + (" compressed" if compressed else "")
        raise _fail(
            data_path,
            f"truncated or corrupt header: it declares {shown} voxels of "
            f"{header.get_data_dtype()} ({needed} bytes) but the file holds {held}",
        )


def constant_volume_problem(data: np.ndarray) -> str | None:
    """A phrase for an image every voxel of which has one value (``None`` otherwise).

    Such an image (all zero, or constant after a DICOM RescaleSlope of 0) holds nothing to
    segment; a network still paints labels into it.

    Args:
        data: the image voxels, any shape.
    """
    if data.size == 0:
        return "is empty (no voxels)"
    first = data.flat[0]
    if np.all(data == first):
        return (
            f"every voxel has the same value ({float(first):g}): a blank or constant image "
            "holds nothing to segment; check the export from the scanner"
        )
    return None


@contextlib.contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Within the block, nibabel's header-check log lines do not reach stderr.

    nibabel reports header problems through its ``nibabel.global`` logger, whose stream
    handler prints them; medseg checks the same things and raises one line naming the file.
    The logger's level is raised for the block and restored on exit: a local logging context,
    not a global filter. (nibabel's ``LoggingOutputSuppressor`` removes the handlers, which
    lets Python's last-resort handler print the same lines.)
    """
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_nifti(path: str | Path) -> NiftiImage:
    """Read a 3D NIfTI file (``.nii`` or ``.nii.gz``) completely into memory.

    The voxel data is read eagerly (no memory map), so a truncated or corrupt file fails
    here rather than later, and the file may be replaced while the array is in use.

    Args:
        path: the file to read.

    Returns:
        The volume, its affine, its voxel spacing in mm and its header.

    Raises:
        DatasetError: ``"<path>: <problem>"`` when the file is missing, is not a NIfTI
            file, is corrupt or truncated, is not 3D (4D with a single last dimension is
            squeezed; other shapes are rejected with the shape), has a non-numeric voxel
            type, or has a non-positive or non-finite spacing or affine.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file does not exist")
    if path.is_dir():
        raise _fail(path, "is a folder, not a NIfTI file")
    nib = require("nibabel", "reading NIfTI files")
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, HeaderTypeError

    read_errors = (
        ImageFileError,
        HeaderDataError,
        HeaderTypeError,
        EOFError,
        zlib.error,
        OSError,
        ValueError,
        struct.error,
        IndexError,
        TypeError,
    )
    try:
        # nibabel logs header problems ("data code 999 not recognized", "pixdim[1,2,3] should
        # be non-zero") to stderr through its own logger; the one-line error below says it.
        with quiet_nibabel():
            img = nib.load(str(path), mmap=False)
        if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image and Nifti2Image derive from it
            raise _fail(
                path, f"is a {type(img).__name__} file, not NIfTI; expected .nii or .nii.gz"
            )
        _check_declared_size(img, path)
        with quiet_nibabel():
            data = np.asanyarray(img.dataobj)
            header = img.header
            zooms = header.get_zooms()
            # nibabel silently replaces zero or negative pixdim by 1 or abs(): check the raw
            # header.
            raw_zooms = _raw_pixdim(img)
            affine = np.asarray(img.affine, dtype=np.float64)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to read its voxels") from None
    except read_errors as exc:
        raise _fail(path, _describe_read_error(exc, path)) from exc
    # nibabel reads a .nii.gz only as far as the voxels go: the gzip CRC and length at the end
    # of the stream are never checked. Read the stream to its end so corrupt data is refused.
    gz_problem = _gzip_problem(path)
    if gz_problem is not None:
        raise _fail(path, gz_problem)

    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise _fail(
            path,
            f"has {data.ndim} dimensions with shape {tuple(int(n) for n in data.shape)}; "
            "expected a 3D volume (X, Y, Z), or 4D with a last dimension of 1",
        )
    if data.dtype.kind not in "iuf":
        raise _fail(path, f"has voxel type {data.dtype}, expected integer or floating-point voxels")
    spacing = tuple(float(z) for z in zooms[:3])
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in (*spacing, *raw_zooms)):
        raise _fail(
            path,
            f"voxel spacing {raw_zooms} mm in the header (pixdim) is not positive; "
            "expected three positive sizes in mm",
        )
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise _fail(path, "affine (sform/qform) has non-finite values")
    x, y, z = spacing
    return NiftiImage(data=data, affine=affine, spacing=(x, y, z), header=header)


def _disk_dtype(array: np.ndarray, dtype: np.dtype[Any] | None, path: Path) -> np.dtype[Any]:
    """Choose the on-disk dtype: ``dtype`` if given, else the array's (see :func:`save_nifti`)."""
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        lo = int(array.min()) if array.size else 0
        hi = int(array.max()) if array.size else 0
        if info.min <= lo and hi <= info.max:
            return np.dtype(np.int32)
        raise _fail(
            path,
            f"cannot store {array.dtype} values in [{lo}, {hi}] without loss; "
            "pass dtype= explicitly (e.g. float64)",
        )
    return array.dtype


def save_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    header: Any | None = None,
    dtype: np.dtype[Any] | type | str | None = None,
) -> Path:
    """Write a 3D (or 4D) array as a NIfTI file, atomically.

    The file appears whole or not at all (written to a temporary sibling, then renamed).
    The on-disk dtype is ``dtype`` when given, else the array's own dtype, except that bool
    is stored as uint8 and 64-bit integers as int32 when their values fit (many NIfTI
    readers reject 64-bit integers; values that do not fit raise). Values are cast, never
    rescaled: the written file has no scaling slope/intercept.

    Args:
        path: output file, ending in ``.nii`` or ``.nii.gz`` (the ending picks compression).
        array: voxel data ``(X, Y, Z)`` (or ``(X, Y, Z, T)``), integer, float or bool.
        affine: ``(4, 4)`` voxel-to-world (RAS+, mm) matrix.
        header: optional NIfTI header to copy metadata from (e.g. ``NiftiImage.header`` of
            the input); its shape, dtype, scaling and affine are replaced.
        dtype: optional on-disk dtype, e.g. ``np.uint8`` for a label map.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError: ``"<path>: <problem>"`` for a bad ending, array, affine or a failed write.
        ConfigError: when the parent folder of ``path`` does not exist.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise _fail(path, "cannot write NIfTI: the file name must end in .nii or .nii.gz")
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.dtype.kind not in "biuf":
        raise _fail(
            path,
            f"cannot write an array of shape {array.shape} and dtype {array.dtype}; "
            "expected a 3D or 4D integer, float or bool array",
        )
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise _fail(
            path, f"cannot write NIfTI: affine must be a finite (4, 4) matrix, got {affine.shape}"
        )
    target = _disk_dtype(array, None if dtype is None else np.dtype(dtype), path)
    nib = require("nibabel", "writing NIfTI files")
    data = array.astype(target, copy=False)
    img = nib.Nifti1Image(data, affine, header=header, dtype=target)
    img.header.set_slope_inter(None, None)
    try:
        with atomic_file(path) as tmp:
            nib.save(img, str(tmp))
    except OSError as exc:
        raise _fail(path, f"cannot write NIfTI file ({type(exc).__name__}: {exc})") from exc
    return path
