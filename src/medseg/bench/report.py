"""Benchmark reports: the table's cells, ``report.md``, ``junit.xml`` and the accuracy plot.

The table follows Ultralytics' benchmark (Status / Size / metric / ms / FPS columns), one
row per (backend, precision, batch) sorted by backend (torch, onnxruntime, tensorrt),
precision (fp32, fp16, int8) and batch. Units: Size in MB (10^6 bytes); Dice in [0, 1];
dDice = change of mean Dice vs FP32 of the same backend in points (Dice x 100, negative =
worse); HD95 in mm; p50 / p95 in ms per batch; volume s = median end-to-end seconds per
volume. ``junit.xml`` has one test case per gate so that CI shows each gate by name.

The library returns the table as strings (:func:`results_title`, :func:`results_rows`,
:func:`skip_reasons`, :func:`gate_rows`); ``medseg.cli.tables`` draws them on the terminal.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file
from medseg.bench.networks import network_lines
from medseg.bench.results import BenchResults, GateResult, VariantResult, row_sort_key
from medseg.bench.roofline import share_of_peak
from medseg.deps import require

__all__ = [
    "COLUMNS",
    "GATE_COLUMNS",
    "REPORT_FILES",
    "TEXT_COLUMNS",
    "gate_rows",
    "pareto_front",
    "results_rows",
    "results_title",
    "skip_reasons",
    "write_report",
]

COLUMNS = (
    "Backend",
    "Precision",
    "Batch",
    "Status",
    "Size (MB)",
    "Dice",
    "dDice (pts)",
    "HD95 (mm)",
    "p50 ms",
    "p95 ms",
    "slices/s",
    "volume s",
    "pre/post %",
    "% FP32 peak",
)
_TEXT_COLUMNS = 4  # the first four are text; the rest are right-aligned numbers
#: how many of :data:`COLUMNS`, from the left, are text (left-aligned); the rest are numbers.
TEXT_COLUMNS = _TEXT_COLUMNS
#: the gates table: the two value columns are right-aligned.
GATE_COLUMNS = ("Gate", "Measured", "Allowed", "Result")
#: key -> file name of everything :func:`write_report` writes.
REPORT_FILES = {
    "results": "results.json",
    "report": "report.md",
    "junit": "junit.xml",
    "plot": "accuracy_vs_latency.png",
}
_STATUS = {"ok": "✅", "skipped": "❎ skipped", "error": "❌ error"}
_NONE = "—"


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NONE
    return format(value, spec)


def _peak_share(results: BenchResults, row: VariantResult) -> float | None:
    """Share of the CPU's FP32 peak a CPU row reaches (:mod:`medseg.bench.roofline`)."""
    if results.machine.get("gpu") or row.backend not in ("onnxruntime", "openvino", "torch"):
        return None
    peak = (results.machine.get("fp32_peak") or {}).get("gflops")
    return share_of_peak(results.bundle.get("gflop_per_slice"), row.slices_per_s, peak)


def _cells(row: VariantResult, peak_pct: float | None = None) -> list[str]:
    acc, lat = row.accuracy, row.latency
    dice, hd95, drop = (
        (None, None, None) if acc is None else (acc.dice_mean, acc.hd95_mm, acc.dice_drop_pts)
    )
    p50, p95 = (None, None) if lat is None else (lat.p50_ms, lat.p95_ms)
    size = None if row.file_size_bytes is None else row.file_size_bytes / 1e6
    return [
        row.backend,
        row.precision,
        str(row.batch),
        _STATUS[row.status],
        _fmt(size, ".1f"),
        _fmt(dice, ".4f"),
        _fmt(None if drop is None else -drop, "+.2f"),
        _fmt(hd95, ".2f"),
        _fmt(p50, ".2f"),
        _fmt(p95, ".2f"),
        _fmt(row.slices_per_s, ".1f"),
        _fmt(row.volume_s, ".2f"),
        _fmt(row.prepost_pct, ".1f"),
        _fmt(peak_pct, ".1f"),
    ]


def _sorted(results: BenchResults) -> list[VariantResult]:
    return sorted(results.rows, key=row_sort_key)


def _reasons(results: BenchResults) -> list[str]:
    return [f"{r.label}: {r.status} ({r.reason})" for r in _sorted(results) if not r.ok]


def results_title(results: BenchResults) -> str:
    """The benchmark table's title: ``medseg bench: <bundle name>``."""
    return f"medseg bench: {results.bundle.get('name', '')}".rstrip(": ")


