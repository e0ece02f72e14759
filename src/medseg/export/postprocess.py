"""Decide the per-class post-processing on the validation cases (nnU-Net's rule, extended).

For each class, on the FP32 validation predictions (each case on its own grid), rules are
tried one after the other and each is kept only if it raises the mean per-case Dice of that
class (by more than :data:`MIN_GAIN`):

1. keep the largest connected component;
2. otherwise, remove islands below a size (the best of a few candidate sizes: fixed volumes
   and fractions of the class's median reference volume);
3. fill background holes of the class.

Rules of one class only move that class's voxels to or from background, so classes are
decided independently. The effect on Dice and HD95 (mean per class over the cases) is
recorded with the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from medseg.events import Event, EventSink
from medseg.metrics import compute_case_metrics, confusion_counts, dice_of_counts
from medseg.transforms.postprocess import ClassRules, Postprocess, apply_class_rules

__all__ = ["MIN_GAIN", "ValidationCase", "decide_postprocess"]

#: Least gain in mean validation Dice (0..1) for a rule to be kept.
MIN_GAIN = 1e-4
#: Fixed candidate island sizes in mm³, plus fractions of the median reference volume.
ISLAND_MM3 = (10.0, 100.0, 1000.0)
ISLAND_FRACTIONS = (0.01, 0.05, 0.2)


@dataclass(frozen=True)
class ValidationCase:
    """One validation case: predicted and reference ``(X, Y, Z)`` labels on the same grid.

    Attributes:
        case_id: the case.
        pred: predicted labels (network output, no post-processing).
        ref: reference labels.
        spacing: voxel sizes in mm.
        mask: optional boolean ``(X, Y, Z)`` of the evaluated voxels (slices of a
            slice-level split); ``None``: the whole volume.
    """

    case_id: str
    pred: np.ndarray
    ref: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None = None


def _class_dice(case: ValidationCase, labels: np.ndarray, value: int) -> float:
    pred, ref = labels == value, case.ref == value
    if case.mask is not None:
        pred, ref = pred & case.mask, ref & case.mask
    return dice_of_counts(confusion_counts(pred, ref), empty="nan")  # empty: left out


def _mean_dice(
    cases: Sequence[ValidationCase], value: int, rules: ClassRules | None
) -> tuple[float, list[float]]:
    scores = []
    for case in cases:
        labels = (
            case.pred
            if rules is None
            else apply_class_rules(case.pred.copy(), value, rules, case.spacing)
        )
        scores.append(_class_dice(case, labels, value))
    finite = [s for s in scores if np.isfinite(s)]
    return (float(np.mean(finite)) if finite else float("nan")), scores


def _island_candidates(cases: Sequence[ValidationCase], value: int) -> list[float]:
    volumes = [float(np.count_nonzero(c.ref == value)) * float(np.prod(c.spacing)) for c in cases]
    positive = [v for v in volumes if v > 0]
    fractions = [f * float(np.median(positive)) for f in ISLAND_FRACTIONS] if positive else []
    return sorted({round(v, 3) for v in (*ISLAND_MM3, *fractions) if v > 0})


def _decide_class(
    cases: Sequence[ValidationCase], value: int
) -> tuple[ClassRules, list[dict[str, object]]]:
    current = ClassRules()
    best, _ = _mean_dice(cases, value, None)
    tried: list[dict[str, object]] = []

    def attempt(rules: ClassRules, what: str) -> bool:
        nonlocal current, best
        score, _ = _mean_dice(cases, value, rules)
        kept = bool(np.isfinite(score) and np.isfinite(best) and score > best + MIN_GAIN)
        tried.append({"rule": what, "dice": score, "kept": kept})
        if kept:
            current, best = rules, score
        return kept

    if not attempt(replace(current, largest_component=True), "largest_component"):
        scored = []
        for size in _island_candidates(cases, value):
            rules = replace(current, min_island_mm3=size)
            scored.append((_mean_dice(cases, value, rules)[0], size))
        finite = [s for s in scored if np.isfinite(s[0])]
        if finite:
            _, size = max(finite)
            attempt(replace(current, min_island_mm3=size), f"min_island_mm3={size:g}")
    attempt(replace(current, fill_holes=True), "fill_holes")
    return current, tried


def _hd95(cases: Sequence[ValidationCase], labels: list[np.ndarray], value: int) -> float | None:
    values = []
    for case, lab in zip(cases, labels, strict=True):
        pred, ref = lab, case.ref
        if case.mask is not None:  # surfaces of the evaluated slices only
            pred, ref = np.where(case.mask, pred, 0), np.where(case.mask, ref, 0)
        if not (np.any(pred == value) or np.any(ref == value)):
            continue
        m = compute_case_metrics(pred, ref, {"c": value}, case.spacing).classes["c"]
        values.append(m.hd95_mm)
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def decide_postprocess(
    cases: Sequence[ValidationCase],
    classes: Mapping[str, int],
    on_event: EventSink | None = None,
) -> Postprocess:
    """Per-class rules that improve the validation Dice, and their measured effect.

    Args:
        cases: FP32 validation predictions and references, each on its own grid.
        classes: class name -> value of the foreground classes.
        on_event: one ``postprocess`` info event per class (``data``: its measured effect).

    Returns:
        A :class:`Postprocess` with a rule set for every class (possibly empty) and
        ``validation`` = ``{"cases", "rule", per class: dice/HD95 before and after, tried}``.
    """
    rules: dict[str, ClassRules] = {}
    effect: dict[str, dict[str, object]] = {}
    for name, value in classes.items():
        chosen, tried = _decide_class(cases, value)
        before, _ = _mean_dice(cases, value, None)
        after, _ = _mean_dice(cases, value, chosen)
        raw = [c.pred for c in cases]
        processed = [apply_class_rules(c.pred.copy(), value, chosen, c.spacing) for c in cases]
        hd_before = _hd95(cases, raw, value)
        hd_after = _hd95(cases, processed, value) if chosen.active else hd_before
        rules[name] = chosen
        effect[name] = {
            "dice_before": before,
            "dice_after": after,
            "hd95_mm_before": hd_before,
            "hd95_mm_after": hd_after,
            "tried": tried,
        }
        if on_event is not None:
            kept = [t["rule"] for t in tried if t["kept"]] or ["none"]
            hd = (
                f", HD95 {hd_before:.2f} -> {hd_after:.2f} mm"
                if hd_before is not None and hd_after is not None
                else ""
            )
            on_event(
                Event(
                    "postprocess",
                    "info",
                    f"post-processing {name}: {', '.join(map(str, kept))}; validation Dice "
                    f"{before:.4f} -> {after:.4f}{hd}",
                    {"class": name, **effect[name]},
                )
            )
    validation = {
        "cases": [c.case_id for c in cases],
        "rule": f"kept only if it raises the mean per-case validation Dice by > {MIN_GAIN:g}",
        "classes": effect,
    }
    return Postprocess(rules, validation)
