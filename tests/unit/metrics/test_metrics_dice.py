"""The one Dice path: compute_dice and DiceAccumulator, their empty-mask policy, and the
callers that must use them instead of counting tp/fp/fn themselves."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.metrics import DiceAccumulator, compute_confusion, compute_dice, dice

SRC = Path(__file__).resolve().parents[3] / "src" / "medseg"
CLASSES = {"a": 1, "b": 2, "c": 3}


def _maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 3, size=(6, 20, 24)).astype(np.uint8)  # class 3 absent
    pred = ref.copy()
    flip = rng.random(ref.shape) < 0.2
    pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
    return pred, ref


def test_compute_dice_matches_the_binary_dice_and_applies_the_policy() -> None:
    pred, ref = _maps()
    for empty in ("one", "nan"):
        scores = compute_dice(pred, ref, CLASSES, empty=empty)
        for name in ("a", "b"):
            assert scores[name] == pytest.approx(dice(pred == CLASSES[name], ref == CLASSES[name]))
    assert compute_dice(pred, ref, CLASSES, empty="one")["c"] == 1.0
    assert math.isnan(compute_dice(pred, ref, CLASSES, empty="nan")["c"])
    only_pred = pred.copy()
    only_pred[0, 0, 0] = 3
    for empty in ("one", "nan"):  # exactly one empty: 0.0 under both policies
        assert compute_dice(only_pred, ref, CLASSES, empty=empty)["c"] == 0.0
    with pytest.raises(ConfigError, match="empty-mask policy 'skip'"):
        compute_dice(pred, ref, CLASSES, empty="skip")  # type: ignore[arg-type]


def test_accumulator_pools_counts_and_leaves_undefined_classes_out_of_the_mean() -> None:
    pairs = [_maps(seed) for seed in range(3)]
    acc = DiceAccumulator(CLASSES, empty="nan")
    for pred, ref in pairs:
        acc.update(pred, ref)
    pooled = compute_dice(
        np.concatenate([p for p, _ in pairs]), np.concatenate([r for _, r in pairs]), CLASSES
    )
    aggregated = acc.pooled_dice()
    assert aggregated["a"] == pytest.approx(pooled["a"]) and math.isnan(aggregated["c"])
    assert acc.mean() == pytest.approx((pooled["a"] + pooled["b"]) / 2)
    counts = compute_confusion(*pairs[0], CLASSES)["a"]
    assert counts.tp + counts.fp + counts.fn + counts.tn == pairs[0][0].size
    assert math.isnan(DiceAccumulator(CLASSES, empty="nan").mean())


def test_the_accumulator_matches_monai_dice_metric() -> None:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    pred, ref = _maps(1)
    one_hot = [torch.from_numpy(np.stack([m == v for v in (1, 2)])[None]) for m in (pred, ref)]
    metric = monai_metrics.DiceMetric(include_background=True, reduction="none")
    expected = metric(one_hot[0], one_hot[1])[0].numpy()
    scores = compute_dice(pred, ref, {"a": 1, "b": 2})
    np.testing.assert_allclose([scores["a"], scores["b"]], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "module",
    ["bench/evaluation.py", "cli/infer.py", "train/loop.py", "export/accuracy.py"],
)
def test_no_caller_counts_its_own_dice(module: str) -> None:
    """Dice shown by bench, infer --reference, training and export comes from one path."""
    text = (SRC / module).read_text()
    assert not re.search(r"2 \* int\(|count_nonzero\(p & r\)|\(pred & ref\)\.sum", text), module
