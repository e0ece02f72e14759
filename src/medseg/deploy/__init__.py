"""Deployment targets beyond the bundle itself: an NVIDIA Triton model repository.

    from medseg.deploy import export_triton
    models = export_triton("bundle", "model_repository")

Numpy and the standard library only (like :mod:`medseg.runtime`): exporting copies files and
writes ``config.pbtxt`` text; it needs neither Triton nor its client.
"""

from __future__ import annotations

from medseg.deploy.triton import ONNX_PLATFORM, PLAN_PLATFORM, TritonModel, export_triton

__all__ = ["ONNX_PLATFORM", "PLAN_PLATFORM", "TritonModel", "export_triton"]
