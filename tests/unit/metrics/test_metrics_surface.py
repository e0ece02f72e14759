"""Surface distances: hand-computed cases, empty-mask policy, bounding-box crop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.metrics import (
    SurfaceDistances,
    directed_surface_distances,
    image_diagonal_mm,
    pooled_surface_distances,
    surface_distances,
)

ndimage = pytest.importorskip("scipy.ndimage")


def test_squares_shifted_along_fine_axis_by_hand() -> None:
    # Squares of side 10 (rows/cols 5..14), the reference shifted by k = 3 rows; spacing
    # (0.5, 2.0) mm. Surfaces are the 36-voxel outer rings. Prediction ring -> reference ring:
    #   top row (10 voxels) and bottom row without its corners (8 voxels): 3 rows away,
    #     3 * 0.5 = 1.5 mm (a column step costs 2.0 mm, so going sideways is never shorter);
    #   left/right columns at rows 6 and 7: 1.0 and 0.5 mm (2 + 2 voxels);
    #   left/right columns at rows 8..14: on the reference ring, 0 mm (14 voxels).
    #   -> 18 x 1.5, 2 x 1.0, 2 x 0.5, 14 x 0; the reverse direction is the mirror image.
    # HD = 1.5 mm = k * spacing[0].
    # HD95: sorted distances, linear interpolation at 0.95 * 35 = 33.25 -> between the 34th
    #   and 35th values, both 1.5 -> 1.5 mm.
    # ASSD = (18 * 1.5 + 2 * 1.0 + 2 * 0.5) * 2 / 72 = 60 / 72 = 5 / 6 mm.
    pred = np.zeros((32, 32), dtype=bool)
    ref = np.zeros((32, 32), dtype=bool)
    pred[5:15, 5:15] = True
    ref[8:18, 5:15] = True
    result = surface_distances(pred, ref, (0.5, 2.0))
    assert result.hausdorff_mm == pytest.approx(1.5, abs=1e-12)
    assert result.hd95_mm == pytest.approx(1.5, abs=1e-12)
    assert result.assd_mm == pytest.approx(5 / 6, abs=1e-12)
    assert result.one_empty is False
    # Symmetric.
    assert surface_distances(ref, pred, (0.5, 2.0)) == result


def test_squares_shifted_along_coarse_axis_by_hand() -> None:
    # Same squares shifted by k = 3 columns instead: every prediction left-column voxel
    # is 3 columns from the reference left column, 3 * 2.0 = 6.0 mm, and the reference top row
    # starts 3 columns to the right, so nothing is closer. HD = 6.0 mm = k * spacing[1].
    # More than 5% of each ring (10 of 36 voxels) is at 6.0 mm, so HD95 is 6.0 mm too.
    pred = np.zeros((32, 32), dtype=bool)
    ref = np.zeros((32, 32), dtype=bool)
    pred[5:15, 5:15] = True
    ref[5:15, 8:18] = True
    result = surface_distances(pred, ref, (0.5, 2.0))
    assert result.hausdorff_mm == pytest.approx(6.0, abs=1e-12)
    assert result.hd95_mm == pytest.approx(6.0, abs=1e-12)


def test_cubes_shifted_along_anisotropic_axis_by_hand() -> None:
    # Cubes of side 6 in a 16^3 volume, the reference shifted by k = 2 slices along axis 2,
    # spacing (1.0, 1.0, 2.5) mm. The prediction's lowest face is 2 slices below the
    # reference's lowest face: 2 * 2.5 = 5.0 mm; a reference side face at that (x, y) starts
    # 2 slices higher too, so 5.0 mm is the largest distance. HD = 5.0 mm.
    # Faces of the cube surface at 5.0 mm: the 36-voxel lowest face out of 6^3 - 4^3 = 152
    # surface voxels (> 5%), so HD95 = 5.0 mm as well.
    pred = np.zeros((16, 16, 16), dtype=bool)
    ref = np.zeros((16, 16, 16), dtype=bool)
    pred[4:10, 4:10, 4:10] = True
    ref[4:10, 4:10, 6:12] = True
    result = surface_distances(pred, ref, (1.0, 1.0, 2.5))
    assert result.hausdorff_mm == pytest.approx(5.0, abs=1e-12)
    assert result.hd95_mm == pytest.approx(5.0, abs=1e-12)
    assert 0.0 < result.assd_mm < 5.0


def test_identical_masks_have_zero_distance() -> None:
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[3:9, 2:7, 4:10] = True
    assert surface_distances(mask, mask, (0.8, 0.8, 3.0)) == SurfaceDistances(
        hausdorff_mm=0.0, hd95_mm=0.0, assd_mm=0.0, one_empty=False
    )


def test_both_empty_is_zero() -> None:
    empty = np.zeros((20, 30), dtype=bool)
    assert surface_distances(empty, empty, (1.0, 1.0)) == SurfaceDistances(0.0, 0.0, 0.0, False)


def test_one_empty_is_the_image_diagonal_in_mm() -> None:
    # 32 x 32 at (0.5, 2.0) mm: extent 16 mm x 64 mm, diagonal sqrt(16^2 + 64^2) mm.
    empty = np.zeros((32, 32), dtype=bool)
    square = empty.copy()
    square[5:15, 5:15] = True
    expected = math.sqrt(16.0**2 + 64.0**2)
    assert image_diagonal_mm((32, 32), (0.5, 2.0)) == pytest.approx(expected)
    for pred, ref in ((empty, square), (square, empty)):
        result = surface_distances(pred, ref, (0.5, 2.0))
        assert result == SurfaceDistances(expected, expected, expected, one_empty=True)


def test_one_empty_diagonal_uses_the_full_shape_not_the_crop() -> None:
    # BraTS: 240 x 240 x 155 at 1 mm -> 373.13 mm whatever the size of the one mask.
    empty = np.zeros((240, 240, 155), dtype=bool)
    dot = empty.copy()
    dot[100, 100, 70] = True
    result = surface_distances(dot, empty, (1.0, 1.0, 1.0))
    assert result.hausdorff_mm == pytest.approx(373.13, abs=0.01)
    assert result.one_empty


def _uncropped(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple:
    """The same definitions on the whole image, without the bounding-box crop."""
    pred_surface = pred ^ ndimage.binary_erosion(pred)
    ref_surface = ref ^ ndimage.binary_erosion(ref)
    a = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    b = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    return (
        max(a.max(), b.max()),
        max(np.percentile(a, 95), np.percentile(b, 95)),
        np.concatenate([a, b]).mean(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_gives_the_same_result_as_the_whole_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (40, 36, 30)
    pred = np.zeros(shape, dtype=bool)
    ref = np.zeros(shape, dtype=bool)
    # Boxes at random places, one of them touching the image border.
    for mask in (pred, ref):
        for _ in range(3):
            lo = rng.integers(0, [30, 26, 20])
            hi = lo + rng.integers(3, 10, size=3)
            mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    pred[0:5, 10:20, 25:30] = True
    spacing = (0.9, 1.3, 2.1)
    result = surface_distances(pred, ref, spacing)
    expected = _uncropped(pred, ref, spacing)
    assert (result.hausdorff_mm, result.hd95_mm, result.assd_mm) == pytest.approx(expected)


def test_bad_input_raises_config_error() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[2:4, 2:4] = True
    with pytest.raises(ConfigError, match="2 values"):
        surface_distances(mask, mask, (1.0,))
    with pytest.raises(ConfigError, match="positive"):
        surface_distances(mask, mask, (1.0, 0.0))
    with pytest.raises(ConfigError, match="positive"):
        surface_distances(mask, mask, (1.0, float("nan")))
    with pytest.raises(ConfigError, match="bool"):
        surface_distances(mask.astype(np.float32), mask, (1.0, 1.0))
    with pytest.raises(ConfigError, match="2D or 3D"):
        surface_distances(mask[0], mask[0], (1.0,))


def test_pooled_parts_weigh_each_surface_voxel_once() -> None:
    # Part A: 10x10 squares, the reference shifted by 3 rows at 1 mm (HD95 3 mm alone).
    # Part B: identical 20x20 squares (0 mm). Pooled: 36 + 36 distances from A (18 of 3 mm
    # per direction), 76 + 76 zeros from B; per direction 18 / 112 = 16 % are 3 mm, so the
    # 95th percentile is 3 mm; ASSD is the mean of all 224 distances.
    a_pred = np.zeros((32, 32), dtype=bool)
    a_ref = np.zeros((32, 32), dtype=bool)
    a_pred[5:15, 5:15] = True
    a_ref[8:18, 5:15] = True
    b = np.zeros((32, 32), dtype=bool)
    b[5:25, 5:25] = True
    spacing = (1.0, 1.0)
    forward_a, backward_a = directed_surface_distances(a_pred, a_ref, spacing)
    assert forward_a.size == backward_a.size == 36
    pooled = pooled_surface_distances([(a_pred, a_ref), (b, b.copy())], spacing)
    alone = surface_distances(a_pred, a_ref, spacing)
    assert pooled.hausdorff_mm == alone.hausdorff_mm == 3.0
    assert pooled.hd95_mm == pytest.approx(3.0)
    all_distances = np.concatenate([forward_a, backward_a, np.zeros(152)])
    assert pooled.assd_mm == pytest.approx(float(all_distances.mean()))
    assert pooled.one_empty is False


def test_pooled_single_part_is_surface_distances_and_one_empty_part_uses_its_diagonal() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((12, 14, 6)) > 0.6
    ref = rng.random((12, 14, 6)) > 0.6
    spacing = (0.8, 1.2, 3.0)
    assert pooled_surface_distances([(pred, ref)], spacing) == surface_distances(pred, ref, spacing)
    empty = np.zeros((4, 4), dtype=bool)
    dot = empty.copy()
    dot[1, 1] = True
    forward, backward = directed_surface_distances(empty, dot, (1.0, 1.0))
    assert forward.size == 0 and backward.tolist() == [image_diagonal_mm((4, 4), (1.0, 1.0))]
    assert pooled_surface_distances([(empty, dot)], (1.0, 1.0)).one_empty is True
    assert pooled_surface_distances([(empty, empty)], (1.0, 1.0)).hd95_mm == 0.0
    with pytest.raises(ConfigError, match="at least one"):
        pooled_surface_distances([], (1.0, 1.0))
