"""Render the events of a training run: a rich bar on a terminal, plain lines in a log.

In a log (output not a terminal) every validation and setup event is one line, and a step
line (step, loss, samples/s, elapsed, ETA, data share) comes at least every
:data:`LOG_INTERVAL` seconds, so a person following the log never waits long for news.
Where no step runs (loading torch, planning, preparing the cases, a long validation, the
final checkpoint) :class:`Heartbeat` prints what the run is doing whenever the log has been
silent for :data:`HEARTBEAT_INTERVAL` seconds.
"""

from __future__ import annotations

import threading
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

__all__ = ["HEARTBEAT_INTERVAL", "LOG_INTERVAL", "Heartbeat", "log_heartbeat", "training_events"]

#: Seconds between two step lines in a log (a line comes after the first step past it).
LOG_INTERVAL = 20.0
#: Longest silence of a log (seconds) before :class:`Heartbeat` says what the run is doing.
HEARTBEAT_INTERVAL = 25.0


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 60}:{s % 60:02d}"


class Heartbeat:
    """A line in a log whenever nothing was printed for ``interval`` seconds (a daemon thread).

    Args:
        console: where the run prints (not a terminal).
        interval: longest silence, seconds.
        started: ``time.perf_counter()`` the printed elapsed time counts from.
    """

    def __init__(self, console: Console, interval: float, started: float) -> None:
        self.console, self.interval, self.started = console, interval, started
        self.phase = "starting (loading torch)"
        self.last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medseg-log-heartbeat", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread ends within a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def print(self, text: str) -> None:
        """Print a line of the run and restart the silence count."""
        with self._lock:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
            self.last = time.monotonic()

    def touch(self, phase: str | None = None) -> None:
        """Something was printed (or the run moved on to ``phase``)."""
        if phase is not None:
            self.phase = phase
        self.last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(0.5, self.interval / 4)):
            if time.monotonic() - self.last >= self.interval:
                elapsed = _clock(time.perf_counter() - self.started)
                self.print(f"  ... {self.phase} (elapsed {elapsed})")


@contextmanager
def log_heartbeat(
    console: Console, started: float, interval: float = HEARTBEAT_INTERVAL, enabled: bool = True
) -> Iterator[Heartbeat | None]:
    """A running :class:`Heartbeat` when enabled and ``console`` is not a terminal, else
    ``None``."""
    if console.is_terminal or not enabled:
        yield None
        return
    beat = Heartbeat(console, interval, started)
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()


@contextmanager
def training_events(
    console: Console, interval: float = LOG_INTERVAL, heartbeat: Heartbeat | None = None
) -> Iterator[EventSink]:
    """A sink for :func:`medseg.train.train`'s ``on_event`` while the block runs.

    ``start`` events (a validation pass begins) print nothing: they name what a
    ``heartbeat`` line says while the log would otherwise stay silent.
    """
    if not console.is_terminal:
        last = [-float("inf")]

        def show(text: str) -> None:
            if heartbeat is not None:
                heartbeat.print(text)
            else:
                console.print(text, highlight=False, markup=False, soft_wrap=True)

        def plain(event: Event) -> None:
            if event.status == "start":
                if heartbeat is not None:  # names a silent stretch; the silence goes on
                    heartbeat.phase = event.message
                return
            if heartbeat is not None:
                heartbeat.phase = "training" if event.step != "train.setup" else "warm-up steps"
            if event.step == "train.step":  # validations do not hold back the next step line
                now = time.monotonic()
                if now - last[0] < interval:
                    return
                last[0] = now
            show(event.message if event.status == "info" else event_line(event))

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
            if event.status == "start":
                progress.update(task, description=event.message)
                return
            style = "green" if event.status == "done" else ""
            progress.console.print(Text(event_line(event), style=style), highlight=False)

        yield live
