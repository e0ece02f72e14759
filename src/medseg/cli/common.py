"""What every command shares: consoles, the ``--debug`` option, error-to-exit-code mapping."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from medseg.atomic import Terminated, sigterm_as_interrupt
from medseg.errors import ConfigError, MedsegError
from medseg.outputs import Input, Output, guard

__all__ = [
    "DEBUG_OPTION",
    "console",
    "err_console",
    "format_size",
    "guard_outputs",
    "handle_errors",
    "parse_patch_size",
    "report_written",
]

console = Console()
err_console = Console(stderr=True)

#: ``--debug`` on every command: show the traceback instead of the one-line error.
DEBUG_OPTION = typer.Option(
    False, "--debug", envvar="MEDSEG_DEBUG", help="Show the full traceback on errors."
)


@contextlib.contextmanager
def handle_errors(debug: bool) -> Iterator[None]:
    """Turn a :class:`MedsegError` into one red line on stderr and its exit code (2, or 1).

    Anything else is a bug and keeps its traceback. SIGTERM is handled like SIGINT (Ctrl-C):
    temporary outputs are removed, then the exit code is 143 (130 for SIGINT).
    """
    try:
        with sigterm_as_interrupt():
            yield
    except MedsegError as exc:
        if debug:
            raise
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
        )
        raise typer.Exit(exc.exit_code) from None
    except Terminated:
        err_console.print("[yellow]terminated[/]")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def guard_outputs(
    outputs: list[Output | None], inputs: list[Input | None], force: bool = False
) -> None:
    """Run the output guard (:func:`medseg.outputs.guard`) and print what will be replaced.

    Every command calls this first, with all of its outputs and inputs.
    """
    for note in guard(outputs, inputs, force=force):
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def format_size(num_bytes: int) -> str:
    """Human-readable size: ``"1.6 MB"``."""
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def report_written(what: str, path: Path, started: float) -> None:
    """Print one success line: what was written, where, its size and how long it took."""
    elapsed = time.perf_counter() - started
    console.print(
        f"[green]✓[/] {what}: [bold]{path}[/] ({format_size(_tree_size(path))}, {elapsed:.1f} s)",
        highlight=False,
    )


def parse_patch_size(text: str | None) -> tuple[int, int] | None:
    """A ``--patch`` / ``--max-patch`` value in pixels: ``"128"`` -> (128, 128);
    ``"128x160"`` -> (128, 160); ``None`` -> ``None``."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"size {text!r} must be N or HxW in pixels, e.g. 128 or 128x160"
        ) from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ConfigError(f"size {text!r} must be N or HxW in pixels, e.g. 128 or 128x160")
