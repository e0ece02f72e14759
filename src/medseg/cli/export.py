"""``medseg export`` / ``medseg-export``: a trained model -> a deployable bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.common import DEBUG_OPTION, console, handle_errors
from medseg.cli.events import rendered_events
from medseg.errors import ConfigError

__all__ = ["export", "parse_batch"]


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"1:8:32"`` -> (1, 8, 32); ``"8"`` -> (8, 8, 8)."""
    try:
        values = [int(v) for v in text.split(":")]
    except ValueError:
        raise ConfigError(f"--batch {text!r} must be MIN:OPT:MAX or N, e.g. 1:8:32") from None
    if len(values) == 1:
        return values[0], values[0], values[0]
    if len(values) == 3:
        return values[0], values[1], values[2]
    raise ConfigError(f"--batch {text!r} must be MIN:OPT:MAX or N, e.g. 1:8:32")


def export(
    checkpoint: Path = typer.Argument(..., help="Run directory of medseg train, or its model.pt."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (AutoCast)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx (Q/DQ PTQ)."),
    calib_data: Path | None = typer.Option(
        None, "--calib-data", help="Dataset whose training split gives the calibration slices."
    ),
    calib_slices: int = typer.Option(64, "--calib-slices", help="Number of calibration slices."),
    calib_method: str = typer.Option("max", "--calib-method", help="max | entropy"),
    max_dice_drop: float | None = typer.Option(
        None, "--max-dice-drop", help="INT8 budget in Dice points; keeps sensitive layers in FP32."
    ),
    guard_backend: str | None = typer.Option(
        None,
        "--guard-backend",
        help="CPU backend the INT8 budget is met on: onnxruntime | openvino "
        "(default: openvino when installed).",
    ),
    batch: str = typer.Option("1:8:32", "--batch", help="Batch range MIN:OPT:MAX."),
    height: int | None = typer.Option(None, "--height", help="Fixed input height (x16)."),
    width: int | None = typer.Option(None, "--width", help="Fixed input width (x16)."),
    dynamic_hw: bool = typer.Option(False, "--dynamic-hw", help="Accept any H, W (x16)."),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset for parity and validation Dice (default: --calib-data)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    check_tensorrt: bool = typer.Option(
        False,
        "--check-tensorrt",
        help="Build every ONNX file with TensorRT-RTX (no GPU needed) before writing the bundle.",
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Export a trained model to a bundle: ONNX FP32 (+ FP16, INT8) and medseg.json.

    Every precision is scored on the validation split on every installed CPU backend (ONNX
    Runtime, OpenVINO) and its Dice drop against that backend's FP32 is recorded. With
    --max-dice-drop, INT8 layers that measure as most sensitive on --guard-backend are kept
    in FP32, the fewest that meet the budget on that backend. With --check-tensorrt every
    ONNX file is also built with TensorRT-RTX (the same check as CI's make trt-compile): a
    node TensorRT refuses fails the export and nothing is written.

    Examples:
        medseg-export models/mni152-tissue --out /tmp/b --fp16 --int8 --calib-data /tmp/mni
        medseg export runs/af --out b/af --int8 --calib-data /data/Ds001 --max-dice-drop 0.5
        medseg export runs/af --out bundles/af-dyn --dynamic-hw --batch 1:4:16
        medseg-export runs/af --out b/af --fp16 --int8 --calib-data /data/Ds001 --check-tensorrt
    """
    with handle_errors(debug):
        if (checkpoint / "nnunet.json").is_file():  # a run of `medseg import nnunet`
            given = {
                "--calib-method": calib_method != "max",
                "--max-dice-drop": max_dice_drop is not None,
                "--guard-backend": guard_backend is not None,
                "--batch": batch != "1:8:32",
                "--height": height is not None,
                "--width": width is not None,
                "--dynamic-hw": dynamic_hw,
                "--data": data is not None,
                "--check-tensorrt": check_tensorrt,
            }
            wrong = [name for name, on in given.items() if on]
            if wrong:
                raise ConfigError(
                    f"{wrong[0]} does not apply to {checkpoint}, an imported nnU-Net run (its "
                    "patch and batch come from plans.json); accepted: --out --fp16 --int8 "
                    "--calib-data --calib-slices --force"
                )
            _export_nnunet(checkpoint, out, fp16, int8, calib_data, calib_slices, force)
            return
        from medseg.export import ExportOptions, export_bundle

        options = ExportOptions(
            fp16=fp16,
            int8=int8,
            calib_data=calib_data,
            calib_slices=calib_slices,
            calib_method=calib_method,
            max_dice_drop=max_dice_drop,
            batch=parse_batch(batch),
            height=height,
            width=width,
            dynamic_hw=dynamic_hw,
            data=data,
            check_tensorrt=check_tensorrt,
            guard_backend=guard_backend,
        )

        with rendered_events(console, "exporting...") as on_event:
            manifest = export_bundle(checkpoint, out, options, on_event, force=force)
        rows = ", ".join(
            f"{p} Dice {e.accuracy['dice_mean']:.4f} ({e.accuracy['dice_drop_pts']:+.3f} pts)"
            for p, e in manifest.precisions.items()
        )
        console.print(f"  {rows}", highlight=False)
        console.print("next, on the target device:", highlight=False)
        console.print(f"  [bold]medseg build {out}[/]", highlight=False)
        console.print(f"  [bold]medseg bench {out} --data DATASET[/]", highlight=False)


def _export_nnunet(
    run: Path,
    out: Path,
    fp16: bool,
    int8: bool,
    calib_data: Path | None,
    calib_slices: int,
    force: bool,
) -> None:
    """``medseg-export RUN`` where RUN was written by ``medseg import nnunet``."""
    import time

    from medseg.cli.common import report_written
    from medseg.export.nnunet_export import NnunetExportOptions, export_nnunet

    started = time.perf_counter()
    options = NnunetExportOptions(
        fp16=fp16, int8=int8, calib_data=calib_data, calib_patches=min(calib_slices, 1024)
    )

    def log(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    export_nnunet(run, out, options, log, force=force)
    report_written("bundle", out, started)
