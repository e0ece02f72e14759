"""Pipeline commands whose capability is not built yet.

Each one is registered under its final name so ``medseg-export --fp16 ...`` and
``medseg export --fp16 ...`` already reach the same place, and says plainly that it is
not built yet (exit code 2) instead of pretending. Each is replaced by its real module
when its issue lands.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from medseg.cli.common import handle_errors
from medseg.errors import NotBuiltError

__all__ = ["PLANNED", "make_planned"]

#: typer/click settings of a planned command: it accepts (and ignores) any arguments.
ACCEPT_ANY = {"allow_extra_args": True, "ignore_unknown_options": True}

#: command name -> (one-line purpose, planned usage)
PLANNED: dict[str, tuple[str, str]] = {
    "build": (
        "Compile TensorRT engines for a bundle on the target device (Jetson, workstation).",
        "medseg build BUNDLE --precision all",
    ),
    "infer": (
        "Segment a NIfTI volume or DICOM series with a bundle (TensorRT or ONNX Runtime).",
        "medseg infer BUNDLE scan.nii.gz --out mask.nii.gz",
    ),
    "bench": (
        "Accuracy-versus-latency table of a bundle, with CI gates on Dice drop and ms.",
        "medseg bench BUNDLE --data DATASET --gate gates.toml --report DIR",
    ),
}


def make_planned(name: str) -> Callable[..., None]:
    """A command that accepts any arguments and exits 2 with a one-line 'not built yet'."""
    purpose, usage = PLANNED[name]

    def command(ctx: typer.Context) -> None:
        with handle_errors(debug=False):
            raise NotBuiltError(
                f"medseg {name} is not built yet in this version (planned: {usage})"
            )

    command.__name__ = f"{name}_planned"
    command.__doc__ = f"{purpose} NOT BUILT YET.\n\nPlanned usage:\n\n    {usage}"
    command.context_settings = ACCEPT_ANY  # type: ignore[attr-defined]
    return command
