"""The lean scanner-side runtime: bundle in, masks out.

What ships to a Jetson or a scanner workstation. Importing it costs numpy only: the backends
import TensorRT + cuda-python or ONNX Runtime when loaded, and nibabel / pydicom / highdicom
are imported when a file is read. It never imports torch, onnx or modelopt (a test checks).

    from medseg.runtime import Segmenter, load_scan
    scan = load_scan(["scan.nii.gz"])
    with Segmenter.from_bundle("bundle", precision="int8") as segmenter:
        result = segmenter.segment(scan.image)
    result.labels  # (X, Y, Z) uint8
"""

from __future__ import annotations

from medseg.runtime.backends import BACKENDS, Backend, InferTiming, create_backend
from medseg.runtime.io import OutputPaths, Scan, load_scan, plan_outputs, write_outputs
from medseg.runtime.segmenter import Segmentation, Segmenter, SegmentTiming, softmax

__all__ = [
    "BACKENDS",
    "Backend",
    "InferTiming",
    "OutputPaths",
    "Scan",
    "SegmentTiming",
    "Segmentation",
    "Segmenter",
    "create_backend",
    "load_scan",
    "plan_outputs",
    "softmax",
    "write_outputs",
]
