"""``medseg data``: dataset folders (check, preview) and the embedded MNI152 dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from medseg.atomic import atomic_file
from medseg.cli.common import (
    DEBUG_OPTION,
    console,
    guard_outputs,
    handle_errors,
    report_written,
)
from medseg.outputs import Input, Output

__all__ = ["app"]

app = typer.Typer(
    name="data",
    help="Dataset folders in the nnU-Net raw layout: check them, preview them, or write the "
    "embedded MNI152 brain dataset (one case, or a multi-case cohort of acquisitions).",
    no_args_is_help=True,
)


@app.command("check")
def check(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net raw layout)."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the summary as JSON to this file."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Validate a dataset folder and print its summary.

    Checks dataset.json, that every case has all channel files and a label, that images and
    labels agree in shape and affine, that label values are declared, that files load, and
    that no voxel is NaN/Inf. Prints cases, channels, labels with voxel counts, spacings,
    shapes and intensity ranges. Exit code 2 and one line naming the files on any problem.

    Examples:
        medseg data check /data/Dataset001_Brain
        medseg data check /tmp/mni --json /tmp/mni-summary.json
    """
    with handle_errors(debug):
        guard_outputs([Output("--json", json_out, "json")], [Input("DATASET", dataset)], force)
        from medseg.cli.tables import dataset_report
        from medseg.data.check import check_dataset

        started = time.perf_counter()
        report = check_dataset(dataset)
        console.print(dataset_report(report))
        console.print(
            f"[green]✓[/] {dataset}: no problems found ({time.perf_counter() - started:.1f} s)"
        )
        if json_out is not None:
            with atomic_file(json_out) as tmp:
                tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
            console.print(f"  summary written to {json_out}")


@app.command("mni152")
def mni152(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
    preview: Path | None = typer.Option(
        None, "--preview", help="Also save a PNG overlay of the labels on the T1 image."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Write the embedded MNI ICBM152 2009a brain (T1; CSF/GM/WM labels) in the nnU-Net layout.

    The template ships inside the nilearn wheel and is read from its files: nothing is
    downloaded. It is ONE template brain: results on it show the pipeline works on real
    anatomy, not how a model generalises across patients.

    Examples:
        medseg data mni152 /tmp/mni
        medseg data mni152 /tmp/mni --force --preview /tmp/mni.png
    """
    with handle_errors(debug):
        guard_outputs(
            [Output("OUT_DIR", out_dir, "dataset"), Output("--preview", preview, "png")], [], force
        )
        from medseg.data.mni152 import write_mni152

        started = time.perf_counter()
        write_mni152(out_dir, force=force)
        report_written("MNI152 tissue dataset (1 case, 4 labels, 1 mm)", out_dir, started)
        if preview is not None:
            _preview(out_dir, None, preview)
        console.print(f"next: [bold]medseg data check {out_dir}[/]", highlight=False)


@app.command("mni152-cohort")
def mni152_cohort(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    cases: int = typer.Option(12, "--cases", help="Number of cases (1..500)."),
    seed: int = typer.Option(0, "--seed", help="The same seed writes the same files."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Write a multi-case dataset derived from the embedded MNI152 template.

    Each case is the SAME template brain acquired differently: its own in-plane spacing
    (0.7-1.6 mm), slice thickness (1-6 mm, resampled from the 1 mm template with a slice
    profile), field of view, voxel order (RAS, LPS, LAS, RPI, ... and permuted axes), bias
    field, contrast curve and Rician noise; labels follow the same geometry. cohort.json
    lists each case's parameters. Results on it test geometry and contrast handling, not
    anatomical variation between patients.

    Examples:
        medseg data mni152-cohort /tmp/cohort --cases 12
        medseg data mni152-cohort /tmp/cohort --cases 40 --seed 3 --force
    """
    with handle_errors(debug):
        guard_outputs([Output("OUT_DIR", out_dir, "dataset")], [], force)
        from medseg.data.mni152_cohort import write_mni152_cohort

        started = time.perf_counter()
        records = write_mni152_cohort(out_dir, cases=cases, seed=seed, force=force)
        orientations = sorted({r.orientation for r in records})
        report_written(
            f"MNI152 cohort ({cases} cases of one template brain; voxel orders "
            f"{', '.join(orientations)})",
            out_dir,
            started,
        )
        console.print(f"next: [bold]medseg plan {out_dir}[/]", highlight=False)


@app.command("preview")
def preview_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net raw layout)."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    case: str | None = typer.Option(None, "--case", help="Case id (default: the first one)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out PNG."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Save a PNG of one case's labels over its first channel (three orthogonal planes).

    Examples:
        medseg data preview /tmp/mni --out /tmp/mni.png
        medseg data preview /data/Dataset001_Brain --case BRAIN_007 --out brain7.png
    """
    with handle_errors(debug):
        guard_outputs([Output("--out", out, "png")], [Input("DATASET", dataset)], force)
        _preview(dataset, case, out)


def _preview(dataset: Path, case_id: str | None, out: Path) -> None:
    from medseg.data.nnunet import NnUNetDataset
    from medseg.viz.overlay import save_overlay_png

    started = time.perf_counter()
    ds = NnUNetDataset.open(dataset)
    volume = ds.load_case(case_id if case_id is not None else ds.case_ids("train")[0])
    if volume.label is None:
        from medseg.errors import DatasetError

        raise DatasetError(f"case {volume.case_id} in {dataset} has no label file to overlay")
    title = f"{ds.spec.name}: {volume.case_id}, labels over {ds.spec.channel_names[0]}"
    save_overlay_png(volume.image[0], volume.label, out, ds.spec.labels, title)
    report_written("label overlay", out, started)
