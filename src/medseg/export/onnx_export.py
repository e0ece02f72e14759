"""PyTorch -> ONNX: dynamo export (opset 18, one file), onnxsim, metadata.

The graph gets a dynamic batch axis (and dynamic H, W on request) within the ranges of the
bundle's :class:`~medseg.bundle.InputSpec`; names, shapes and class names also go into the
ONNX ``metadata_props`` so a bare ONNX file still says what it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file, reraise_interrupt
from medseg.bundle import InputSpec
from medseg.deps import require
from medseg.errors import ExportError

__all__ = ["OPSET", "OUTPUT_NAME", "export_onnx"]

OPSET = 18
OUTPUT_NAME = "logits"


@contextlib.contextmanager
def _quiet_torch_onnx() -> Iterator[None]:
    """The exporter logs a warning per missing torchvision op; keep the terminal for results."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # raised inside torch.export (2.13) on every export; nothing a user can act on
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"
            )
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: Any,
    path: Path,
    spec: InputSpec,
    metadata: Mapping[str, Any],
    simplify: bool = True,
    patch: Sequence[int] | None = None,
) -> Path:
    """Export ``model`` (eval mode, CPU) to ``path`` as one ONNX file.

    Args:
        model: ``torch.nn.Module`` mapping ``(N, C, H, W)`` to ``(N, K, H, W)`` logits (or
            ``(N, C, D, H, W)`` to ``(N, K, D, H, W)`` with a 3-D ``patch``).
        path: output ``.onnx`` (written atomically).
        spec: input name, channels and the ranges of N, H, W (a static range fixes the dim).
        metadata: key -> JSON-able value, stored as strings in ``metadata_props``.
        simplify: run onnxsim (constant folding, dead-node removal) after export.
        patch: a static spatial shape (2 or 3 ints, e.g. an nnU-Net patch ``(D, H, W)``):
            only the batch axis is dynamic and the spec's H, W ranges are not used.
    """
    onnx = require("onnx", "ONNX export")
    torch = require("torch", "ONNX export")
    from torch.export import Dim

    model = model.eval().cpu()
    # The batch axis is always dynamic in the ONNX file (the checks run other batch sizes);
    # the spec's batch range becomes the TensorRT optimisation profile at build time.
    dims: dict[int, Any] = {0: Dim("batch", min=1, max=max(spec.batch.max, 2))}
    if patch is not None:
        if len(patch) not in (2, 3) or any(int(p) < 1 for p in patch):
            raise ExportError(f"patch {tuple(patch)} must be 2 or 3 positive sizes")
        example = torch.zeros(2, spec.channels, *(int(p) for p in patch))
    else:
        example = torch.zeros(2, spec.channels, spec.height.opt, spec.width.opt)
    if patch is None and not spec.height.is_static:
        dims[2] = 16 * Dim("h16", min=max(1, spec.height.min // 16), max=spec.height.max // 16)
    if patch is None and not spec.width.is_static:
        dims[3] = 16 * Dim("w16", min=max(1, spec.width.min // 16), max=spec.width.max // 16)
    try:
        with _quiet_torch_onnx(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=OPSET,
                input_names=[spec.name],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,) if dims else None,
                external_data=False,
                verbose=False,
            )
        assert program is not None  # f=None returns the program
        proto = program.model_proto
    except Exception as exc:  # the exporter raises many types; all mean "export failed"
        reraise_interrupt(exc)  # torch.export wraps a Ctrl-C / SIGTERM in its own error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export (dynamo, opset {OPSET}) failed: {first}") from exc
    if simplify:
        onnxsim = require("onnxsim", "ONNX simplification")
        simplified, ok = onnxsim.simplify(proto)
        if not ok:
            raise ExportError("onnxsim could not validate the simplified graph")
        proto = simplified
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}") from exc
    with atomic_file(Path(path)) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)
