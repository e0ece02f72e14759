"""``medseg import nnunet``: an nnU-Net v2 result folder -> a run that ``medseg-export`` takes."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medseg.cli.common import (
    DEBUG_OPTION,
    console,
    guard_outputs,
    handle_errors,
    report_written,
)
from medseg.outputs import Input, Output

__all__ = ["app", "nnunet"]

app = typer.Typer(
    help="Import models trained elsewhere (nnU-Net v2) as medseg runs.", no_args_is_help=True
)


@app.command("nnunet")
def nnunet(
    result_folder: Path = typer.Argument(
        ..., help="nnU-Net result folder: nnUNet_results/DatasetXXX/<Trainer>__<Plans>__<config>."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    configuration: str | None = typer.Option(
        None, "--configuration", help="2d | 3d_fullres | 3d_lowres (default: the checkpoints')."
    ),
    folds: str = typer.Option("all", "--folds", help="Folds to import: 0,1,2,3,4 or all."),
    checkpoint: str = typer.Option(
        "checkpoint_final.pth", "--checkpoint", help="Checkpoint file name in each fold_<k>/."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Import an nnU-Net v2 model (plans, dataset, fingerprint, fold checkpoints) as a run.

    The network is rebuilt from plans.json, every fold's weights are loaded with
    weights_only=True, and nnU-Net's preprocessing (transposes, spacing, resampling orders,
    per-channel normalisation with its statistics, patch size, mirroring axes) is recorded.

    Examples:
        medseg import nnunet results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres \
            --out runs/x3d --folds 0,1
        medseg import nnunet RESULT --out runs/x2d --configuration 2d \
            --checkpoint checkpoint_best.pth
    """
    with handle_errors(debug):
        guard_outputs([Output("--out", out, "run")], [Input("RESULT_FOLDER", result_folder)], force)
        from medseg.importers.nnunet import import_nnunet
        from medseg.importers.nnunet_folder import parse_folds

        started = time.perf_counter()
        run = import_nnunet(
            result_folder, out, configuration, parse_folds(folds), checkpoint, force=force
        )
        result = run.result
        for note in run.notes:
            console.print(f"  info: {note}", highlight=False, markup=False)
        console.print(
            f"  {result.trainer_name} {result.configuration}, folds {', '.join(result.folds)}, "
            f"patch {tuple(result.config['patch_size'])}, mirroring axes {result.mirror_axes}, "
            f"{run.parameters:,} parameters per fold",
            highlight=False,
            markup=False,
        )
        report_written("run", out, started)
        console.print("next:", highlight=False)
        console.print(f"  [bold]medseg-export {out} --out BUNDLE --fp16[/]", highlight=False)
