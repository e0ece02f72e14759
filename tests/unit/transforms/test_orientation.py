"""Orientation codes and exact reorientation, checked against nibabel's own functions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.transforms.orientation import (
    axis_codes,
    from_orientation,
    reorient_plan,
    to_orientation,
)

nib_orient = pytest.importorskip("nibabel.orientations")

#: All 48 orientations: 6 axis orders x 8 sign choices.
ALL_CODES = [
    "".join(pair[s] for pair, s in zip(order, signs, strict=True))
    for order in itertools.permutations((("R", "L"), ("A", "P"), ("S", "I")))
    for signs in itertools.product((0, 1), repeat=3)
]


def _affine_for(codes: str, zooms: tuple[float, float, float] = (0.8, 1.0, 2.5)) -> np.ndarray:
    """A 4x4 affine whose voxel axes point along ``codes``, with spacing and a translation."""
    ornt = nib_orient.axcodes2ornt(codes)
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, sign) in enumerate(ornt):
        affine[int(world_axis), voxel_axis] = sign * zooms[voxel_axis]
    affine[:3, 3] = (-90.0, 12.5, 40.0)
    return affine


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A random rotation of at most ``max_degrees`` about a random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def test_there_are_48_distinct_orientations() -> None:
    assert len(set(ALL_CODES)) == 48 and "RAS" in ALL_CODES and "LPS" in ALL_CODES


@pytest.mark.parametrize("codes", ALL_CODES)
def test_axis_codes_of_axis_aligned_affines(codes: str) -> None:
    affine = _affine_for(codes)
    assert axis_codes(affine) == codes == "".join(nib_orient.aff2axcodes(affine))
    assert axis_codes(affine[:3, :3]) == codes


def test_axis_codes_match_nibabel_on_oblique_and_sheared_affines() -> None:
    rng = np.random.default_rng(0)
    for i in range(500):
        base = _affine_for(ALL_CODES[i % 48], tuple(rng.uniform(0.3, 4.0, size=3)))
        affine = base.copy()
        affine[:3, :3] = _rotation(rng, 60.0) @ base[:3, :3]
        if i % 2:  # a mild shear as well (gantry tilt)
            affine[:3, :3] = affine[:3, :3] @ (np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3)))
        assert axis_codes(affine) == "".join(nib_orient.aff2axcodes(affine)), affine


def test_standard_axial_dicom_affine_is_lps() -> None:
    # a DICOM series with ImageOrientationPatient (1, 0, 0, 0, 1, 0), as a RAS+ affine
    assert axis_codes(np.diag([-0.5, -0.5, 3.0, 1.0])) == "LPS"
    assert axis_codes(np.diag([1.0, 1.0, 1.0, 1.0])) == "RAS"


@pytest.mark.parametrize(
    "matrix",
    [
        np.diag([1.0, 0.0, 1.0, 1.0]),  # a zero column
        np.array([[1.0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),  # parallel axes
        np.full((4, 4), np.nan),
        np.eye(2),
    ],
    ids=["zero-column", "two-axes-one-direction", "nan", "wrong-shape"],
)
def test_degenerate_affines_are_config_errors(matrix: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="affine"):
        axis_codes(matrix)


def test_reorient_plan_lps_to_ras_flips_x_and_y() -> None:
    assert reorient_plan("LPS", "RAS") == ((0, 1, 2), (True, True, False))
    assert reorient_plan("RAS", "RAS") == ((0, 1, 2), (False, False, False))
    assert reorient_plan("ASR", "RAS") == ((2, 0, 1), (False, False, False))


@pytest.mark.parametrize("bad", ["RAX", "RRS", "RA", "RASL", "ras", "", "LPP"])
def test_invalid_codes_are_config_errors_naming_them(bad: str) -> None:
    with pytest.raises(ConfigError, match=repr(bad).replace("[", r"\[")):
        reorient_plan(bad, "RAS")
    with pytest.raises(ConfigError, match="R/L, A/P and S/I"):
        to_orientation(np.zeros((2, 2, 2)), "RAS", bad)


def test_every_orientation_pair_round_trips_exactly() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # (C, X, Y, Z), all sizes differ
    labels = rng.integers(0, 4, size=(3, 4, 5), dtype=np.uint8)
    for source, target in itertools.product(ALL_CODES, repeat=2):
        moved = to_orientation(image, source, target, leading=1)
        assert moved.shape[0] == 2 and sorted(moved.shape[1:]) == [3, 4, 5]
        np.testing.assert_array_equal(from_orientation(moved, source, target, leading=1), image)
        back = from_orientation(to_orientation(labels, source, target), source, target)
        np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("source", ALL_CODES)
@pytest.mark.parametrize("target", ["RAS", "LPS", "PSR"])
def test_matches_nibabel_apply_orientation(source: str, target: str) -> None:
    volume = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)
    transform = nib_orient.ornt_transform(
        nib_orient.axcodes2ornt(source), nib_orient.axcodes2ornt(target)
    )
    expected = nib_orient.apply_orientation(volume, transform)
    np.testing.assert_array_equal(to_orientation(volume, source, target), expected)
    channels = np.stack([volume, -volume])  # (C, X, Y, Z): each channel moves alike
    np.testing.assert_array_equal(
        to_orientation(channels, source, target, leading=1), np.stack([expected, -expected])
    )


def test_lps_volume_to_ras_equals_nibabel() -> None:
    volume = np.random.default_rng(2).normal(size=(6, 7, 8))
    transform = nib_orient.ornt_transform(
        nib_orient.axcodes2ornt("LPS"), nib_orient.axcodes2ornt("RAS")
    )
    expected = nib_orient.apply_orientation(volume, transform)
    np.testing.assert_array_equal(to_orientation(volume, "LPS", "RAS"), expected)
    np.testing.assert_array_equal(expected, volume[::-1, ::-1, :])


def test_reoriented_affine_describes_the_same_world_points() -> None:
    """Voxel values keep their world position when the affine is reoriented alongside."""
    volume = np.random.default_rng(3).normal(size=(3, 4, 5))
    affine = _affine_for("PSL")
    moved = to_orientation(volume, "PSL", "RAS")
    transform = nib_orient.ornt_transform(
        nib_orient.axcodes2ornt("PSL"), nib_orient.axcodes2ornt("RAS")
    )
    new_affine = affine @ nib_orient.inv_ornt_aff(transform, volume.shape)
    assert axis_codes(new_affine) == "RAS"
    for index in itertools.product(range(3), range(4), range(5)):
        world = affine @ (*index, 1)
        new_index = np.round(np.linalg.solve(new_affine, world)[:3]).astype(int)
        assert moved[tuple(new_index)] == volume[index]


def test_wrong_leading_axes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="leading"):
        to_orientation(np.zeros((2, 3, 4)), "RAS", "LPS", leading=1)
