"""Planning: a dataset's fingerprint, the plan made from it, its folds and its prepared cases.

:mod:`~medseg.plan.fingerprint` (spacing, shapes, intensity statistics of a dataset),
:mod:`~medseg.plan.planner` (``plans.json``: patch, spacing, normalisation, slice axis, batch),
:mod:`~medseg.plan.device` (the training device a plan is made for),
:mod:`~medseg.plan.folds` (cross-validation splits) and :mod:`~medseg.plan.cases` (the cases
prepared as the plan says, for training and validation).
"""

from __future__ import annotations

__all__: list[str] = []
