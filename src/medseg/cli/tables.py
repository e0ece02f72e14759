"""Rich tables of what the library returns: the bench results and gates, the dataset check.

The library returns strings and dataclasses (``medseg.bench.report``'s cells,
``medseg.data.check.DatasetReport``); this module is where they become terminal tables. The
bench tables put every cell in a :class:`rich.text.Text`, so ``[...]`` in a bundle name, gate
name or skip reason is printed as is, never read as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from medseg.bench.report import (
    COLUMNS,
    GATE_COLUMNS,
    TEXT_COLUMNS,
    gate_rows,
    results_rows,
    results_title,
    skip_reasons,
)
from medseg.bench.results import BenchResults, GateResult
from medseg.data.check import DatasetReport

__all__ = ["dataset_report", "gates_table", "results_table"]


def results_table(results: BenchResults) -> Table:
    """The benchmark table (Ultralytics style); skip/error reasons in the caption."""
    reasons = skip_reasons(results)
    caption = Text("\n".join(reasons)) if reasons else None
    table = Table(title=Text(results_title(results)), caption=caption, caption_justify="left")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < TEXT_COLUMNS else "right", no_wrap=True)
    for cells in results_rows(results):
        table.add_row(*(Text(c) for c in cells))
    return table


def gates_table(gates: Sequence[GateResult]) -> Table:
    """One row per gate: Gate, Measured, Allowed, Result."""
    table = Table(title="gates")
    for col in GATE_COLUMNS:
        table.add_column(
            col, justify="right" if col in ("Measured", "Allowed") else "left", no_wrap=True
        )
    for cells in gate_rows(gates):
        table.add_row(*(Text(c) for c in cells))  # Text: "[...]" in gate names is not markup
    return table


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _fmt3(value: tuple[float, float, float] | None) -> str:
    return "-" if value is None else " x ".join(f"{v:.3g}" for v in value)


def dataset_report(report: DatasetReport, max_cases: int = 20) -> Group:
    """Rich tables summarising a dataset check: overview, labels, intensities, cases.

    Args:
        report: what :func:`medseg.data.check.check_dataset` returned.
        max_cases: rows of the per-case table; further cases are counted in its caption.

    Returns:
        A ``rich.console.Group`` to pass to ``Console.print``.
    """
    overview = Table(title=f"Dataset {report.name}", show_header=False)
    overview.add_column("field", style="bold")
    overview.add_column("value")
    overview.add_row("folder", str(report.root))
    overview.add_row("cases", f"{report.num_train_cases} train, {report.num_test_cases} test")
    overview.add_row("channels", ", ".join(report.channel_names))
    overview.add_row("spacing min (mm)", _fmt3(report.spacing_min))
    overview.add_row("spacing median (mm)", _fmt3(report.spacing_median))
    overview.add_row("spacing max (mm)", _fmt3(report.spacing_max))

    labels = Table(title="Labels (voxels over all labelled cases)")
    for name in ("value", "class", "voxels", "share"):
        labels.add_column(name, justify="left" if name == "class" else "right")
    total = sum(report.label_voxels.values())
    for name, value in report.labels.items():
        count = report.label_voxels.get(name, 0)
        share = f"{100.0 * count / total:.2f}%" if total else "-"
        labels.add_row(str(value), name, f"{count:,}", share)

    intensities = Table(title="Foreground intensities per channel (percentiles on a sample)")
    for name in ("channel", "min", "p0.5", "median", "p99.5", "max", "samples"):
        intensities.add_column(name, justify="left" if name == "channel" else "right")
    for s in report.intensities:
        intensities.add_row(
            s.channel,
            _fmt(s.min),
            _fmt(s.p0_5),
            _fmt(s.median),
            _fmt(s.p99_5),
            _fmt(s.max),
            f"{s.num_samples:,}",
        )

    hidden = len(report.cases) - max_cases
    caption = f"... and {hidden} more cases" if hidden > 0 else None
    cases = Table(title="Cases", caption=caption)
    for name in ("case", "subset", "shape (voxels)", "spacing (mm)", "label"):
        cases.add_column(name)
    for c in report.cases[:max_cases]:
        cases.add_row(
            c.case_id,
            c.subset,
            " x ".join(map(str, c.shape)),
            _fmt3(c.spacing),
            "yes" if c.labelled else "no",
        )
    return Group(overview, labels, intensities, cases)
