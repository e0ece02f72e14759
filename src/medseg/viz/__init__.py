"""Pictures people look at: label overlays and plots (matplotlib, imported lazily)."""

from __future__ import annotations

from medseg.viz.overlay import save_overlay_png, save_prediction_png

__all__ = ["save_overlay_png", "save_prediction_png"]
