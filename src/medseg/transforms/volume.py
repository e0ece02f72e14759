"""The in-memory volume every part of medseg passes around."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Volume"]


@dataclass
class Volume:
    """One case: a multi-channel image volume, its optional label map and its geometry.

    Attributes:
        case_id: the case identifier (nnU-Net case name, e.g. ``"MNI152_001"``).
        image: float32 array ``(C, X, Y, Z)`` in the file's voxel order (channel first).
        label: integer array ``(X, Y, Z)`` of class indices, or ``None`` (no reference).
        affine: ``(4, 4)`` voxel-to-world (RAS+, mm) matrix of the NIfTI files.
        spacing: voxel size in mm along ``(X, Y, Z)``.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def num_channels(self) -> int:
        """Number of input channels ``C``."""
        return int(self.image.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` in voxels."""
        x, y, z = self.image.shape[1:]
        return int(x), int(y), int(z)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 ml = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0
