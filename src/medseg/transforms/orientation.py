"""Voxel-axis orientation codes ("RAS", "LPS"...) and exact reorientation between them.

A network trained on slices of RAS volumes (voxel axes pointing Right, Anterior, Superior)
sees a standard axial DICOM series (LPS voxel order) rotated by 180 degrees. These helpers
name a volume's voxel order from its affine (:func:`axis_codes`: nibabel's ``aff2axcodes``
after medseg's checks) and move an array between two orders with transposes and flips only
(no interpolation, so a round trip is exact; the plan is nibabel's ``ornt_transform``).
nibabel (``medseg-edge[runtime]`` / ``[data]``) is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.deps import require
from medseg.errors import ConfigError

__all__ = ["axis_codes", "from_orientation", "reorient_affine", "reorient_plan", "to_orientation"]

#: The (positive, negative) code of each world axis x, y, z (RAS+, the NIfTI convention).
_PAIRS = (("R", "L"), ("A", "P"), ("S", "I"))
_AXIS_OF = {code: axis for axis, pair in enumerate(_PAIRS) for code in pair}


def axis_codes(affine: np.ndarray) -> str:
    """The orientation code of a volume's voxel axes, e.g. ``"RAS"`` or ``"LPS"``.

    Letter ``j`` names the world direction voxel axis ``j`` points to most closely (+x "R",
    -x "L", +y "A", -y "P", +z "S", -z "I"). Computed as nibabel's ``aff2axcodes`` does: on
    the rotation nearest to the affine's 3x3 part (polar decomposition), strongest axis
    first, each world axis used once, so oblique and sheared affines get nibabel's answer.

    Args:
        affine: ``(4, 4)`` (or ``(3, 3)``) voxel-to-world matrix, RAS+ mm.

    Raises:
        ConfigError: a matrix of another shape, non-finite values, a zero column, or a
            singular 3x3 part (two voxel axes along the same world direction).
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape not in ((4, 4), (3, 3)) or not np.all(np.isfinite(matrix)):
        raise ConfigError(
            f"affine of shape {matrix.shape} with values {np.round(matrix, 4).tolist()} is not "
            "an orientation; expected a finite (4, 4) voxel-to-world matrix"
        )
    columns = matrix[:3, :3]
    zooms = np.sqrt(np.sum(columns * columns, axis=0))
    singular = np.linalg.svd(columns / np.where(zooms > 0, zooms, 1.0), compute_uv=False)
    if np.any(zooms == 0) or singular.min() <= singular.max() * 3 * np.finfo(np.float64).eps:
        raise ConfigError(
            f"degenerate affine {np.round(columns, 4).tolist()}: a voxel axis has no direction "
            "or two voxel axes point the same way; expected three independent columns"
        )
    full = np.eye(4)
    full[:3, :3] = columns
    return "".join(str(c) for c in _orientations().aff2axcodes(full))


def _orientations() -> Any:
    """``nibabel.orientations``, imported on first use."""
    require("nibabel", "reorienting volumes")
    import nibabel.orientations

    return nibabel.orientations


def _check_codes(codes: str, name: str) -> str:
    valid = (
        isinstance(codes, str)
        and len(codes) == 3
        and all(c in _AXIS_OF for c in codes)
        and sorted(_AXIS_OF[c] for c in codes) == [0, 1, 2]
    )
    if not valid:
        raise ConfigError(
            f"{name} {codes!r} is not an orientation code; expected 3 letters with one of R/L, "
            "A/P and S/I each, e.g. 'RAS' or 'LPS'"
        )
    return codes


