"""Importers: models trained elsewhere (nnU-Net v2) -> a medseg run that ``medseg-export`` takes."""

from __future__ import annotations

__all__: list[str] = []
