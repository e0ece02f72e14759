"""The ``medseg`` app and the standalone entry points of the pipeline steps.

``medseg-export ARGS`` runs exactly the command ``medseg export ARGS``: both are built from
the same function, so options, help and behaviour cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from medseg import __version__
from medseg.cli import bench as bench_cmd
from medseg.cli import build as build_cmd
from medseg.cli import data, demo, import_cmd
from medseg.cli import deploy as deploy_cmd
from medseg.cli import export as export_cmd
from medseg.cli import infer as infer_cmd
from medseg.cli import plan as plan_cmd
from medseg.cli import serve as serve_cmd
from medseg.cli import train as train_cmd

__all__ = [
    "app",
    "bench_main",
    "build_main",
    "export_main",
    "infer_main",
    "main",
    "train_main",
]

_SETTINGS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="medseg",
    help="medseg-edge: medical-image segmentation from training to the scanner.\n\n"
    "Pipeline: data -> train -> export (ONNX FP32/FP16/INT8) -> build (TensorRT, on the "
    "target) -> infer -> bench (accuracy vs latency, CI gates).",
    no_args_is_help=True,
    context_settings=_SETTINGS,
    pretty_exceptions_show_locals=False,
)
#: The pipeline steps, each also a standalone ``medseg-NAME`` entry point.
PIPELINE: dict[str, Callable[..., None]] = {
    "train": train_cmd.train,
    "export": export_cmd.export,
    "build": build_cmd.build,
    "infer": infer_cmd.infer,
    "bench": bench_cmd.bench,
}


def _register(target: typer.Typer, name: str, command: Callable[..., None]) -> None:
    target.command(name, context_settings=getattr(command, "context_settings", None))(command)


app.add_typer(data.app, name="data")
app.add_typer(import_cmd.app, name="import")
for _name, _command in PIPELINE.items():
    _register(app, _name, _command)
app.command("demo")(demo.demo)
app.command("demo-bundle")(demo.demo_bundle)
app.command("export-triton")(deploy_cmd.export_triton)
app.command("plan")(plan_cmd.plan)
app.command("cv-summary")(plan_cmd.cv_summary)
app.command("serve")(serve_cmd.serve)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medseg-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """medseg-edge: medical-image segmentation from training to the scanner."""


def _standalone(name: str) -> typer.Typer:
    """A one-command app that runs ``medseg NAME`` as ``medseg-NAME``."""
    single = typer.Typer(
        name=f"medseg-{name}", context_settings=_SETTINGS, pretty_exceptions_show_locals=False
    )
    _register(single, name, PIPELINE[name])
    return single


def main() -> None:
    """Entry point of ``medseg``."""
    app()


def train_main() -> None:
    """Entry point of ``medseg-train`` (= ``medseg train``)."""
    _standalone("train")()


def export_main() -> None:
    """Entry point of ``medseg-export`` (= ``medseg export``)."""
    _standalone("export")()


def build_main() -> None:
    """Entry point of ``medseg-build`` (= ``medseg build``)."""
    _standalone("build")()


def infer_main() -> None:
    """Entry point of ``medseg-infer`` (= ``medseg infer``)."""
    _standalone("infer")()


def bench_main() -> None:
    """Entry point of ``medseg-bench`` (= ``medseg bench``)."""
    _standalone("bench")()