def reorient_plan(
    from_codes: str, to_codes: str
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """The transpose and flips that turn an array in ``from_codes`` order into ``to_codes``.

    ``out = np.transpose(arr, perm)``, then output axis ``i`` is reversed where ``flips[i]``.

    Args:
        from_codes: the array's orientation, e.g. ``"LPS"``.
        to_codes: the wanted orientation, e.g. ``"RAS"``.

    Returns:
        ``(perm, flips)``: ``perm[i]`` is the input axis that becomes output axis ``i``.

    Raises:
        ConfigError: either code is not 3 letters with one of R/L, A/P, S/I each.
    """
    source = _check_codes(from_codes, "orientation")
    target = _check_codes(to_codes, "orientation")
    orientations = _orientations()
    # row j: (output axis of input axis j, -1 when reversed), nibabel's orientation array
    ornt = orientations.ornt_transform(
        orientations.axcodes2ornt(source), orientations.axcodes2ornt(target)
    )
    perm, flips = [0, 0, 0], [False, False, False]
    for axis_in, (axis_out, direction) in enumerate(ornt):
        perm[int(axis_out)] = axis_in
        flips[int(axis_out)] = bool(direction < 0)
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def _spatial(array: np.ndarray, leading: int) -> np.ndarray:
    array = np.asarray(array)
    if leading < 0 or array.ndim != leading + 3:
        raise ConfigError(
            f"an array of shape {array.shape} with {leading} leading axes has no 3 spatial axes "
            "after them; expected ndim == leading + 3"
        )
    return array


def to_orientation(
    array: np.ndarray, from_codes: str, to_codes: str, leading: int = 0
) -> np.ndarray:
    """Reorder an array's spatial axes from ``from_codes`` to ``to_codes`` (exact).

    Args:
        array: ``(..., X, Y, Z)`` with ``leading`` non-spatial axes first, e.g. ``(C, X, Y, Z)``
            images or ``(K, X, Y, Z)`` probabilities (``leading=1``), ``(X, Y, Z)`` labels (0).
        from_codes: the array's orientation.
        to_codes: the wanted orientation.
        leading: number of leading non-spatial axes, left as they are.

    Returns:
        A view of ``array`` (transposed and flipped; same dtype, no interpolation).

    Raises:
        ConfigError: invalid codes, or ``array.ndim != leading + 3``.
    """
    array = _spatial(array, leading)
    perm, flips = reorient_plan(from_codes, to_codes)
    out = np.transpose(array, (*range(leading), *(leading + p for p in perm)))
    flipped = tuple(leading + i for i, flip in enumerate(flips) if flip)
    return np.flip(out, axis=flipped) if flipped else out


def from_orientation(
    array: np.ndarray, from_codes: str, to_codes: str, leading: int = 0
) -> np.ndarray:
    """The exact inverse of :func:`to_orientation` with the same arguments.

    Takes an array in ``to_codes`` order (e.g. the network's labels) back to ``from_codes``
    (the input's order).

    Args:
        array: ``(..., X', Y', Z')`` in ``to_codes`` order, ``leading`` non-spatial axes first.
        from_codes: the orientation to return to.
        to_codes: the array's orientation.
        leading: number of leading non-spatial axes.

    Returns:
        A view of ``array`` in ``from_codes`` order.
    """
    return to_orientation(array, to_codes, from_codes, leading)


def reorient_affine(
    affine: np.ndarray, shape: tuple[int, int, int], from_codes: str, to_codes: str
) -> np.ndarray:
    """The affine of ``to_orientation(array, from_codes, to_codes)`` for an array of ``shape``.

    The reordered array covers the same world positions: column ``i`` is the source column
    of the axis that becomes ``i`` (negated when flipped), and the origin moves to the voxel
    that becomes index 0.
    """
    perm, flips = reorient_plan(from_codes, to_codes)
    out = np.eye(4)
    out[:3, 3] = affine[:3, 3]
    for i, (p, flip) in enumerate(zip(perm, flips, strict=True)):
        out[:3, i] = -affine[:3, p] if flip else affine[:3, p]
        if flip:
            out[:3, 3] += affine[:3, p] * (shape[p] - 1)
    return out
