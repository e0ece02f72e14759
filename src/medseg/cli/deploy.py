"""``medseg export-triton``: a bundle as an NVIDIA Triton Inference Server model repository."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from medseg.cli.common import (
    DEBUG_OPTION,
    console,
    format_size,
    guard_outputs,
    handle_errors,
    report_written,
)
from medseg.outputs import Input, Output

__all__ = ["export_triton"]


def export_triton(
    bundle: Path = typer.Argument(..., help="Bundle folder (medseg export output)."),
    out: Path = typer.Option(..., "--out", help="Model repository folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty --out."),
    max_batch: int | None = typer.Option(
        None,
        "--max-batch",
        help="max_batch_size of every model (default: the bundle's maximum batch).",
    ),
    max_queue_delay_us: int = typer.Option(
        100, "--max-queue-delay-us", help="How long the dynamic batcher may wait (microseconds)."
    ),
    segment_precision: str = typer.Option(
        "fp32", "--segment-precision", help="Precision the end-to-end segmenter model runs."
    ),
    max_voxels: int = typer.Option(
        64 * 2**20, "--max-voxels", help="The segmenter's cap on voxels per request."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Write a Triton model repository: the end-to-end segmenter, one raw-logits model per
    ONNX precision and per built engine.

    medseg-<name>-segment (Python backend) takes a whole volume and returns its labels: it runs
    medseg.runtime on a copy of the bundle (serve it with medseg serve).

    ONNX files run with Triton's ONNX Runtime backend (on the GPU); TensorRT plans already
    built into the bundle (bundle/engines/<device>/) run with its TensorRT backend, on the GPU
    and TensorRT version they were built for. Triton runs the network only: clients apply the
    bundle's preprocessing (medseg.json, copied into each model) as medseg infer --server URL
    --model NAME does.

    Examples:
        medseg export-triton bundle --out model_repository
        medseg export-triton bundle --out model_repository --max-batch 16 --force
        medseg export-triton bundle --out model_repository --max-queue-delay-us 500
    """
    with handle_errors(debug):
        guard_outputs([Output("--out", out, "triton-repository")], [Input("BUNDLE", bundle)], force)
        from medseg.deploy import export_triton as write_repository
        from medseg.deploy.triton_readme import serve_commands

        started = time.perf_counter()
        models = write_repository(
            bundle,
            out,
            max_batch=max_batch,
            max_queue_delay_us=max_queue_delay_us,
            force=force,
            segment_precision=segment_precision,
            max_voxels=max_voxels,
        )
        for model in models:
            size = sum(p.stat().st_size for p in model.path.rglob("*") if p.is_file())
            where = (
                f", {model.gpu_name}, TensorRT {model.tensorrt_version}" if model.gpu_name else ""
            )
            console.print(
                f"[green]✓[/] {model.name}: {model.platform}, max batch {model.max_batch_size}"
                f"{where} ({format_size(size)})",
                highlight=False,
                soft_wrap=True,
            )
        report_written(f"Triton model repository ({len(models)} models)", out, started)
        console.print("next: serve it, then segment a scan through it:", highlight=False)
        where = shlex.quote(str(out.resolve()))
        commands = (
            serve_commands(where, models[0].name)
            if models[0].platform != "python"
            else [  # a fold ensemble: the segmenter only
                f"medseg serve {where}",
                f"medseg infer {shlex.quote(str(bundle))} scan.nii.gz --out mask.nii.gz "
                "--server http://127.0.0.1:8000",
            ]
        )
        for command in commands:
            console.print(f"  {command}", highlight=False, soft_wrap=True)
        console.print(
            f"  medseg serve {shlex.quote(str(out))}   (the segmenter, on a local tritonserver)",
            highlight=False,
            soft_wrap=True,
        )
