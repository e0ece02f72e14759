"""``medseg infer`` / ``medseg-infer``: segment a scan with a bundle (TensorRT or ONNX Runtime)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medseg.cli.common import DEBUG_OPTION, console, err_console, guard_outputs, handle_errors
from medseg.errors import ConfigError
from medseg.outputs import Input, Output

__all__ = ["infer"]


def infer(
    bundle: Path = typer.Argument(..., help="Bundle folder (medseg export output)."),
    inputs: list[Path] = typer.Argument(
        ..., help="A NIfTI file (one per channel), or a DICOM series folder or file."
    ),
    out: Path = typer.Option(..., "--out", help="Mask to write (.nii.gz or .nii)."),
    backend: str = typer.Option(
        "auto", "--backend", help="auto | tensorrt | tensorrt-rtx | onnxruntime | openvino"
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 | fp16 | bf16 (OpenVINO) | int8"
    ),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write <out>_probabilities.nii.gz (X, Y, Z, K)."
    ),
    dicom_seg: Path | None = typer.Option(
        None, "--dicom-seg", help="DICOM SEG path for DICOM input (default: <out>.seg.dcm)."
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        help="Slices (window bundles: windows) per call; default: opt (windows on TensorRT: max).",
    ),
    providers: str | None = typer.Option(
        None, "--providers", help="ONNX Runtime providers in order, e.g. cuda,cpu."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads (ONNX Runtime, OpenVINO)."
    ),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="TensorRT: replay a CUDA graph."),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Mirroring test-time augmentation (sliding-window bundles; nnU-Net bundles: on "
        "unless --no-tta, as nnU-Net).",
    ),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Skip the bundle's per-class post-processing."
    ),
    reference: Path | None = typer.Option(
        None, "--reference", help="Reference label map (NIfTI): print Dice per class."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Segment on a Triton server (http://HOST:PORT or grpc://HOST:PORT, medseg serve); "
        "BUNDLE is then the bundle or repository the server was given.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="With --server: the model (default medseg-<name>-segment)."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Segment a NIfTI volume or a DICOM series with a bundle.

    Preprocessing comes from the bundle's medseg.json. The mask keeps the input's affine and
    header; a DICOM input also gets a DICOM SEG that references its images.

    Examples:
        medseg infer bundle scan.nii.gz --out mask.nii.gz
        medseg-infer bundle dicom/series1 --out mask.nii.gz --precision int8
        medseg infer bundle case_0000.nii.gz case_0001.nii.gz --out mask.nii.gz --backend tensorrt
        medseg infer bundle scan.nii.gz --out mask.nii.gz --server http://127.0.0.1:8000
    """
    with handle_errors(debug):
        guard_outputs(
            _outputs(out, inputs, probabilities, dicom_seg),
            _inputs(bundle, inputs, reference),
            force,
        )
        from medseg.options import check_not_an_input, check_threads
        from medseg.runtime import Segmenter, load_scan, plan_outputs, write_outputs

        if model is not None and server is None:
            raise ConfigError(f"--model {model} names a served model: pass --server URL too")
        if server is not None:
            from medseg.cli.infer_remote import infer_remote, local_only_options
            from medseg.deploy.remote import parse_server_url

            parse_server_url(server)
            local_only_options(
                backend=backend,
                precision=precision,
                probabilities=probabilities,
                batch_size=batch_size,
                providers=providers,
                threads=threads,
                cuda_graph=cuda_graph,
                tta=tta,
                no_postprocess=no_postprocess,
            )
            scan = load_scan(inputs)
            paths = plan_outputs(out, scan, False, dicom_seg, force)
            ref = _load_reference(reference, scan.image.shape[1:]) if reference else None
            labels, classes = infer_remote(bundle, scan, paths, server, model)
            _print_summary(labels, scan.voxel_volume_ml, classes, ref)
            return

        started = time.perf_counter()
        check_threads(threads, "--threads")
        scan = load_scan(inputs)
        paths = plan_outputs(out, scan, probabilities, dicom_seg, force)
        if reference is not None:
            check_not_an_input([("--out", p) for p in paths.all()], [reference])
        ref_labels = _load_reference(reference, scan.image.shape[1:]) if reference else None
        provider_list = [p.strip() for p in providers.split(",")] if providers else None
        with Segmenter.from_bundle(
            bundle,
            backend,
            precision,
            batch_size=batch_size,
            providers=provider_list,
            threads=threads,
            cuda_graph=cuda_graph,
            tta=tta,
            postprocess=not no_postprocess,
        ) as segmenter:
            if segmenter.backend.selection_note:
                err_console.print(
                    f"[yellow]warning:[/] {escape(segmenter.backend.selection_note)}",
                    highlight=False,
                    soft_wrap=True,
                )
            what = segmenter.pipeline.unit
            console.print(
                f"{scan.source}: {'x'.join(map(str, scan.image.shape[1:]))} voxels, "
                f"{segmenter.backend.describe()}, {precision}, batch {segmenter.batch_size} "
                f"{what}" + (" (mirroring TTA)" if segmenter.tta else ""),
                highlight=False,
            )
            with Progress(
                TextColumn("segmenting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("slices"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task("segment", total=None)
                result = segmenter.segment(
                    scan.image,
                    probabilities=probabilities,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    source=scan.source,
                    affine=scan.affine,
                    spacing=scan.spacing,
                )
            manifest = segmenter.manifest
            post = manifest.postprocess
            if post is not None and post.active:
                state = "skipped (--no-postprocess)" if no_postprocess else "applied"
                rules = ", ".join(n for n, r in post.classes.items() if r.active)
                console.print(f"post-processing of {rules}: {state}", highlight=False)
        if result.reoriented_from is not None:
            console.print(
                f"reoriented {result.reoriented_from} -> {manifest.orientation} for the network",
                highlight=False,
            )
        written = write_outputs(
            paths,
            scan,
            result.labels,
            manifest.classes,
            result.probabilities,
            algorithm_version=str(manifest.tool_versions.get("medseg-edge", "")),
        )
        _print_summary(result.labels, scan.voxel_volume_ml, manifest.classes, ref_labels)
        timing = result.timing
        console.print(
            f"{result.num_slices} slices in {timing.total_s:.2f} s "
            f"(network {timing.inference_s:.2f} s, "
            f"{1e3 * timing.inference_s / max(result.num_slices, 1):.1f} ms/slice; "
            f"pre {timing.preprocess_s:.2f} s, post {timing.postprocess_s:.2f} s = "
            f"{100 * timing.overhead_share:.0f} % of network time)",
            highlight=False,
        )
        fold_s = getattr(timing, "fold_inference_s", None)  # an nnU-Net fold ensemble
        if fold_s:
            per_fold = ", ".join(f"fold {f} {s:.2f} s" for f, s in fold_s.items())
            console.print(f"cost per fold: {per_fold}", highlight=False)
        for path in written:
            console.print(f"[green]✓[/] wrote [bold]{path}[/]", highlight=False)
        console.print(f"done in {time.perf_counter() - started:.1f} s", highlight=False)


def _outputs(
    out: Path, inputs: list[Path], probabilities: bool, dicom_seg: Path | None
) -> list[Output | None]:
    """The files infer writes, as :func:`medseg.runtime.plan_outputs` names them."""
    name = out.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else out.stem
    dicom = len(inputs) == 1 and not inputs[0].name.lower().endswith((".nii", ".nii.gz"))
    seg = (
        dicom_seg
        if dicom_seg is not None
        else (out.with_name(f"{stem}.seg.dcm") if dicom else None)
    )
    return [
        Output("--out", out, "nifti"),
        Output(
            "--probabilities",
            out.with_name(f"{stem}_probabilities.nii.gz") if probabilities else None,
            "nifti",
        ),
        Output("--dicom-seg", seg, "dicom"),
    ]


def _inputs(bundle: Path, inputs: list[Path], reference: Path | None) -> list[Input | None]:
    return [
        Input("BUNDLE", bundle),
        *(Input("INPUTS", p) for p in inputs),
        Input("--reference", reference),
    ]


def _load_reference(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from medseg.data.nifti import load_nifti
    from medseg.errors import DatasetError

    ref = load_nifti(path)
    if ref.shape != tuple(shape):
        raise DatasetError(f"{path}: reference shape {ref.shape} differs from the input {shape}")
    data = np.asarray(ref.data)
    if data.dtype.kind == "f" and not (
        np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))
    ):
        raise DatasetError(
            f"--reference {path}: holds non-integer values (a probability map or an image?); "
            "expected a label map of integer class values"
        )
    if data.min() < 0:
        raise DatasetError(
            f"--reference {path}: holds negative values; expected a label map of class values"
        )
    return data


def _print_summary(
    labels: np.ndarray, voxel_ml: float, classes: dict[str, int], reference: np.ndarray | None
) -> None:
    from medseg.metrics import compute_dice

    # one metric path: a class absent from both maps is undefined ("n/a"), not a perfect 1.0
    dice = compute_dice(labels, reference, classes, empty="nan") if reference is not None else {}
    table = Table(title=None, show_edge=False, header_style="bold")
    for column in ("label", "class", "voxels", "volume ml"):
        table.add_column(column, justify="left" if column == "class" else "right")
    if reference is not None:
        table.add_column("Dice", justify="right")
    for name, value in classes.items():
        count = int(np.count_nonzero(labels == value))
        row = [str(value), name, f"{count:,}", f"{count * voxel_ml:.1f}"]
        if reference is not None:
            row.append("n/a" if math.isnan(dice[name]) else f"{dice[name]:.4f}")
        table.add_row(*row)
    console.print(table)
