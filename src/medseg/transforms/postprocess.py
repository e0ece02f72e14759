"""Connected-component post-processing of label maps, per class (scipy.ndimage).

nnU-Net decides on the validation folds whether keeping only the largest connected component
of a class helps, and applies that rule at inference. Here each class may have three rules,
each decided on validation at export (:mod:`medseg.export.postprocess`) and recorded in the
bundle manifest, then applied by the runtime:

- ``largest_component``: keep the largest 3D connected component of the class;
- ``min_island_mm3``: remove components smaller than this volume (mm³);
- ``fill_holes``: fill cavities of the class that are background (never other classes).

Removed voxels become background (0). Connectivity is full (26-neighbourhood in 3D), so
diagonal contact keeps a piece. numpy + scipy only: the runtime imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, StrictBool, StrictFloat, parse

__all__ = ["ClassRules", "Postprocess", "apply_class_rules", "apply_postprocess"]

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class ClassRules:
    """Post-processing of one class.

    Attributes:
        largest_component: keep only the largest connected component.
        min_island_mm3: remove components smaller than this (mm³); ``None``: keep all.
        fill_holes: fill enclosed background cavities of the class.
    """

    __pydantic_config__ = FORBID_EXTRA

    largest_component: StrictBool = False
    min_island_mm3: StrictFloat | None = None
    fill_holes: StrictBool = False

    def __post_init__(self) -> None:
        v = self.min_island_mm3
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"postprocess min_island_mm3 {v} must be a positive volume in mm³")

    @property
    def active(self) -> bool:
        return self.largest_component or self.min_island_mm3 is not None or self.fill_holes

    def to_dict(self) -> dict[str, Any]:
        return {
            "largest_component": self.largest_component,
            "min_island_mm3": self.min_island_mm3,
            "fill_holes": self.fill_holes,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ClassRules:
        """Validate (:func:`medseg.schema.parse`); errors name ``where`` and the key."""
        return parse(cls, data, where)


@dataclass(frozen=True)
class Postprocess:
    """Per-class rules (class name -> :class:`ClassRules`) and what they did on validation.

    Attributes:
        classes: rules of the classes that have any; other classes are left alone.
        validation: the measured effect, as recorded at export (Dice and HD95 per class before
            and after, cases used); informative only.
    """

    classes: dict[str, ClassRules] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return any(r.active for r in self.classes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": {n: r.to_dict() for n, r in self.classes.items()},
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, data: Any, class_names: Sequence[str], where: str) -> Postprocess:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be an object with 'classes' (and 'validation')")
        rules = data.get("classes", {})
        if not isinstance(rules, dict):
            raise ConfigError(f"{where}.classes must map class names to rules")
        unknown = sorted(set(rules) - set(class_names))
        if unknown:
            raise ConfigError(
                f"{where}.classes has unknown classes {unknown}; the bundle's classes are "
                f"{list(class_names)}"
            )
        validation = data.get("validation", {})
        if not isinstance(validation, dict):
            raise ConfigError(f"{where}.validation must be an object")
        parsed = {n: ClassRules.from_dict(r, f"{where}.classes.{n}") for n, r in rules.items()}
        return cls(parsed, validation)


def apply_class_rules(
    labels: np.ndarray, value: int, rules: ClassRules, spacing: Sequence[float]
) -> np.ndarray:
    """Apply one class's rules to an ``(X, Y, Z)`` label map in place; returns it.

    Args:
        labels: integer label map (modified).
        value: the class's label value.
        rules: what to do.
        spacing: voxel sizes in mm (for ``min_island_mm3``).
    """
    if not rules.active:
        return labels
    mask = labels == value
    if rules.largest_component or rules.min_island_mm3 is not None:
        components, count = ndimage.label(mask, structure=_STRUCTURE)
        if count > 0:
            sizes = np.bincount(components.ravel())[1:]
            keep = np.ones(count, dtype=bool)
            if rules.largest_component:
                keep &= np.arange(count) == int(np.argmax(sizes))
            if rules.min_island_mm3 is not None:
                voxel = float(np.prod([float(s) for s in spacing]))
                keep &= sizes * voxel >= rules.min_island_mm3
            drop = np.concatenate([[False], ~keep])[components]
            labels[drop] = 0
            mask &= ~drop
    if rules.fill_holes and mask.any():
        filled = ndimage.binary_fill_holes(mask, structure=_STRUCTURE)
        labels[filled & (labels == 0)] = value
    return labels


def apply_postprocess(
    labels: np.ndarray,
    postprocess: Postprocess,
    classes: Mapping[str, int],
    spacing: Sequence[float] | None,
) -> np.ndarray:
    """Apply every class's rules to a copy of ``(X, Y, Z)`` ``labels`` (classes in label order).

    Args:
        labels: integer label map.
        postprocess: the bundle's rules.
        classes: class name -> label value (the manifest's classes).
        spacing: voxel sizes in mm; ``None``: 1 mm voxels.
    """
    if labels.ndim != 3:
        raise ConfigError(f"post-processing expects an (X, Y, Z) label map, got {labels.shape}")
    out = labels.copy()
    spacing = (1.0, 1.0, 1.0) if spacing is None else spacing
    for name, value in sorted(classes.items(), key=lambda kv: kv[1]):
        rules = postprocess.classes.get(name)
        if rules is not None:
            apply_class_rules(out, value, rules, spacing)
    return out
