"""``medseg train`` / ``medseg-train``: train a segmentation network on a dataset folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from medseg.cli.common import DEBUG_OPTION, console, guard_outputs, handle_errors, parse_patch_size
from medseg.cli.train_progress import log_heartbeat, training_events
from medseg.errors import ConfigError
from medseg.outputs import Input, Output

__all__ = ["DEFAULT_BUDGET", "train"]

#: The run's length when neither --epochs nor --time-budget is given: long enough for a
#: useful model on a 2-core CPU (see docs/notes/i23.md), short enough to wait for.
DEFAULT_BUDGET = "30m"


def nproc_env() -> int:
    """Processes of this run (``WORLD_SIZE`` under torchrun, else 1)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def train(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net raw layout)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    arch: str = typer.Option(
        "attention-fusion", "--arch", help="unet | attention-unet | attention-fusion"
    ),
    variant: str = typer.Option("small", "--variant", help="Width preset: tiny | small | paper."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Passes over the training slices (instead of --time-budget)."
    ),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        help="Wall-clock time of the whole run, e.g. 40s, 30m, 2h: steps, schedule and "
        f"validation are sized to it (default {DEFAULT_BUDGET} when --epochs is not given).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Data worker processes (default: cores - 1, at most 2 on CPU)."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto | fp32 | bf16 | fp16 (auto: BF16/FP16 AMP on CUDA, "
        "BF16 on CPUs with native BF16, FP32 elsewhere).",
    ),
    nproc: int | None = typer.Option(
        None, "--nproc", help="Train on N processes (GPUs) with torchrun / DDP."
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="plans.json from medseg plan (default: plan the dataset now)."
    ),
    fold: int = typer.Option(0, "--fold", help="Cross-validation fold 0..folds-1."),
    folds: int | None = typer.Option(
        None, "--folds", help="Number of folds (default 5, or one per case below 5 cases)."
    ),
    max_patch: str = typer.Option(
        "256", "--max-patch", help="Cap of the planned patch, N or HxW (multiples of 32)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Patches per step (default: the plan's)."
    ),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine | poly"),
    patch: str | None = typer.Option(
        None, "--patch", help="Training patch N or HxW, multiples of 32 (default: the plan's)."
    ),
    slice_axis: int | None = typer.Option(
        None, "--slice-axis", help="Volume axis to slice along (default: the plan's)."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", help="Validation share of slice blocks (single-case datasets)."
    ),
    flip_axes: str | None = typer.Option(
        None, "--flip-axes", help="Slice axes that may be flipped, e.g. '0' (default: the plan's)."
    ),
    whole_slice: bool = typer.Option(
        False, "--whole-slice", help="Old geometry: whole slices padded to a multiple of 16."
    ),
    no_augment: bool = typer.Option(False, "--no-augment", help="Switch augmentation off."),
    seed: int = typer.Option(0, "--seed", help="Seed of split, weights, order, augmentation."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    force: bool = typer.Option(
        False, "--force", help="Replace a non-empty --out; accept a --plan of another dataset."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train a segmentation network; keep the best checkpoint by validation mean Dice.

    Writes model.pt (best weights + record), last.pt (for --resume), config.json,
    metrics.jsonl and training_curve.png into the run directory. Without --epochs the run
    lasts --time-budget (default 30m), sized from a measured warm-up.

    Examples:
        medseg train /data/Dataset001 --out runs/af --time-budget 2h
        medseg train /data/Dataset001 --out runs/af --nproc 4
        medseg train /tmp/mni --arch attention-fusion --out runs/af --epochs 40 --patch 128
        medseg train /data/Dataset001 --arch unet --variant tiny --out runs/unet --epochs 1
        medseg train /tmp/mni --out runs/af --epochs 60 --resume
    """
    started = time.perf_counter()  # a --time-budget counts from here (planning included)
    printing = nproc is None and os.environ.get("RANK", "0") in ("", "0")  # torchrun: rank 0
    with handle_errors(debug), log_heartbeat(console, started, enabled=printing) as beat:
        guard_outputs(
            [Output("--out", out, "run", "update" if resume else "replace")],
            [Input("DATASET", dataset), Input("--plan", plan_file)],
            force,
        )
        from medseg.train import TrainConfig
        from medseg.train import train as run_training
        from medseg.train.budget import parse_duration

        if epochs is not None and time_budget is not None:
            raise ConfigError("--epochs and --time-budget exclude each other; give one")
        if nproc is not None:
            from medseg.cli.train_torchrun import run_torchrun

            raise typer.Exit(run_torchrun(nproc))
        budget = None
        if epochs is None and not resume:
            budget = parse_duration(time_budget or DEFAULT_BUDGET)

        axes: tuple[int, ...] | None = None
        if flip_axes is not None:
            try:
                axes = tuple(int(a) for a in flip_axes.split(",") if a.strip())
            except ValueError:
                raise ConfigError(
                    f"--flip-axes {flip_axes!r} must be comma-separated 0/1"
                ) from None
        cap = parse_patch_size(max_patch)
        assert cap is not None
        config = TrainConfig(
            arch=arch,
            variant=variant,
            geometry="whole-slice" if whole_slice else "plan",
            epochs=50 if epochs is None else epochs,
            time_budget=budget,
            workers=workers,
            precision=precision,  # type: ignore[arg-type]  # validated by TrainConfig
            fold=fold,
            folds=folds,
            max_patch=cap,
            batch_size=batch_size,
            lr=lr,
            schedule=schedule,  # type: ignore[arg-type]  # validated by TrainConfig
            seed=seed,
            val_fraction=val_fraction,
            slice_axis=slice_axis,
            patch_size=parse_patch_size(patch),
            augment=not no_augment,
            flip_axes=axes,
            device=device,  # type: ignore[arg-type]  # validated by TrainConfig
        )
        from medseg.models import get_model_entry

        get_model_entry(arch).variant_config(variant)  # unknown arch/variant: fail before data
        from medseg.train.loop import check_run_dir

        rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun: rank 0 owns --out
        if rank == 0:
            check_run_dir(out, dataset, resume, force)  # before planning reads the dataset
        plan = None
        if config.geometry == "plan" and not resume:
            from medseg.cli.plan import planning_device, print_plan
            from medseg.plan.planner import load_plan, plan_dataset

            if plan_file is not None:
                plan = load_plan(plan_file)
            else:
                if not dataset.is_dir():
                    raise ConfigError(f"dataset folder {dataset} does not exist")
                if rank == 0:
                    console.print(f"planning {dataset} (no --plan given) ...", highlight=False)
                if beat is not None:
                    beat.touch(f"planning {dataset}")
                plan = plan_dataset(dataset, cap, planning_device(device, nproc_env()))
            if rank == 0:
                print_plan(plan)
        elif plan_file is not None:
            raise ConfigError(
                "--plan is not used with --whole-slice or --resume (the run keeps its plan)"
            )

        if beat is not None:
            beat.touch("preparing the cases and the network")
        with training_events(console, heartbeat=beat) as sink:
            result = run_training(
                dataset,
                out,
                config,
                plan=plan,
                resume=resume,
                force=force,
                on_event=sink,
                clock_start=started,
            )
        if rank != 0:
            return
        dice = ", ".join(f"{k} {v:.3f}" for k, v in result.best_val_dice.items())
        timing = result.timing or {}
        best = next((e for e in result.epochs if e.epoch == result.best_epoch), None)
        where = (
            f"best epoch {result.best_epoch}"
            if result.budget is None or best is None
            else f"best at step {best.step} (validation {result.best_epoch} of "
            f"{len(result.epochs)})"
        )
        console.print(
            f"[green]✓[/] {where}: validation Dice {dice} (mean {result.best_mean_dice:.3f}); "
            f"{result.steps} steps; run in [bold]{out}[/] ({result.seconds:.0f} s: steps "
            f"{timing.get('steps', 0):.0f} s, of which waiting for data "
            f"{timing.get('data', 0):.0f} s; validation {timing.get('validation', 0):.0f} s)",
            highlight=False,
        )
        console.print(f"next: [bold]medseg export {out} --out BUNDLE --fp16[/]", highlight=False)
