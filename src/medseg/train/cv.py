"""Cross-validation summary over the runs of ``medseg train --fold K --folds N``.

Each run directory's ``validation.json`` (written at the end of a planned run: Dice and HD95
per class per validation case of the best checkpoint) gives one fold row: the mean over
that fold's cases. The summary is the mean and standard deviation of the fold rows per class,
and the pooled mean over every validation case. Runs must come from one dataset
(fingerprint), one plan and one number of folds, each fold at most once; missing folds are
reported, not invented.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError

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


def _read(run: Path) -> dict[str, Any]:
    path = Path(run) / "validation.json"
    if not path.is_file():
        raise ConfigError(
            f"{run} holds no validation.json; pass run directories of finished planned runs "
            "(medseg train DATASET --out RUN --fold K)"
        )
    try:
        data = json.loads(path.read_text())
        _ = data["fold"], data["folds"], data["cases"], data["fingerprint"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a medseg validation record: {exc}") from exc
    if data["fold"] is None:
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
    for run, rec in records:
        if rec["fold"] in seen:
            raise ConfigError(f"fold {rec['fold']} is given twice: {seen[rec['fold']]} and {run}")
        seen[int(rec["fold"])] = run
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
