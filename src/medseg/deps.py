"""Lazy imports of optional, heavy dependencies.

Modules import nibabel, scipy, torch, onnxruntime... through :func:`require` at the point
of use, so that ``import medseg`` and ``import medseg.runtime`` stay cheap, and a missing
package gives a :class:`~medseg.errors.MissingDependencyError` naming the extra to install.
Nothing is ever installed at run time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medseg.errors import MissingDependencyError

__all__ = ["EXTRA_OF", "require"]

#: Which ``pip install 'medseg-edge[EXTRA]'`` provides each optional top-level module.
EXTRA_OF: dict[str, str] = {
    "nibabel": "data",
    "scipy": "data",
    "matplotlib": "data",
    "torch": "train",
    "monai": "train",
    "onnx": "export",
    "onnxsim": "export",
    "modelopt": "export",
    "onnxruntime": "runtime",
    "openvino": "openvino",
    "pydicom": "runtime",
    "highdicom": "runtime",
    "tensorrt": "trt",
    "cuda": "trt",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the extra that provides it.

    Args:
        module: dotted module name, e.g. ``"nibabel"`` or ``"scipy.ndimage"``.
        purpose: what it is needed for, e.g. ``"reading NIfTI files"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRA_OF.get(top, "dev")
        raise MissingDependencyError(
            f"{top} is needed for {purpose} but is not installed ({exc}); "
            f"install it with: pip install 'medseg-edge[{extra}]'"
        ) from exc
