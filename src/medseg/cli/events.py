"""Render library :class:`~medseg.events.Event` s: a rich status line on a terminal (updated
by ``start`` events), one plain line per event otherwise (logs, CI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text

from medseg.events import Event, EventSink

__all__ = ["event_line", "rendered_events"]

_PREFIX = {"start": "", "done": "✓ ", "info": "  ", "warning": "warning: "}
_STYLE = {"start": "", "done": "green", "info": "", "warning": "yellow"}


def event_line(event: Event) -> str:
    """The plain line of an event: ``"✓ ONNX FP32: ..."``, ``"warning: ..."``."""
    return _PREFIX[event.status] + event.message


@contextmanager
def rendered_events(console: Console, title: str) -> Iterator[EventSink]:
    """A sink that prints events on ``console`` while the block runs.

    On a terminal a status spinner shows the current step (``start`` events) and the other
    events print above it, their prefix coloured; elsewhere every event is one plain line.
    """
    if not console.is_terminal:

        def plain(event: Event) -> None:
            console.print(event_line(event), highlight=False, markup=False, soft_wrap=True)

        yield plain
        return
    with console.status(title) as status:

        def live(event: Event) -> None:
            if event.status == "start":
                status.update(event.message)
                return
            line = Text(_PREFIX[event.status], style=_STYLE[event.status])
            line.append(event.message)  # library text: never parsed as markup
            console.print(line, highlight=False)

        yield live