def results_rows(results: BenchResults) -> list[list[str]]:
    """The benchmark table (Ultralytics style): one row of :data:`COLUMNS` cells per variant,
    sorted by backend, precision and batch."""
    return [_cells(row, _peak_share(results, row)) for row in _sorted(results)]


def skip_reasons(results: BenchResults) -> list[str]:
    """One line per variant that did not run: ``<label>: <status> (<reason>)``."""
    return _reasons(results)


def _result(gate: GateResult) -> str:
    return "❎ skipped" if gate.skipped else ("✅ pass" if gate.passed else "❌ FAIL")


def _with_unit(value: float | None, unit: str) -> str:
    digits = {"dice": 4, "%": 1}.get(unit, 2)
    return _fmt(value, f".{digits}f") + (
        "" if value is None or unit in ("", "dice") else f" {unit}"
    )


def gate_rows(gates: Sequence[GateResult]) -> list[tuple[str, str, str, str]]:
    """One row of :data:`GATE_COLUMNS` cells per gate: Gate, Measured, Allowed, Result."""
    return [
        (g.name, _with_unit(g.measured, g.unit), _with_unit(g.allowed, g.unit), _result(g))
        for g in gates
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when lower x and higher y are better, sorted by x.

    A point is dominated when another is at least as good on both axes and better on one.
    Points with a NaN coordinate are left out.
    """
    ok = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = [
        i
        for i in ok
        if not any(
            points[j][0] <= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]
            for j in ok
        )
    ]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _plot(results: BenchResults, path: Path) -> None:
    """Mean Dice against p50 ms per slice, one point per ok row, the Pareto front marked."""
    require("matplotlib", "the accuracy-vs-latency plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in _sorted(results)
        if r.ok
        and r.latency is not None
        and r.accuracy is not None
        and math.isfinite(r.latency.p50_ms)
        and math.isfinite(r.accuracy.dice_mean)
    ]
    pts = [(r.latency.p50_ms / r.batch, r.accuracy.dice_mean) for r in rows]  # type: ignore[union-attr]
    markers = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}
    colors = {
        "torch": "tab:gray",
        "onnxruntime": "tab:blue",
        "openvino": "tab:purple",
        "tensorrt": "tab:green",
    }
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (row, (x, y)) in enumerate(zip(rows, pts, strict=True)):
        ax.scatter(x, y, marker=markers[row.precision], color=colors[row.backend], s=40, zorder=3)
        ax.annotate(
            row.label,
            (x, y),
            textcoords="offset points",
            xytext=(5, 4 if i % 2 else -10),
            fontsize=8,
        )
    front = pareto_front(pts)
    if front:
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.plot(fx, fy, ls="--", color="black", lw=1, zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="red", zorder=4)
        ax.legend(loc="lower right", fontsize=8)
    if pts and max(p[0] for p in pts) > 10 * min(p[0] for p in pts) > 0:
        ax.set_xscale("log")
    if not pts:
        ax.text(
            0.5, 0.5, "no ok row with both Dice and latency", ha="center", transform=ax.transAxes
        )
    m = results.machine
    ax.set_xlabel("p50 latency per slice (ms) = p50 per batch / batch")
    ax.set_ylabel("mean Dice")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(
        f"{results.bundle.get('name', 'bundle')}: accuracy vs latency\n"
        f"{m.get('cpu') or 'unknown CPU'} | {m.get('gpu') or 'no GPU'}",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _md_escape(text: Any) -> str:
    return _NONE if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def _gate_line(g: GateResult) -> str:
    rest = g.message.removeprefix(f"{g.name}: ")
    return f"- {_result(g)} `{g.name}`: {_md_escape(rest)}"


def _roofline_lines(results: BenchResults) -> list[str]:
    """How the "% FP32 peak" column was derived (empty when it was not)."""
    gflop = results.bundle.get("gflop_per_slice")
    peak = results.machine.get("fp32_peak") or {}
    if not gflop or not peak.get("gflops"):
        return []
    return [
        f"- % FP32 peak: {gflop:.2f} GFLOP per slice (convolutions and matrix products of the "
        f"FP32 ONNX graph) x slices/s / FP32 peak; peak: {_md_escape(peak['how'])}",
        "",
    ]


def _markdown(results: BenchResults, out_dir: Path) -> str:
    m, s, b, d = results.machine, results.settings, results.bundle, results.dataset
    failed = results.failed_gates
    verdict = (
        f"**FAILED**: {len(failed)} of {len(results.gates)} gates"
        if failed
        else f"**PASSED**: {len(results.gates)} gates"
    )
    lines = [
        f"# medseg bench: {_md_escape(b.get('name', ''))}",
        "",
        f"{verdict}. Created {results.created}.",
        "",
        f"- bundle: `{b.get('path', '')}` (fingerprint `{b.get('fingerprint', '')}`)",
        f"- dataset: {d.get('name', '')} split {d.get('split', '')}, cases: {d.get('cases', '')}",
        "",
        "## Machine",
        "",
        *(f"- {k}: {_md_escape(v)}" for k, v in m.items() if not isinstance(v, dict)),
        *(
            f"- {k}: " + ", ".join(f"{n} {v}" for n, v in sub.items())
            for k, sub in m.items()
            if isinstance(sub, dict)
        ),
        "",
        "## Settings",
        "",
        *(f"- {k}: {_md_escape(v)}" for k, v in s.items()),
        "",
        "## Results",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < _TEXT_COLUMNS else "---:" for i in range(len(COLUMNS))) + "|",
        *(
            "| " + " | ".join(_md_escape(c) for c in _cells(r, _peak_share(results, r))) + " |"
            for r in _sorted(results)
        ),
        "",
        *_roofline_lines(results),
        *(f"- {_md_escape(x)}" for x in _reasons(results)),
        "",
        "## Gates",
        "",
        *(_gate_line(g) for g in results.gates),
        *([] if results.gates else ["No gates were configured."]),
        "",
        "## Accuracy vs latency",
        "",
        f"![accuracy vs latency]({REPORT_FILES['plot']})",
        "",
        *network_lines(b.get("networks") or {}),
    ]
    worst = [
        (r, r.accuracy.worst_slice)
        for r in _sorted(results)
        if r.accuracy is not None and r.accuracy.worst_slice
    ]
    if worst:
        lines += ["## Worst slices", ""]
        for row, w in worst:
            where = f"case {w['case_id']}, axis {w['axis']} slice {w['index']}"
            link = ""
            if w.get("png"):  # relative to the report folder, as the evaluation writes it
                png = Path(str(w["png"]))
                if png.is_absolute() and png.is_relative_to(out_dir.absolute()):
                    png = png.relative_to(out_dir.absolute())
                link = f": [{png.name}]({png.as_posix()})"
            lines.append(f"- {row.label}: {where}, Dice {_fmt(w['dice'], '.4f')}{link}")
        lines.append("")
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


def _junit(results: BenchResults) -> ET.ElementTree:
    gates = results.gates
    counts = {
        "tests": str(len(gates)),
        "failures": str(sum(not g.passed for g in gates)),
        "skipped": str(sum(g.skipped for g in gates)),
        "errors": "0",
    }
    root = ET.Element("testsuites", {"name": "medseg bench", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "medseg.bench.gates", **counts})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("bundle", results.bundle.get("name")),
        ("fingerprint", results.bundle.get("fingerprint")),
        ("cpu", results.machine.get("cpu")),
        ("gpu", results.machine.get("gpu")),
    ):
        ET.SubElement(props, "property", name=key, value=str(value or ""))
    for g in gates:
        case = ET.SubElement(suite, "testcase", classname="medseg.bench.gates", name=g.name)
        if g.skipped:
            ET.SubElement(case, "skipped", message=g.message)
        elif not g.passed:
            ET.SubElement(case, "failure", message=g.message, type="GateFailed").text = g.message
        else:
            ET.SubElement(case, "system-out").text = g.message
    return ET.ElementTree(root)


def write_report(results: BenchResults, out_dir: Path) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created if missing), each atomically.

    Args:
        results: the run, gates included.
        out_dir: output folder; its parent must exist. Existing report files are replaced.

    Returns:
        :data:`REPORT_FILES` keys -> written paths.
    """
    from medseg.outputs import Output, guard, write_marker

    out = Path(out_dir)
    # into a new or empty folder, or a bench report medseg wrote (its marker), nowhere else
    guard([Output("out_dir", out, "bench-report", "update")])
    out.mkdir(exist_ok=True)
    write_marker(out, "bench-report", "medseg bench")
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    results.save(paths["results"])
    _plot(results, paths["plot"])
    with atomic_file(paths["report"]) as tmp:
        tmp.write_text(_markdown(results, out), encoding="utf-8")
    with atomic_file(paths["junit"]) as tmp:
        tree = _junit(results)
        ET.indent(tree)
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
    return paths
