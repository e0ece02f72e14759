"""Cross-validation summary over the runs of ``medseg train --fold K --folds N``.

Each run directory's ``validation.json`` (written at the end of a planned run: Dice and HD95
per class per validation case of the best checkpoint) gives one fold row: the mean over
that fold's cases. The summary is the mean and standard deviation of the fold rows per class,
and the pooled mean over every validation case. Runs must come from one dataset
(fingerprint), one plan and one number of folds, each fold at most once; missing folds are
reported, not invented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.schema import StrictFloat, StrictInt, StrictStr, load_json, parse

__all__ = ["CVSummary", "FoldResult", "summarise_runs"]


@dataclass(frozen=True)
class FoldResult:
    """One run's validation: per class mean Dice and HD95 (mm) over its validation cases."""

    run: Path
    fold: int
    cases: tuple[str, ...]
    dice: dict[str, float]
    hd95: dict[str, float | None]
    per_case: dict[str, dict[str, dict[str, float | None]]]


@dataclass(frozen=True)
class CVSummary:
    """Per-fold and mean Dice/HD95 per class.

    Attributes:
        folds: the number of folds the runs were made with.
        results: one per run, sorted by fold.
        missing: folds in ``0..folds-1`` without a run.
        mean_dice / std_dice: per class, over folds.
        mean_hd95 / std_hd95: per class, over folds (``None`` if no fold has HD95).
        pooled_dice / pooled_hd95: per class, over every validation case of every fold.
    """

    dataset: str
    folds: int
    classes: tuple[str, ...]
    results: tuple[FoldResult, ...]
    missing: tuple[int, ...]
    mean_dice: dict[str, float]
    std_dice: dict[str, float]
    mean_hd95: dict[str, float | None]
    std_hd95: dict[str, float | None]
    pooled_dice: dict[str, float]
    pooled_hd95: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "dataset": self.dataset,
            "folds": self.folds,
            "missing_folds": list(self.missing),
            "classes": list(self.classes),
            "per_fold": [
                {
                    "fold": r.fold,
                    "run": str(r.run),
                    "cases": list(r.cases),
                    "dice": r.dice,
                    "hd95": r.hd95,
                }
                for r in self.results
            ],
            "mean": {"dice": self.mean_dice, "hd95": self.mean_hd95},
            "std": {"dice": self.std_dice, "hd95": self.std_hd95},
            "pooled": {"dice": self.pooled_dice, "hd95": self.pooled_hd95},
        }


@dataclass(frozen=True)
class CaseScore:
    """One class of one validation case in ``validation.json``: Dice in [0, 1], HD95 in mm."""

    dice: StrictFloat
    hd95: StrictFloat | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dice) and 0.0 <= self.dice <= 1.0):
            raise ConfigError(f"dice {self.dice} must be a finite number in 0..1")
        if self.hd95 is not None and (math.isnan(self.hd95) or self.hd95 < 0):
            raise ConfigError(f"hd95 {self.hd95} must be a non-negative number of mm or null")


@dataclass(frozen=True)
class ValidationRecord:
    """The keys of ``validation.json`` that cv-summary reads (others are kept, not read)."""

    fold: StrictInt | None
    folds: StrictInt | None
    cases: dict[StrictStr, dict[StrictStr, CaseScore]]
    fingerprint: StrictStr | None = None
    plan_fingerprint: StrictStr | None = None
    dataset: StrictStr | None = None

    def __post_init__(self) -> None:
        if self.fold is None:
            return
        if self.folds is None or self.folds < 2:
            raise ConfigError(f"folds {self.folds} must be an integer >= 2 with a fold")
        if not 0 <= self.fold < self.folds:
            raise ConfigError(
                f"fold {self.fold} must be in 0..{self.folds - 1} (folds {self.folds})"
            )
        if not self.cases:
            raise ConfigError("cases is empty; a fold validates at least one case")
        classes = [tuple(scores) for scores in self.cases.values()]
        if any(c != classes[0] for c in classes):
            raise ConfigError("cases: every case must list the same classes")


