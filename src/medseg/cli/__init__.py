"""The ``medseg`` command line: a thin typer layer over the library API."""

from __future__ import annotations

__all__: list[str] = []
