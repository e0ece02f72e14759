"""Helpers of the calibration tests (imported by name: the test folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SIZE", "crop", "export_fp32", "run", "snr_db"]

#: The tiny network is exported at this fixed size (dynamic batch); MNI slices are cropped
#: to it around the brain centre so the tests stay fast on two shared CPU cores.
SIZE = 64


def crop(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Central ``size x size`` crop of ``(N, C, H, W)`` slices (brain tissue, not background)."""
    h, w = images.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(images[:, :, top : top + size, left : left + size])


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an ONNX file in ONNX Runtime (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def snr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    noise = float(np.sum((actual.astype(np.float64) - reference) ** 2))
    return 10.0 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def export_fp32(model: object, path: Path, size: int = SIZE) -> Path:
    """Export ``model`` with medseg's own exporter: ``image (B, 1, size, size)``, dynamic
    batch, output ``logits``; one torch thread while exporting."""
    import torch

    from medseg.bundle import DimRange, InputSpec
    from medseg.export.onnx_export import export_onnx

    spec = InputSpec(
        "image", 1, DimRange(1, 2, 64), DimRange(size, size, size), DimRange(size, size, size)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return export_onnx(model, path, spec, {}, simplify=False)
    finally:
        torch.set_num_threads(threads)