_RECORD_KEYS = ("fold", "folds", "cases", "fingerprint", "plan_fingerprint", "dataset")


def _read(run: Path) -> dict[str, Any]:
    path = Path(run) / "validation.json"
    if not path.is_file():
        raise ConfigError(
            f"{run} holds no validation.json; pass run directories of finished planned runs "
            "(medseg train DATASET --out RUN --fold K)"
        )
    data = load_json(path, "validation record")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a medseg validation record (not a JSON object)")
    missing = [k for k in ("fold", "folds", "cases", "fingerprint") if k not in data]
    if missing:
        raise ConfigError(f"{path} is not a medseg validation record: no {', '.join(missing)}")
    record = parse(ValidationRecord, {k: data[k] for k in _RECORD_KEYS if k in data}, str(path))
    if record.fold is None:
        raise ConfigError(
            f"{run} was validated by slices of a single case, not by a case-level fold; "
            "cv-summary needs runs trained with --fold K --folds N on several cases"
        )
    return dict(data)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _std(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(kept)) if kept else None


def summarise_runs(runs: Sequence[Path]) -> CVSummary:
    """Read the runs' ``validation.json`` files and summarise them (see the module docstring).

    Raises:
        ConfigError: no runs, a run without ``validation.json``, runs of different datasets,
            plans or numbers of folds, one fold given twice.
    """
    if not runs:
        raise ConfigError("cv-summary needs at least one run directory")
    records = [(Path(r), _read(Path(r))) for r in runs]
    first_run, first = records[0]
    for run, rec in records[1:]:
        for key in ("fingerprint", "plan_fingerprint", "folds"):
            if rec.get(key) != first.get(key):
                raise ConfigError(
                    f"{run} has {key} {rec.get(key)!r} but {first_run} has {first.get(key)!r}; "
                    "a cross-validation summary needs runs of one dataset, plan and fold count"
                )
    seen: dict[int, Path] = {}
    case_fold: dict[str, Path] = {}
    for run, rec in records:
        if rec["fold"] in seen:
            raise ConfigError(f"fold {rec['fold']} is given twice: {seen[rec['fold']]} and {run}")
        seen[int(rec["fold"])] = run
        for case in rec["cases"]:
            if case in case_fold:
                raise ConfigError(
                    f"case {case} is validated in two folds ({case_fold[case]} and {run}); "
                    "the folds of one cross-validation split the cases"
                )
            case_fold[case] = run
    classes = tuple(next(iter(first["cases"].values())).keys()) if first["cases"] else ()
    results = []
    for run, rec in sorted(records, key=lambda x: int(x[1]["fold"])):
        per_case = rec["cases"]
        results.append(
            FoldResult(
                run=run,
                fold=int(rec["fold"]),
                cases=tuple(per_case),
                dice={
                    c: float(_mean([v[c]["dice"] for v in per_case.values()]) or 0.0)
                    for c in classes
                },
                hd95={c: _mean([v[c]["hd95"] for v in per_case.values()]) for c in classes},
                per_case=per_case,
            )
        )
    folds = int(first["folds"])
    every_case = [v for r in results for v in r.per_case.values()]
    return CVSummary(
        dataset=str(first.get("dataset", "")),
        folds=folds,
        classes=classes,
        results=tuple(results),
        missing=tuple(k for k in range(folds) if k not in seen),
        mean_dice={c: float(_mean([r.dice[c] for r in results]) or 0.0) for c in classes},
        std_dice={c: float(_std([r.dice[c] for r in results]) or 0.0) for c in classes},
        mean_hd95={c: _mean([r.hd95[c] for r in results]) for c in classes},
        std_hd95={c: _std([r.hd95[c] for r in results]) for c in classes},
        pooled_dice={c: float(_mean([v[c]["dice"] for v in every_case]) or 0.0) for c in classes},
        pooled_hd95={c: _mean([v[c]["hd95"] for v in every_case]) for c in classes},
    )
