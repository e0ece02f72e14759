"""medseg-edge: medical-image segmentation from training to the scanner.

The package follows the pipeline (see the README): ``medseg.data`` (dataset folders,
slicing, preprocessing recipes), ``medseg.metrics`` (Dice, surface distances),
``medseg.cli`` (the ``medseg`` command). Heavy dependencies are imported lazily by the
modules that need them, so ``import medseg`` stays cheap.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
