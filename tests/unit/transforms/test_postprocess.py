"""Per-class connected-component post-processing (scipy.ndimage) and its manifest form."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.transforms.postprocess import ClassRules, Postprocess, apply_postprocess

CLASSES = {"background": 0, "organ": 1, "lesion": 2}


def _scene() -> np.ndarray:
    labels = np.zeros((30, 30, 10), dtype=np.uint8)
    labels[5:20, 5:20, 2:8] = 1  # the organ, 15x15x6 voxels
    labels[10:13, 10:13, 4:6] = 0  # a background cavity inside it
    labels[14:16, 14:16, 4:6] = 2  # a lesion inside the organ (not a hole to fill)
    labels[25:27, 25:27, 1:3] = 1  # a stray island of 8 voxels
    labels[0, 29, 9] = 1  # a single-voxel island
    return labels


def test_largest_component_removes_islands_to_background() -> None:
    rules = Postprocess({"organ": ClassRules(largest_component=True)})
    out = apply_postprocess(_scene(), rules, CLASSES, (1.0, 1.0, 1.0))
    assert out[25:27, 25:27, 1:3].max() == 0 and out[0, 29, 9] == 0
    assert np.count_nonzero(out == 2) == 8  # other classes untouched
    assert (out == 1).sum() == (_scene() == 1).sum() - 9


def test_min_island_uses_physical_volume() -> None:
    rules = Postprocess({"organ": ClassRules(min_island_mm3=5.0)})
    kept = apply_postprocess(_scene(), rules, CLASSES, (1.0, 1.0, 1.0))
    assert kept[25, 25, 1] == 1 and kept[0, 29, 9] == 0  # 8 mm³ kept, 1 mm³ removed
    coarse = apply_postprocess(_scene(), rules, CLASSES, (0.5, 0.5, 2.0))  # 0.5 mm³ voxels
    assert coarse[25, 25, 1] == 0  # 8 voxels = 4 mm³ < 5 mm³


def test_fill_holes_fills_background_cavities_only() -> None:
    rules = Postprocess({"organ": ClassRules(fill_holes=True)})
    out = apply_postprocess(_scene(), rules, CLASSES, None)
    assert out[10:13, 10:13, 4:6].min() == 1  # the cavity is filled
    assert np.count_nonzero(out == 2) == 8  # the lesion is not overwritten


def test_no_rules_leave_the_labels_unchanged_and_the_input_is_not_modified() -> None:
    scene = _scene()
    out = apply_postprocess(scene, Postprocess({"organ": ClassRules()}), CLASSES, None)
    np.testing.assert_array_equal(out, scene)
    apply_postprocess(scene, Postprocess({"organ": ClassRules(True, 2.0, True)}), CLASSES, None)
    np.testing.assert_array_equal(scene, _scene())


def test_postprocess_round_trips_and_refuses_bad_entries() -> None:
    post = Postprocess({"organ": ClassRules(True, 12.5, False)}, {"cases": 3})
    assert Postprocess.from_dict(post.to_dict(), list(CLASSES), "postprocess") == post
    with pytest.raises(ConfigError, match="unknown classes"):
        Postprocess.from_dict({"classes": {"liver": {}}}, list(CLASSES), "postprocess")
    with pytest.raises(ConfigError, match=r"postprocess\.classes\.organ: unknown key biggest"):
        Postprocess.from_dict(
            {"classes": {"organ": {"biggest": True}}}, list(CLASSES), "postprocess"
        )
    with pytest.raises(ConfigError, match="min_island_mm3"):
        ClassRules(min_island_mm3=-1.0)
    with pytest.raises(ConfigError, match=r"organ: fill_holes must be true or false, got str"):
        ClassRules.from_dict({"fill_holes": "yes"}, "organ")
