"""Library events rendered by the CLI: one plain line per event off a terminal, the status
prefix chosen by the CLI (the library sends data and plain text only)."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from medseg.cli.events import event_line, rendered_events
from medseg.events import Event


def test_events_render_as_one_plain_line_each_off_a_terminal() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    events = [
        Event("int8", "start", "quantising to INT8..."),
        Event("int8.guard", "info", "INT8 with  2 layer(s) kept in FP32", {"met": True}),
        Event("calibration", "warning", "asked for [500] slices"),  # brackets: not markup
        Event("int8", "done", "ONNX INT8: model.int8.onnx (1.0 MB, 2.0 s)", {"seconds": 2.0}),
    ]
    with rendered_events(console, "exporting...") as sink:
        for event in events:
            sink(event)
    assert out.getvalue().splitlines() == [
        "quantising to INT8...",
        "  INT8 with  2 layer(s) kept in FP32",
        "warning: asked for [500] slices",
        "✓ ONNX INT8: model.int8.onnx (1.0 MB, 2.0 s)",
    ]
    assert [event_line(e) for e in events[2:3]] == ["warning: asked for [500] slices"]
    assert str(events[3]) == events[3].message  # print is a valid sink


def test_on_a_terminal_start_events_only_update_the_status() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with rendered_events(console, "building...") as sink:
        sink(Event("build.fp16", "start", "building fp16 from model.fp16.onnx..."))
        sink(Event("build.fp16", "done", "fp16: engines/x/fp16.plan (1.0 s)"))
    text = out.getvalue()
    assert "fp16: engines/x/fp16.plan (1.0 s)" in text and "✓" in text
