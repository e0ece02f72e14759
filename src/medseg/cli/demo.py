"""``medseg demo``: the end-to-end demo on the embedded MNI152 brain (what ``make demo`` runs)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medseg.cli.common import DEBUG_OPTION, console, handle_errors

__all__ = ["demo"]


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for the demo's outputs."),
    model: Path = typer.Option(
        Path("models/mni152-tissue"), "--model", help="Run directory of the trained demo model."
    ),
    export: bool = typer.Option(
        True, "--export/--no-export", help="Export the model to an FP32/FP16/INT8 bundle."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Run every built pipeline step on the embedded MNI152 brain and say what is not built yet.

    Examples:
        medseg demo
        medseg demo --out /tmp/medseg-demo
    """
    with handle_errors(debug):
        from medseg.demo import DemoStep, run_demo

        def log(step: DemoStep) -> None:
            if step.status == "done":
                where = f" -> {step.path}" if step.path else ""
                line = f"[bold]{step.name}[/]: {step.detail} ({step.seconds:.1f} s){where}"
                console.print(f"[green]✓[/] {line}", highlight=False)
            else:
                console.print(
                    f"[yellow]·[/] [bold]{step.name}[/]: {step.status} ({step.detail})",
                    highlight=False,
                )

        started = time.perf_counter()
        console.rule("medseg demo: MNI152 brain (one template brain, not a patient cohort)")
        run_demo(out, log, model_dir=model, export=export)
        console.print(
            f"\ndone in {time.perf_counter() - started:.0f} s; summary: {out / 'demo_summary.json'}"
        )
