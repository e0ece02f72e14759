"""``medseg demo``: the end-to-end demo on the embedded MNI152 brain (what ``make demo`` runs)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medseg.cli.common import DEBUG_OPTION, console, guard_outputs, handle_errors
from medseg.errors import ConfigError
from medseg.outputs import Input, Output

__all__ = ["demo", "demo_bundle"]


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for the demo's outputs."),
    model: Path = typer.Option(
        Path("models/mni152-tissue"), "--model", help="Run directory of the trained demo model."
    ),
    export: bool = typer.Option(
        True, "--export/--no-export", help="Export, build, infer and bench (the deploy side)."
    ),
    train: bool = typer.Option(
        False, "--train", help="Retrain the demo model first (50 epochs: ~35 min on 2 CPU cores)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="With --train: number of epochs."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Benchmark with the CI gates."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Run the whole pipeline on the embedded MNI152 brain and write a report folder.

    Dataset -> (train) -> score -> export FP32/FP16/INT8 -> TensorRT engines (when TensorRT
    and a GPU are here) -> whole-brain inference -> bench with the CI gates -> report.

    Examples:
        medseg demo
        medseg demo --out /tmp/medseg-demo
        medseg demo --train --epochs 10
    """
    with handle_errors(debug):
        guard_outputs([Output("--out", out, "demo", "update")], [Input("--model", model)])
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
        if epochs is not None and not train:
            raise ConfigError("--epochs sets the length of --train: pass --train too")
        summary = run_demo(
            out, log, model_dir=model, export=export, train=train, epochs=epochs, bench=bench
        )
        console.print(
            f"\ndone in {time.perf_counter() - started:.0f} s; summary: {out / 'demo_summary.json'}"
        )
        if summary.get("bench"):
            report = Path(summary["bench"]["report"])
            console.print(
                f"[bold]report:[/] {report / 'report.md'} (table), "
                f"{report / 'accuracy_vs_latency.png'} (plot), {report / 'results.json'}",
                highlight=False,
            )


def demo_bundle(
    data: Path = typer.Option(
        ..., "--data", help="The MNI152 dataset folder (medseg data mni152)."
    ),
    model: Path = typer.Option(
        Path("models/mni152-tissue"), "--model", help="Run directory of the trained demo model."
    ),
    out: Path = typer.Option(
        Path("models/mni152-tissue/bundle"), "--out", help="Bundle folder to (re)write."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Re-export the demo model through the sliding-window path (what ``make demo-bundle`` runs).

    Writes a schema-2 "window" bundle (patch 224x256 at 1 mm; FP32, FP16, INT8), replacing the
    one at --out, and prints each precision's Dice and the export summary.

    Examples:
        medseg data mni152 demo-output/mni152
        medseg demo-bundle --data demo-output/mni152
    """
    with handle_errors(debug):
        # The committed demo bundle lives inside its run folder (models/mni152-tissue/bundle):
        # --model is read (model.pt, config.json) but is not guarded as an input that --out
        # may not lie in; --data is. The bundle is replaced, as `make demo-bundle` always did.
        guard_outputs([Output("--out", out, "bundle")], [Input("--data", data)], True)
        if not data.is_dir():
            raise ConfigError(
                f"--data {data}: no such dataset folder; pass the folder written by "
                "`medseg data mni152 DIR`"
            )
        if not model.is_dir():
            raise ConfigError(
                f"--model {model}: no such run folder; pass a medseg train run directory "
                "(model.pt and config.json), e.g. models/mni152-tissue"
            )
        from medseg.demo.window_bundle import export_window_bundle
        from medseg.export.summary import export_summary

        manifest = export_window_bundle(
            model,
            data,
            out,
            lambda event: console.print(event.message, highlight=False),
            force=True,
        )
        for name, entry in manifest.precisions.items():
            dice = ", ".join(f"{k} {v:.4f}" for k, v in entry.accuracy["dice_per_class"].items())
            console.print(f"{name}: Dice {dice}; mean {entry.accuracy['dice_mean']:.4f}")
        for row in export_summary(manifest):  # file x backend x CPU class
            worst = row.worst_class_drop_pts
            console.print(
                f"{row.file:22s} {row.precision:5s} {row.backend:12s} {row.cpu_class or '-':12s} "
                f"drop {row.dice_drop_pts:+.3f} worst {'-' if worst is None else f'{worst:+.3f}'} "
                f"{'(runs)' if row.runs else ''}",
                highlight=False,
            )
