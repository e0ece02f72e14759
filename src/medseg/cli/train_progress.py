"""Render the events of a training run: a rich bar on a terminal, plain lines in a log.

In a log (output not a terminal) every validation and setup event is one line, and a step
line (step, loss, samples/s, elapsed, ETA, data share) comes at least every
:data:`LOG_INTERVAL` seconds, so a person following the log never waits long for news.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from medseg.cli.events import event_line
from medseg.events import Event, EventSink

__all__ = ["LOG_INTERVAL", "training_events"]

#: Seconds between two step lines in a log (a line comes after the first step past it).
LOG_INTERVAL = 20.0


@contextmanager
def training_events(console: Console, interval: float = LOG_INTERVAL) -> Iterator[EventSink]:
    """A sink for :func:`medseg.train.train`'s ``on_event`` while the block runs."""
    if not console.is_terminal:
        last = [-float("inf")]

        def plain(event: Event) -> None:
            if event.step == "train.step":  # validations do not hold back the next step line
                now = time.monotonic()
                if now - last[0] < interval:
                    return
                last[0] = now
            text = event.message if event.status == "info" else event_line(event)
            console.print(text, highlight=False, markup=False, soft_wrap=True)

        yield plain
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("warm-up", total=None, detail="")

        def live(event: Event) -> None:
            if event.step == "train.step":
                d = event.data
                eta = int(d["eta"])
                detail = (
                    f"loss {d['loss']:.4f}  {d['samples_per_s']:.1f} samples/s  "
                    f"ETA {eta // 60}:{eta % 60:02d}  data {d['data_share']:.0%}"
                )
                total = d["total"] if d["total"] < 10**8 else None
                progress.update(
                    task, completed=d["step"], total=total, description="training", detail=detail
                )
                return
            style = "green" if event.status == "done" else ""
            progress.console.print(Text(event_line(event), style=style), highlight=False)

        yield live
