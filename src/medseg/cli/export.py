"""``medseg export`` / ``medseg-export``: a trained model -> a deployable bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.common import DEBUG_OPTION, console, guard_outputs, handle_errors
from medseg.cli.events import rendered_events
from medseg.errors import ConfigError
from medseg.outputs import Input, Output

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
    max_dice_drop: str | None = typer.Option(
        None,
        "--max-dice-drop",
        help="INT8 mean Dice-drop budget in points (default 0.3; 'none': off); sensitive "
        "layers stay in FP32 until every INT8 file meets it on the backend that runs it.",
    ),
    max_class_drop: str | None = typer.Option(
        None,
        "--max-class-drop",
        help="INT8 budget on the worst class's Dice drop in points (default 1.0; 'none': off).",
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
    Runtime, OpenVINO) and its Dice drop against that backend's FP32 is recorded, with this
    CPU's class (avx2, avx512-vnni, amx...). INT8 is guarded by default (0.3 pt mean, 1 pt
    per class): the layers that measure as most sensitive are kept in FP32, the fewest that
    meet the budget, for the TensorRT-form Q/DQ file on ONNX Runtime (or --guard-backend) and
    for the CPU INT8 file on ONNX Runtime; the export fails with the table of attempts when
    the Q/DQ file cannot meet it. --max-dice-drop none switches the guard off. The end prints
    one table: file x backend x CPU class -> Dice drop, ms, size (export-summary.json).
    With --check-tensorrt every ONNX file is also built with TensorRT-RTX (the same check as
    CI's make trt-compile): a node TensorRT refuses fails the export and nothing is written.

    Examples:
        medseg-export models/mni152-tissue --out /tmp/b --fp16 --int8 --calib-data /tmp/mni
        medseg export runs/af --out b/af --int8 --calib-data /data/Ds001 --max-dice-drop 0.5
        medseg export runs/af --out b/af --int8 --calib-data /data/Ds001 --max-dice-drop none
        medseg export runs/af --out bundles/af-dyn --dynamic-hw --batch 1:4:16
        medseg-export runs/af --out b/af --fp16 --int8 --calib-data /data/Ds001 --check-tensorrt
    """
    with handle_errors(debug):
        guard_outputs(
            [Output("--out", out, "bundle")],
            [
                Input("CHECKPOINT", checkpoint),
                Input("--calib-data", calib_data),
                Input("--data", data),
            ],
            force,
        )
        if (checkpoint / "nnunet.json").is_file():  # a run of `medseg import nnunet`
            _refuse_unused(
                checkpoint,
                {
                    "--max-dice-drop": max_dice_drop is not None,
                    "--max-class-drop": max_class_drop is not None,
                    "--guard-backend": guard_backend is not None,
                    "--batch": batch != "1:8:32",
                    "--height/--width": height is not None or width is not None,
                    "--dynamic-hw": dynamic_hw,
                    "--data": data is not None,
                    "--check-tensorrt": check_tensorrt,
                    "--calib-method": calib_method != "max",
                },
            )
            _export_nnunet(checkpoint, out, fp16, int8, calib_data, calib_slices, force)
            return
        from medseg.export import ExportOptions, export_bundle

        budget: dict[str, float | None] = {}  # absent: ExportOptions' default
        for key, text, flag in (
            ("max_dice_drop", max_dice_drop, "--max-dice-drop"),
            ("max_class_drop", max_class_drop, "--max-class-drop"),
        ):
            if text is not None:
                budget[key] = _budget(text, flag, int8)
        if max_dice_drop is not None and budget["max_dice_drop"] is None:
            budget.setdefault("max_class_drop", None)  # --max-dice-drop none: the guard off
        options = ExportOptions(
            fp16=fp16,
            int8=int8,
            calib_data=calib_data,
            calib_slices=calib_slices,
            calib_method=calib_method,
            **budget,
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
        render_summary(manifest)
        console.print("next, on the target device:", highlight=False)
        console.print(f"  [bold]medseg build {out}[/]", highlight=False)
        console.print(f"  [bold]medseg bench {out} --data DATASET[/]", highlight=False)


def _refuse_unused(run: Path, given: dict[str, bool]) -> None:
    """Options the nnU-Net export does not use are errors, not silently ignored."""
    from medseg.errors import ConfigError

    unused = [option for option, was_given in given.items() if was_given]
    if unused:
        raise ConfigError(
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to {run}, a "
            "run of medseg import nnunet (its patch size and windows come from plans.json); "
            "it takes --fp16, --int8, --calib-data and --calib-slices"
        )


def _budget(text: str, flag: str, int8: bool) -> float | None:
    """``--max-dice-drop`` / ``--max-class-drop``: points, or ``None`` for ``none`` (off)."""
    if not int8:
        raise ConfigError(f"{flag} is the INT8 accuracy budget: use it with --int8")
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be points (e.g. 0.3) or 'none'") from None
    if not value >= 0:
        raise ConfigError(f"{flag} {text} must be >= 0 points, or 'none'")
    return value


def render_summary(manifest: object) -> None:
    """The export summary (:func:`medseg.export.summary.export_summary`) as one table."""
    from rich.table import Table

    from medseg.export.summary import export_summary

    rows = export_summary(manifest)
    if not rows:
        return
    table = Table(title="export summary (validation, this machine)", title_justify="left")
    for column in ("file", "precision", "backend", "CPU class", "Δ Dice pts", "worst class"):
        table.add_column(column)
    for column in ("ms/slice", "MB", "runs"):
        table.add_column(column, justify="right")

    def pts(value: float | None) -> str:
        return "-" if value is None else f"{value:+.3f}"

    for r in rows:
        budget = "" if r.within_budget is None else (" ✓" if r.within_budget else " ✗ budget")
        table.add_row(
            r.file,
            r.precision,
            r.backend,
            r.cpu_class or "-",
            pts(r.dice_drop_pts) + budget,
            pts(r.worst_class_drop_pts),
            "-" if r.ms_per_slice is None else f"{r.ms_per_slice:.0f}",
            "-" if r.size_mb is None else f"{r.size_mb:.1f}",
            "yes" if r.runs else "",
        )
    console.print(table)


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
