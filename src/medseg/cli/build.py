"""``medseg build`` / ``medseg-build``: a bundle's ONNX files -> TensorRT engines on this device,
or TensorRT-RTX engines for RTX GPUs on any machine (``--runtime tensorrt-rtx``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from medseg.cli.common import DEBUG_OPTION, console, format_size, guard_outputs, handle_errors
from medseg.cli.events import rendered_events
from medseg.outputs import Input, Output

__all__ = ["build"]


def build(
    bundle: Path = typer.Argument(..., help="Bundle directory written by medseg export."),
    precision: str = typer.Option(
        "all", "--precision", help="all, or a comma list of fp32, fp16, int8."
    ),
    workspace: str | None = typer.Option(
        None, "--workspace", help="Cap on TensorRT's workspace memory, e.g. 2GiB, 512MiB."
    ),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Kernel timing cache file: read if present, then updated."
    ),
    opt_level: int = typer.Option(
        3, "--opt-level", help="Builder optimisation level 0-5 (higher: slower build)."
    ),
    version_compatible: bool = typer.Option(
        False, "--version-compatible", help="Engine also runs on later TensorRT versions."
    ),
    hardware_compat: str = typer.Option(
        "none", "--hardware-compat", help="none | ampere+ (any sm >= 8.0 GPU; not on Jetson)."
    ),
    dla_core: int | None = typer.Option(
        None, "--dla-core", help="Run on this Jetson DLA core (GPU fallback for the rest)."
    ),
    runtime: str = typer.Option(
        "tensorrt",
        "--runtime",
        help="tensorrt (this device's GPU) | tensorrt-rtx (RTX GPUs; builds anywhere, no GPU).",
    ),
    compute_capability: str | None = typer.Option(
        None,
        "--compute-capability",
        help="TensorRT-RTX targets, e.g. 86,89,120 (default); also 75, 80, 121.",
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Compile TensorRT engines for a bundle, on the device that will run them.

    Each precision's ONNX file (FP16 and INT8 carry their precision inside the graph) becomes
    BUNDLE/engines/<device-key>/<precision>.plan with a JSON sidecar recording the TensorRT
    version, GPU, flags and source ONNX sha256, which the runtime checks before loading.
    Needs TensorRT and an NVIDIA GPU (Jetson with JetPack, or a workstation). With
    --runtime tensorrt-rtx, TensorRT-RTX builds on any machine, without a GPU, plans for RTX
    GPUs into BUNDLE/engines/rtx-<sm list>/. Each precision's network report (layers,
    convolution precisions, FP32 tensors, Q/DQ warnings) is printed and kept in the sidecar.

    Examples:
        medseg build bundles/af
        medseg-build bundles/af --precision fp16,int8 --timing-cache ~/.cache/medseg/trt.cache
        medseg build bundles/af --precision int8 --dla-core 0
        medseg build bundles/af --runtime tensorrt-rtx --compute-capability 86,89,120
    """
    with handle_errors(debug):
        guard_outputs(  # engines go into the bundle; the timing cache is read and updated
            [
                # a BUNDLE that is no folder: build_engines says "not a bundle"
                Output(
                    "BUNDLE", bundle / "engines" if bundle.is_dir() else None, "engines", "update"
                ),
                Output("--timing-cache", timing_cache, "cache", "update"),
            ],
            [Input("BUNDLE", p) for p in (bundle / "medseg.json", *sorted(bundle.glob("*.onnx")))],
        )
        from medseg.build import BuildOptions, build_engines, parse_size
        from medseg.runtime.engines_rtx import parse_capabilities

        options = BuildOptions(
            precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
            workspace_bytes=parse_size(workspace, "--workspace") if workspace is not None else None,
            timing_cache=timing_cache,
            opt_level=opt_level,
            version_compatible=version_compatible,
            hardware_compat=hardware_compat,
            dla_core=dla_core,
            runtime=runtime,
            compute_capabilities=(
                parse_capabilities(compute_capability) if compute_capability is not None else None
            ),
        )
        started = time.perf_counter()
        label = "TensorRT-RTX" if runtime == "tensorrt-rtx" else "TensorRT"
        with rendered_events(console, f"building {label} engines...") as on_event:
            built = build_engines(bundle, options, on_event)
        folds = any(engine.fold is not None for engine in built)
        table = Table(
            *(["fold"] if folds else []),
            "precision",
            "engine",
            "size",
            "build s",
            "layers",
            "conv int8/fp16/fp32",
            "FP32 tensors",
        )
        for engine in built:
            net = engine.network
            table.add_row(
                *([str(engine.fold)] if folds else []),
                engine.precision,
                str(engine.path),
                format_size(engine.size_bytes),
                f"{engine.build_seconds:.1f}",
                str(net.layer_count) if net else "-",
                "/".join(str(net.convolutions.get(p, 0)) for p in ("int8", "fp16", "fp32"))
                if net
                else "-",
                str(len(net.fp32_tensors)) if net else "-",
            )
        console.print(table)
        console.print(
            f"[green]✓[/] {len(built)} engine(s) in {time.perf_counter() - started:.1f} s",
            highlight=False,
        )
        fastest = built[-1].precision if built else "fp32"  # built in fp32, fp16, int8 order
        choice = "" if fastest == "fp32" else f" --precision {fastest}"
        console.print("next:", highlight=False)
        console.print(
            f"  [bold]medseg infer {bundle} scan.nii.gz --out mask.nii.gz --backend {runtime}"
            f"{choice}[/]" + ("  (on an RTX GPU)" if runtime == "tensorrt-rtx" else ""),
            highlight=False,
        )
