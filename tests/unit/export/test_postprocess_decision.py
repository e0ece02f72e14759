"""Post-processing rules are kept only when they raise the validation Dice."""

from __future__ import annotations

import numpy as np

from medseg.export.postprocess import ValidationCase, decide_postprocess


def _organ() -> np.ndarray:
    ref = np.zeros((40, 40, 12), dtype=np.uint8)
    ref[8:30, 8:30, 2:10] = 1
    return ref


def test_stray_islands_make_largest_component_win() -> None:
    cases = []
    for k in range(3):
        ref = _organ()
        pred = ref.copy()
        pred[35:38, 2 + k : 5 + k, 1:4] = 1  # a false island far away
        pred[12:15, 12:15, 5:7] = 0  # a hole the reference does not have
        cases.append(ValidationCase(f"c{k}", pred, ref, (1.0, 1.0, 2.0)))
    post = decide_postprocess(cases, {"organ": 1})
    rules = post.classes["organ"]
    assert rules.largest_component and rules.fill_holes
    effect = post.validation["classes"]["organ"]
    assert effect["dice_after"] > effect["dice_before"]
    assert effect["hd95_mm_after"] <= effect["hd95_mm_before"]


def test_rules_that_do_not_help_are_not_kept() -> None:
    cases = []
    for k in range(2):
        ref = np.zeros((40, 40, 12), dtype=np.uint8)
        ref[2:12, 2:12, 2:8] = 1
        ref[25:38, 25:38, 2:8] = 1  # two real components: keeping one would hurt
        pred = ref.copy()
        pred[2, 5 + k, 4] = 0  # an error on the border: no rule can fix it
        cases.append(ValidationCase(f"c{k}", pred, ref, (1.0, 1.0, 1.0)))
    post = decide_postprocess(cases, {"organ": 1})
    assert not post.classes["organ"].largest_component
    assert not post.active
    tried = {t["rule"]: t["kept"] for t in post.validation["classes"]["organ"]["tried"]}
    assert tried["largest_component"] is False and tried["fill_holes"] is False
    effect = post.validation["classes"]["organ"]
    assert effect["dice_after"] == effect["dice_before"]
