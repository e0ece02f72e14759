"""``medseg bench`` / ``medseg-bench``: accuracy versus latency of a bundle, with CI gates.

Exit codes: 0 every gate passed, 1 a gate failed (each failure on one line, measured vs
allowed), 2 a usage or input error.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from medseg.atomic import check_parent_exists
from medseg.cli.common import DEBUG_OPTION, console, err_console, handle_errors
from medseg.errors import ConfigError, GateFailedError

if TYPE_CHECKING:
    from medseg.bench.results import BenchResults

__all__ = ["bench", "split_list"]


def split_list(text: str, option: str) -> tuple[str, ...]:
    """``"fp32, int8"`` -> ``("fp32", "int8")``; an empty list is a ConfigError."""
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise ConfigError(f"{option} needs at least one value")
    return items


def _batches(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in split_list(text, "--batch"))
    except ValueError:
        raise ConfigError(f"--batch {text!r} must be comma-separated integers, e.g. 1,8") from None


def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder (medseg export output)."),
    data: Path = typer.Option(..., "--data", help="nnU-Net raw dataset with the bundle's labels."),
    split: str = typer.Option(
        "val", "--split", help="val (the bundle's validation slices) | test | all"
    ),
    backends: str = typer.Option(
        "auto", "--backends", help="auto | comma list of onnxruntime, openvino, tensorrt, torch"
    ),
    precisions: str = typer.Option(
        "fp32,fp16,int8", "--precisions", help="Comma list (bf16: OpenVINO)."
    ),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes to time, comma list."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls before timing."),
    iters: int = typer.Option(20, "--iters", help="Timed calls per repeat."),
    repeats: int = typer.Option(3, "--repeats", help="Timing repeats (medians compared)."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads (ORT, OpenVINO, torch)."
    ),
    max_cases: int | None = typer.Option(None, "--max-cases", help="Evaluate at most N cases."),
    gate: Path | None = typer.Option(None, "--gate", help="Gates file (TOML)."),
    max_dice_drop: list[str] = typer.Option(
        [], "--max-dice-drop", help="PRECISION=PTS, e.g. int8=1.0 (repeatable)."
    ),
    min_dice: float | None = typer.Option(None, "--min-dice", help="Mean Dice floor, 0..1."),
    max_p95_ms: list[str] = typer.Option(
        [], "--max-p95-ms", help="BACKEND.PRECISION[.bN]=MS, e.g. onnxruntime.fp32=900."
    ),
    baseline: Path | None = typer.Option(None, "--baseline", help="Baseline results.json."),
    max_latency_regression: float | None = typer.Option(
        None, "--max-latency-regression", help="Allowed % slower than the baseline."
    ),
    max_dice_regression: float | None = typer.Option(
        None, "--max-dice-regression", help="Allowed Dice pts below the baseline."
    ),
    update_baseline: bool = typer.Option(
        False, "--update-baseline", help="Write this run as the new --baseline file."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Folder for results.json, report.md, junit.xml, PNGs."
    ),
    tta: bool = typer.Option(
        False, "--tta", help="Mirroring test-time augmentation (sliding-window bundles)."
    ),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Skip the bundle's per-class post-processing."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Accuracy-versus-latency table of a bundle on a dataset, with CI gates.

    Every available (backend, precision, batch) is measured through the runtime: Dice,
    HD95, Dice drop vs FP32, p50/p95/p99 ms per batch, slices/s, seconds per volume.
    Exit 0: all gates passed; 1: a gate failed; 2: bad input.

    Examples:
        medseg bench bundle --data /data/Ds001 --report bench-report
        medseg-bench bundle --data ds --gate benchmarks/gates/ci-cpu.toml --baseline base.json
        medseg bench bundle --data ds --max-dice-drop int8=1.0 --max-p95-ms tensorrt.int8=5
    """
    with handle_errors(debug):
        from medseg.bench.gates import (
            GateSpec,
            evaluate_gates,
            gate_warnings,
            parse_flag_pairs,
        )
        from medseg.bench.gates import update_baseline as write_baseline
        from medseg.bench.report import gates_table, results_table, write_report
        from medseg.bench.results import BenchResults
        from medseg.bench.runner import BenchOptions, run_bench

        started = time.perf_counter()
        options = BenchOptions(
            backends=split_list(backends, "--backends"),
            precisions=split_list(precisions, "--precisions"),
            batches=_batches(batch),
            warmup=warmup,
            iters=iters,
            repeats=repeats,
            split=split,  # type: ignore[arg-type]  # validated by BenchOptions
            threads=threads,
            max_cases=max_cases,
            overlays=report is not None,
            tta=tta,
            postprocess=not no_postprocess,
        )
        spec = GateSpec.from_toml(gate) if gate is not None else GateSpec()
        spec = spec.merge(
            GateSpec.from_flags(
                max_dice_drop=parse_flag_pairs(max_dice_drop, "--max-dice-drop"),
                min_dice=min_dice,
                max_p95_ms=parse_flag_pairs(max_p95_ms, "--max-p95-ms"),
                max_latency_regression_pct=max_latency_regression,
                max_dice_regression_pts=max_dice_regression,
            )
        )
        if update_baseline and baseline is None:
            raise ConfigError("--update-baseline writes the --baseline file: pass --baseline PATH")
        base = None
        if baseline is not None and not update_baseline:
            base = BenchResults.load(baseline)
        if report is not None:
            check_parent_exists(report)
            if report.exists() and not report.is_dir():
                raise ConfigError(f"--report {report} is a file; expected a folder")
        if update_baseline and baseline is not None:
            check_parent_exists(baseline)
            if baseline.is_dir():
                raise ConfigError(f"--baseline {baseline} is a folder; expected a .json file path")

        with tempfile.TemporaryDirectory(prefix="medseg-bench-overlays-") as overlays:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task("benchmarking...", total=None)
                results = run_bench(
                    bundle,
                    data,
                    options,
                    overlay_dir=Path(overlays) if report is not None else None,
                    log=lambda line: bar.console.print(f"  {escape(line)}", highlight=False),
                    advance=lambda what: bar.update(task, description=what),
                )
            _check_something_ran(results, options.backends)
            results = results.with_gates(evaluate_gates(results, spec, base))
            for warning in gate_warnings(results, spec, base):
                err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
            if report is not None:  # the folder appears only once the run has worked
                report.mkdir(exist_ok=True)
                for png in Path(overlays).glob("*.png"):
                    shutil.copyfile(png, report / png.name)
                write_report(results, report)
        # CI logs are not terminals: print the table wide enough to read there too
        out = console if console.is_terminal else Console(width=max(console.width, 160))
        out.print(results_table(results))
        if results.gates:
            out.print(gates_table(results.gates))
        machine = results.machine
        console.print(
            f"machine: {machine.get('cpu')} ({machine.get('cores_available')} cores), "
            f"GPU: {machine.get('gpu') or 'none'}; {time.perf_counter() - started:.0f} s",
            highlight=False,
        )
        if report is not None:
            console.print(f"[green]✓[/] report: [bold]{report}[/]", highlight=False)
        if update_baseline and baseline is not None:
            write_baseline(results, baseline)
            console.print(f"[green]✓[/] baseline: [bold]{baseline}[/]", highlight=False)
        errors = [r for r in results.rows if r.status == "error"]
        for row in errors:
            err_console.print(f"[red]variant failed:[/] {escape(row.label)}: {escape(row.reason)}")
        failed = results.failed_gates
        for g in failed:
            err_console.print(f"[red]gate failed:[/] {escape(g.message)}", highlight=False)
        if failed or errors:
            raise GateFailedError(
                f"{len(failed)} of {len(results.gates)} gate(s) failed, "
                f"{len(errors)} variant(s) failed to run"
            )


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
