"""``medseg plan`` and ``medseg cv-summary``: the dataset plan and the cross-validation table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from medseg.atomic import atomic_file
from medseg.cli.common import (
    DEBUG_OPTION,
    console,
    guard_outputs,
    handle_errors,
    parse_patch_size,
    report_written,
)
from medseg.errors import ConfigError
from medseg.outputs import Input, Output
from medseg.plan.device import TrainingDevice, training_device

if TYPE_CHECKING:
    from medseg.plan.planner import Plan

__all__ = ["cv_summary", "plan", "render_plan"]


def render_plan(plan: Plan) -> Any:
    """A rich table of a plan's decisions."""
    from rich.table import Table

    summary = plan.summary
    spacing = summary.get("spacing_mm", {})
    shape = summary.get("shape", {})

    def triple(values: Any, fmt: str) -> str:
        return " x ".join(format(v, fmt) for v in values) if values else "-"

    table = Table(title=f"plan of {plan.dataset} (fingerprint {plan.fingerprint})")
    table.add_column("decision", style="bold")
    table.add_column("value")
    norm = (
        f"CT window [{plan.ct_window[0]:.1f}, {plan.ct_window[1]:.1f}], z-score "
        f"({plan.ct_zscore[0]:.2f}, {plan.ct_zscore[1]:.2f})"
        if plan.ct_window is not None and plan.ct_zscore is not None
        else "per-volume 0.5/99.5 % clip + z-score"
    )
    rows = [
        ("cases", str(summary.get("num_cases", "-"))),
        ("channels", ", ".join(plan.channel_names) + f"  ({plan.modality})"),
        ("classes", ", ".join(f"{k}={v}" for k, v in plan.labels.items())),
        (
            "orientation",
            f"{plan.orientation} (from {', '.join(summary.get('source_orientations', []))})",
        ),
        ("median spacing (mm)", triple(spacing.get("median"), ".3f")),
        (
            "spacing range (mm)",
            f"{triple(spacing.get('min'), '.2f')} .. {triple(spacing.get('max'), '.2f')}",
        ),
        ("median shape", triple(shape.get("median"), ".0f")),
        ("slice axis", f"{plan.slice_axis} ({'xyz'[plan.slice_axis]})"),
        ("target spacing (mm)", triple(plan.target_spacing, ".3f")),
        ("median resampled slice", triple(summary.get("median_resampled_inplane"), ".0f")),
        (
            "patch",
            f"{plan.patch_size[0]} x {plan.patch_size[1]} "
            f"(cap {plan.max_patch[0]} x {plan.max_patch[1]})",
        ),
        ("batch size", str(plan.batch_size)),
        ("normalisation", norm),
        ("mirror axes", ", ".join(map(str, plan.mirror_axes)) or "none"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def planning_device(kind: str, processes: int = 1) -> TrainingDevice:
    """The training device to plan for: ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees
    a GPU); a CPU shared by ``processes`` ranks gives each its share of the cores."""
    if kind not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"training device {kind!r} must be auto, cpu or cuda")
    if kind == "auto":
        try:
            import torch

            kind = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            kind = "cpu"
    device = training_device(kind)
    return TrainingDevice(device.kind, max(1, device.cores // max(1, processes)))


def print_plan(plan: Plan) -> None:
    """The table and the plan's notes (one line each)."""
    console.print(render_plan(plan))
    for note in plan.notes:
        console.print(f"  - {note}", highlight=False)


def plan(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net raw layout)."),
    out: Path = typer.Option(Path("plans.json"), "--out", help="plans.json to write."),
    max_patch: str = typer.Option(
        "256", "--max-patch", help="Cap of the patch, N or HxW (multiples of 32)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    train_device: str = typer.Option(
        "auto",
        "--train-device",
        help="cpu | cuda | auto (this machine): the batch follows its compute budget per step.",
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Fingerprint a dataset and write its training plan (plans.json).

    Reads every training case once: spacings and shapes after reorientation to RAS,
    foreground intensity statistics per channel, class frequencies. Chooses the slice
    axis, the target in-plane spacing (median), the normalisation (CT: dataset window +
    z-score; MR: per-volume z-score), a patch (multiple of 32 up to --max-patch), the batch
    size and the mirror axes. `medseg train` plans by itself when it gets no --plan.

    Examples:
        medseg plan /tmp/cohort --out /tmp/cohort-plans.json
        medseg plan /data/Dataset001 --out plans.json --max-patch 320
    """
    with handle_errors(debug):
        guard_outputs([Output("--out", out, "json")], [Input("DATASET", dataset)], force)
        from medseg.plan.planner import plan_dataset, save_plan

        cap = parse_patch_size(max_patch)
        assert cap is not None
        if out.exists() and not force:
            raise ConfigError(f"{out} exists; pass --force to replace it")
        if out.exists() and out.is_dir():
            raise ConfigError(f"--out {out} is a directory; give a file name, e.g. plans.json")
        started = time.perf_counter()
        result = plan_dataset(dataset, cap, planning_device(train_device))
        print_plan(result)
        save_plan(result, out, force=force, dataset=dataset)
        report_written("plan", out, started)
        console.print(
            f"next: [bold]medseg train {dataset} --plan {out} --out RUN_DIR[/]", highlight=False
        )


def cv_summary(
    runs: list[Path] = typer.Argument(..., help="Run directories, one per fold."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Per-fold and mean Dice / HD95 per class of cross-validation runs.

    Reads each run's validation.json (the best checkpoint on its fold's validation cases,
    scored at the end of `medseg train`). Runs must share dataset, plan and --folds.

    Examples:
        medseg cv-summary runs/fold0 runs/fold1 runs/fold2 runs/fold3 runs/fold4
        medseg cv-summary runs/fold* --json cv.json
    """
    with handle_errors(debug):
        guard_outputs([Output("--json", json_out, "json")], [Input("RUNS", r) for r in runs], force)
        from rich.table import Table

        from medseg.train.cv import summarise_runs

        summary = summarise_runs(runs)

        def cell(dice: float, hd: float | None) -> str:
            return f"{dice:.3f} / {hd:.2f}" if hd is not None else f"{dice:.3f} / -"

        table = Table(
            title=f"{summary.dataset}: {summary.folds}-fold cross-validation, Dice / HD95 (mm)"
        )
        table.add_column("fold")
        table.add_column("cases", justify="right")
        for name in summary.classes:
            table.add_column(name, justify="right")
        table.add_column("mean Dice", justify="right")
        for r in summary.results:
            mean = sum(r.dice.values()) / max(1, len(r.dice))
            table.add_row(
                str(r.fold),
                str(len(r.cases)),
                *(cell(r.dice[c], r.hd95[c]) for c in summary.classes),
                f"{mean:.3f}",
            )
        overall = sum(summary.mean_dice.values()) / max(1, len(summary.mean_dice))
        table.add_row(
            "mean ± sd",
            str(sum(len(r.cases) for r in summary.results)),
            *(
                f"{summary.mean_dice[c]:.3f}±{summary.std_dice[c]:.3f} / "
                + (f"{summary.mean_hd95[c]:.2f}" if summary.mean_hd95[c] is not None else "-")
                for c in summary.classes
            ),
            f"{overall:.3f}",
            style="bold",
        )
        console.print(table)
        if summary.missing:
            console.print(
                f"[yellow]![/] folds {list(summary.missing)} of {summary.folds} have no run: the "
                "mean covers the folds given only",
                highlight=False,
            )
        if json_out is not None:
            with atomic_file(json_out) as tmp:
                tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
            console.print(f"  summary written to {json_out}")
