"""``medseg bench`` / ``medseg-bench``: accuracy versus latency of a bundle, with CI gates.

Exit codes: 0 every gate passed, 1 a gate failed (each failure on one line, measured vs
allowed), 2 a usage or input error.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from medseg.cli.common import DEBUG_OPTION, console, err_console, guard_outputs, handle_errors
from medseg.errors import ConfigError, GateFailedError
from medseg.outputs import Input, Output

__all__ = ["bench", "split_list"]


def split_list(text: str, option: str) -> tuple[str, ...]:
    """``"fp32, int8"`` -> ``("fp32", "int8")``; an empty list is a ConfigError."""
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise ConfigError(f"{option} needs at least one value")
    return items


def _batches(text: str) -> tuple[int, ...]:
    values = split_list(text, "--batch")
    try:
        return tuple(int(b) for b in values)
    except ValueError:
        raise ConfigError(f"--batch {text!r} must be comma-separated integers, e.g. 1,8") from None


def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder (medseg export output)."),
    data: Path = typer.Option(..., "--data", help="nnU-Net raw dataset with the bundle's labels."),
    split: str = typer.Option(
        "val", "--split", help="val (the bundle's validation slices) | test | all"
    ),
    backends: str = typer.Option(
        "auto",
        "--backends",
        help="auto (torch only on CUDA) | comma list of onnxruntime, openvino, tensorrt, torch",
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
        writes_baseline = baseline if update_baseline else None
        guard_outputs(
            [
                Output("--report", report, "bench-report", "update"),
                Output("--baseline", writes_baseline, "json", "update"),
            ],
            [
                Input("BUNDLE", bundle),
                Input("--data", data),
                Input("--gate", gate),
                Input("--baseline", None if update_baseline else baseline),
            ],
        )
        from medseg.bench.gates import GateSpec, parse_flag_pairs
        from medseg.bench.options import BenchOptions
        from medseg.bench.pipeline import bench_pipeline, check_bench_outputs
        from medseg.cli.tables import gates_table, results_table

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
        check_bench_outputs(report, baseline, update_baseline)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("benchmarking...", total=None)
            run = bench_pipeline(
                bundle,
                data,
                options,
                spec,
                baseline=baseline,
                update_baseline_file=update_baseline,
                report=report,
                log=lambda line: bar.console.print(f"  {escape(line)}", highlight=False),
                advance=lambda what: bar.update(task, description=what),
            )
        results = run.results
        for warning in run.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
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
        if run.report is not None:
            console.print(f"[green]✓[/] report: [bold]{run.report}[/]", highlight=False)
        if run.baseline_written is not None:
            console.print(f"[green]✓[/] baseline: [bold]{run.baseline_written}[/]", highlight=False)
        for row in run.failed_variants:
            err_console.print(f"[red]variant failed:[/] {escape(row.label)}: {escape(row.reason)}")
        for g in run.failed_gates:
            err_console.print(f"[red]gate failed:[/] {escape(g.message)}", highlight=False)
        if not run.passed:
            raise GateFailedError(run.summary())
