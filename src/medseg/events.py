"""Progress of long library calls (export, build) as data: one :class:`Event` per step.

The library never formats for a terminal: it calls ``on_event(Event(...))``; the CLI renders
each event (a rich status line on a terminal, one plain line per event otherwise, see
``medseg.cli.events``), a notebook or a service keeps ``event.data``. ``str(event)`` is its
message, so ``print`` is a valid sink.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Event", "EventSink", "Status", "file_done", "ignore"]

#: ``start``: a step begins (a terminal shows it as the status line); ``done``: a step
#: finished, ``data`` holds its numbers; ``info``: a detail of the step in progress;
#: ``warning``: something a reviewer should read (the run goes on).
Status = Literal["start", "done", "info", "warning"]


@dataclass(frozen=True)
class Event:
    """One step of a long call.

    Attributes:
        step: stable id, e.g. ``"onnx.fp32"``, ``"int8.guard"``, ``"build.fp16"``.
        status: see :data:`Status`.
        message: one plain line for people (no markup, no status prefix).
        data: the step's numbers and paths (JSON-ready values), e.g. ``{"file": ...,
            "size_bytes": ..., "seconds": ..., "dice_mean": ...}``.
    """

    step: str
    status: Status
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """A sink that drops every event."""


def file_done(step: str, what: str, path: Path, started: float, detail: str, **data: Any) -> Event:
    """``done`` event of a step that wrote ``path``: its size and the seconds since ``started``.

    Message: ``"ONNX FP16: model.fp16.onnx (1.2 MB, 3.4 s); DETAIL"``.
    """
    size = Path(path).stat().st_size
    seconds = time.perf_counter() - started
    return Event(
        step,
        "done",
        f"{what}: {Path(path).name} ({size / 1e6:.1f} MB, {seconds:.1f} s); {detail}",
        {"file": str(path), "size_bytes": size, "seconds": round(seconds, 3), **data},
    )
