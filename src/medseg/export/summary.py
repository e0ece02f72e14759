"""The export's one summary table: file x backend x CPU class -> Dice drop, ms, size.

Built from the written manifest alone (so it can be re-made for any bundle): every ONNX file
measured on every CPU backend at export, the CPU class it was measured on, its mean and
worst-class Dice drop against FP32 of that backend, the ms per slice of that validation run,
its size, and whether it is the file that backend runs for that precision (``runs``). The
library returns rows; the CLI renders them (``medseg export``) and the export writes them as
JSON next to the manifest (:data:`SUMMARY_NAME`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medseg.bundle.cpu_files import CPU_FILE_KEY
from medseg.events import Event, EventSink
from medseg.names import file_precision

__all__ = ["SUMMARY_NAME", "SummaryRow", "export_summary", "summary_event", "write_summary"]

#: The summary's JSON file inside the bundle.
SUMMARY_NAME = "export-summary.json"


@dataclass(frozen=True)
class SummaryRow:
    """One file measured on one backend.

    Attributes:
        file: the ONNX file.
        precision: the precision it serves (``bf16``: the FP32 file with BF16 arithmetic).
        backend: ``"onnxruntime"`` or ``"openvino"``.
        cpu_class: the CPU class it was measured on (``None``: not recorded).
        dice_drop_pts: mean Dice drop against FP32 on the same backend, points.
        worst_class_drop_pts: the largest per-class drop (``None``: not recorded).
        ms_per_slice: ms per slice in the backend during validation (``None``: not timed).
        size_mb: file size in MB.
        runs: this is the file the backend runs for ``precision``.
        within_budget: INT8: whether the export's budget held (``None``: no budget).
        tool: what made the file when it is not the one the manifest names (e.g. NNCF).
    """

    file: str
    precision: str
    backend: str
    cpu_class: str | None
    dice_drop_pts: float
    worst_class_drop_pts: float | None
    ms_per_slice: float | None
    size_mb: float | None
    runs: bool
    within_budget: bool | None = None
    tool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sizes(manifest: Any) -> dict[str, float]:
    sizes = {e.file: e.size_bytes / 1e6 for e in manifest.precisions.values()}
    int8 = manifest.precisions.get("int8")
    if int8 is not None:
        cpu = int8.details.get(CPU_FILE_KEY)
        if isinstance(cpu, dict):
            sizes[cpu["file"]] = cpu["size_bytes"] / 1e6
        for extra in int8.details.get("openvino_files", {}).values():
            if isinstance(extra, dict) and "file" in extra:
                sizes[extra["file"]] = extra.get("size_bytes", 0) / 1e6
    return sizes


def _row(
    file: str,
    precision: str,
    backend: str,
    record: dict[str, Any],
    sizes: dict[str, float],
    runs: bool,
    cpu_class: str | None,
) -> SummaryRow:
    return SummaryRow(
        file=file,
        precision=precision,
        backend=backend,
        cpu_class=record.get("cpu_class", cpu_class),
        dice_drop_pts=float(record["dice_drop_pts"]),
        worst_class_drop_pts=record.get("worst_class_drop_pts"),
        ms_per_slice=record.get("ms_per_slice"),
        size_mb=round(sizes[file], 2) if file in sizes else None,
        runs=runs,
        within_budget=record.get("within_budget"),
        tool=record.get("tool"),
    )


def export_summary(manifest: Any) -> tuple[SummaryRow, ...]:
    """Rows of every file measured on every CPU backend (the runner's file first per
    backend and precision), from a :class:`~medseg.bundle.Manifest`."""
    sizes = _sizes(manifest)
    int8 = manifest.precisions.get("int8")
    cpu = int8.details.get(CPU_FILE_KEY) if int8 is not None else None
    rows: list[SummaryRow] = []
    for backend, by_precision in manifest.backend_accuracy.items():
        for precision, record in by_precision.items():
            file = record.get("file") or manifest.precisions[file_precision(precision)].file
            cls = record.get("cpu_class")
            rows.append(_row(file, precision, backend, record, sizes, True, cls))
            if precision != "int8" or int8 is None:
                continue
            others: dict[str, dict[str, Any]] = {}
            if backend == "onnxruntime" and file != int8.file:  # the entry's: ONNX Runtime
                others[int8.file] = {"cpu_class": int8.details.get("cpu_class"), **int8.accuracy}
            if isinstance(cpu, dict) and file != cpu["file"]:
                measured = cpu.get("accuracy_by_backend", {}).get(backend)
                if measured:
                    others[cpu["file"]] = measured
            for name, alt in record.get("alternatives", {}).items():
                if name != file:
                    others[name] = alt
            if backend != "onnxruntime" and int8.file not in others and file != int8.file:
                drop = record.get("files_compared", {}).get(int8.file)
                if drop is not None:
                    others[int8.file] = {"dice_drop_pts": drop}
            for name, alt in others.items():
                rows.append(_row(name, precision, backend, alt, sizes, False, None))
    return tuple(rows)


def write_summary(manifest: Any, folder: Path) -> Path:
    """Write :func:`export_summary` as ``folder/export-summary.json``; returns its path."""
    path = Path(folder) / SUMMARY_NAME
    rows = [row.to_dict() for row in export_summary(manifest)]
    path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return path


def summary_event(manifest: Any, folder: Path, on_event: EventSink) -> tuple[SummaryRow, ...]:
    """Write the summary JSON into ``folder`` and send it as one ``summary`` event (``data``:
    ``rows``, ``file``); returns the rows."""
    path = write_summary(manifest, folder)
    rows = export_summary(manifest)
    on_event(
        Event(
            "summary",
            "done",
            f"export summary: {len(rows)} file x backend rows ({path.name})",
            {"rows": [r.to_dict() for r in rows], "file": str(path)},
        )
    )
    return rows
