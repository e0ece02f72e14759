"""Is a bundle's recorded accuracy true on this CPU? INT8 and BF16 numerics depend on the
CPU class (:attr:`medseg.runtime.cpu.CpuFeatures.cpu_class`): the demo bundle's CPU INT8 file
lost 0.1 pt on an AMX machine and 1.7 pt on an AVX2 one.

The export records, with each backend's accuracy in ``backend_accuracy``, the class it was
measured on (``cpu_class``; more classes measured later go into ``by_cpu_class``) and, for
INT8, whether it met the export's budget (``within_budget``). :func:`cpu_choice` is what the
runtime's ``auto`` backend does with that: keep the asked precision where its accuracy is
known on this class (on the chosen backend, else on the other CPU backend), otherwise fall
back to FP32 (whose numerics do not depend on the class) with one line saying why.
Standard library only: the runtime imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CLASS_DEPENDENT", "CpuChoice", "class_note", "cpu_choice", "measured_classes"]

#: Precisions whose accuracy depends on the CPU class (FP32 and FP16-on-CPU do not).
CLASS_DEPENDENT = ("int8", "bf16")


def _record(manifest: Any, backend: str, precision: str) -> dict[str, Any]:
    found = manifest.backend_accuracy.get(backend, {}).get(precision)
    return found if isinstance(found, dict) else {}


def measured_classes(manifest: Any, backend: str, precision: str) -> tuple[str, ...]:
    """CPU classes the bundle records ``precision``'s accuracy on ``backend`` for (empty:
    none recorded, e.g. a bundle exported before classes were recorded)."""
    record = _record(manifest, backend, precision)
    classes = [record["cpu_class"]] if isinstance(record.get("cpu_class"), str) else []
    extra = record.get("by_cpu_class")
    if isinstance(extra, dict):
        classes += [str(c) for c in extra if str(c) not in classes]
    return tuple(classes)


def _known_good(manifest: Any, backend: str, precision: str, cpu_class: str) -> bool:
    """Recorded on this class, and (INT8) within the export's budget there."""
    if cpu_class not in measured_classes(manifest, backend, precision):
        return False
    record = _record(manifest, backend, precision)
    if record.get("cpu_class") != cpu_class:
        record = record.get("by_cpu_class", {}).get(cpu_class, {})
    return record.get("within_budget", True) is not False


def class_note(manifest: Any, backend: str, precision: str, cpu_class: str) -> str | None:
    """One line when ``cpu_class`` is not among the classes ``precision`` was measured on,
    on ``backend``; ``None`` when it is, for class-independent precisions, and for bundles
    that record no class (nothing to compare with)."""
    if precision not in CLASS_DEPENDENT:
        return None
    classes = measured_classes(manifest, backend, precision)
    if not classes or cpu_class in classes:
        return None
    return (
        f"this CPU is {cpu_class}; the bundle's {precision} accuracy on {backend} was measured "
        f"on {', '.join(classes)} only: it may differ here"
    )


@dataclass(frozen=True)
class CpuChoice:
    """What ``auto`` runs on a CPU: backend, precision and the one line saying why (or None)."""

    backend: str
    precision: str
    note: str | None = None


def cpu_choice(
    manifest: Any, backend: str, precision: str, cpu_class: str, installed: tuple[str, ...]
) -> CpuChoice:
    """``auto``'s CPU choice for ``precision``, given the backend it would pick.

    Keeps ``(backend, precision)`` when the bundle records no class (older bundles), or
    records this class with the precision within budget. Otherwise another installed CPU
    backend where that holds; otherwise FP32 on ``backend`` with a note.
    """
    if precision not in CLASS_DEPENDENT:
        return CpuChoice(backend, precision)
    classes = measured_classes(manifest, backend, precision)
    if not classes and precision != "bf16":
        return CpuChoice(backend, precision)
    if _known_good(manifest, backend, precision, cpu_class):
        return CpuChoice(backend, precision)
    why = (
        class_note(manifest, backend, precision, cpu_class)
        or f"the bundle's {precision} on {backend} misses its accuracy budget on {cpu_class}"
    )
    for other in installed:
        if other != backend and _known_good(manifest, other, precision, cpu_class):
            return CpuChoice(
                other, precision, f"{why}; running {precision} on {other}, measured here"
            )
    if precision == "bf16" and not classes:
        return CpuChoice(backend, precision)
    return CpuChoice(
        backend, "fp32", f"{why}; running fp32 (auto), whose accuracy holds on every CPU"
    )
