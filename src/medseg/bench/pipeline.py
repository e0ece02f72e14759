"""The bench pipeline in one function: run, gates, report, baseline, exit policy.

``medseg bench`` and ``medseg demo`` both call :func:`bench_pipeline`; it returns a
:class:`BenchRun` and prints nothing (the CLI renders the tables and lines).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.atomic import check_parent_exists
from medseg.bench.gate_spec import GateSpec
from medseg.bench.gates import evaluate_gates, gate_warnings, update_baseline
from medseg.bench.report import write_report
from medseg.bench.results import BenchResults, GateResult, VariantResult
from medseg.bench.runner import BenchOptions, run_bench
from medseg.errors import ConfigError
from medseg.outputs import Input, Output, guard, write_marker

__all__ = ["BenchRun", "bench_pipeline", "check_bench_outputs"]


@dataclass(frozen=True)
class BenchRun:
    """What :func:`bench_pipeline` did.

    Attributes:
        results: the measured rows with their gate results.
        warnings: why some gates are skipped as a whole (one line each).
        report: the report folder written, or ``None``.
        baseline_written: the baseline file written (``update_baseline``), or ``None``.
    """

    results: BenchResults
    warnings: tuple[str, ...] = ()
    report: Path | None = None
    baseline_written: Path | None = None

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return self.results.failed_gates

    @property
    def failed_variants(self) -> tuple[VariantResult, ...]:
        """Variants that were asked for and could run here but failed (status ``error``)."""
        return tuple(r for r in self.results.rows if r.status == "error")

    @property
    def passed(self) -> bool:
        """No gate failed and no variant failed to run."""
        return not self.failed_gates and not self.failed_variants

    @property
    def exit_code(self) -> int:
        """The exit policy: 0 passed, 1 a gate or a variant failed (bad input raises: 2)."""
        return 0 if self.passed else 1

    def summary(self) -> str:
        """One line: how many gates and variants failed."""
        return (
            f"{len(self.failed_gates)} of {len(self.results.gates)} gate(s) failed, "
            f"{len(self.failed_variants)} variant(s) failed to run"
        )

    def __bool__(self) -> bool:
        return self.passed


def check_bench_outputs(
    report: Path | None, baseline: Path | None, update_baseline: bool = False
) -> None:
    """The checks of ``--report`` and ``--baseline`` made before any measurement.

    Raises:
        ConfigError: ``--update-baseline`` without ``--baseline``, a report path that is a
            file, a baseline path that is a folder, a missing parent folder.
    """
    if update_baseline and baseline is None:
        raise ConfigError("--update-baseline writes the --baseline file: pass --baseline PATH")
    if report is not None:
        check_parent_exists(report)
        if report.exists() and not report.is_dir():
            raise ConfigError(f"--report {report} is a file; expected a folder")
    if update_baseline and baseline is not None:
        check_parent_exists(baseline)
        if baseline.is_dir():
            raise ConfigError(f"--baseline {baseline} is a folder; expected a .json file path")


def _check_something_ran(results: BenchResults, backends: tuple[str, ...]) -> None:
    """A bench that measured nothing, or skipped a backend asked for by name, is not a pass."""
    ok = [r for r in results.rows if r.status == "ok"]
    if not ok:
        reasons = sorted({f"{r.backend}: {r.reason}" for r in results.rows})
        raise ConfigError(f"nothing was measured ({'; '.join(reasons) or 'no variant'})")
    if backends != ("auto",):
        for name in backends:
            rows = [r for r in results.rows if r.backend == name]
            if rows and all(r.status == "skipped" for r in rows):
                raise ConfigError(f"--backends {name} was asked for but skipped: {rows[0].reason}")


def bench_pipeline(
    bundle: str | Path,
    data: str | Path,
    options: BenchOptions,
    spec: GateSpec | None = None,
    *,
    baseline: Path | None = None,
    update_baseline_file: bool = False,
    report: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
    advance: Callable[[str], None] | None = None,
) -> BenchRun:
    """Measure a bundle, evaluate the gates, write the report and (optionally) the baseline.

    Args:
        bundle: the bundle folder.
        data: an nnU-Net raw dataset with the bundle's classes.
        options: what to measure (see :class:`~medseg.bench.runner.BenchOptions`).
        spec: the gates (``None``: none).
        baseline: a previous ``results.json`` to compare against; with
            ``update_baseline_file`` the file this run is written to instead.
        update_baseline_file: write this run as the new ``baseline``.
        report: folder for ``results.json``, ``report.md``, ``junit.xml`` and the PNGs; it
            appears only once the run has worked.
        log: receives one line per finished variant.
        advance: progress descriptions.

    Returns:
        The run; :attr:`BenchRun.exit_code` is the exit policy (0 passed, 1 failed).

    Raises:
        ConfigError / DatasetError: bad input, checked before any measurement where it can
            be; nothing was measured; a backend asked for by name was skipped.
    """
    spec = spec if spec is not None else GateSpec()
    check_bench_outputs(report, baseline, update_baseline_file)
    guard(
        [
            Output("report", None if report is None else Path(report), "bench-report", "update"),
            Output("baseline", baseline if update_baseline_file else None, "json", "update"),
        ],
        [
            Input("bundle", Path(bundle)),
            Input("data", Path(data)),
            Input("baseline", None if update_baseline_file else baseline),
        ],
    )
    base = None
    if baseline is not None and not update_baseline_file:
        base = BenchResults.load(baseline)
    with tempfile.TemporaryDirectory(prefix="medseg-bench-overlays-") as overlays:
        results = run_bench(
            bundle,
            data,
            options,
            overlay_dir=Path(overlays) if report is not None and options.overlays else None,
            log=log,
            advance=advance,
        )
        _check_something_ran(results, options.backends)
        results = results.with_gates(evaluate_gates(results, spec, base))
        warnings = gate_warnings(results, spec, base)
        if report is not None:  # the folder appears only once the run has worked
            report.mkdir(exist_ok=True)
            write_marker(report, "bench-report", "medseg bench")
            for png in Path(overlays).glob("*.png"):
                shutil.copyfile(png, report / png.name)
            write_report(results, report)
    written = None
    if update_baseline_file and baseline is not None:
        written = update_baseline(results, baseline)
    return BenchRun(results, warnings, report, written)
