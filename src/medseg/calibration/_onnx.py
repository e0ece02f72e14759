"""Shared plumbing of the precision converters: loading, checking, running and quietening.

Every function imports onnx / onnxruntime / modelopt at call time, so importing
:mod:`medseg.calibration` stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.deps import require
from medseg.errors import ChannelMismatchError, ConfigError, DatasetError, ExportError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = [
    "InputSpec",
    "check_onnx_path",
    "check_samples",
    "copy_metadata",
    "first_line",
    "float_types",
    "input_spec",
    "load_model",
    "modelopt_quiet",
    "node_names",
    "ort_session",
    "run_model",
]


@dataclass(frozen=True)
class InputSpec:
    """The single image input of a segmentation model: name and ``(B, C, H, W)`` dims.

    ``None`` marks a dynamic dimension.
    """

    name: str
    dims: tuple[int | None, ...]

    @property
    def spatial_dynamic(self) -> bool:
        return any(d is None for d in self.dims[1:])


def first_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` for one-line error messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else '(no message)'}"


def check_onnx_path(path: Path, what: str) -> Path:
    """Raise :class:`ConfigError` unless ``path`` is an existing ``.onnx`` file."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"{what} {path} must be an .onnx file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; export the model first")
    return path


def load_model(path: Path) -> onnx.ModelProto:
    """Load an ONNX file (with its external data); :class:`ExportError` if it is not valid."""
    onnx = require("onnx", "precision conversion")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ExportError(f"cannot read ONNX file {path}: {first_line(exc)}") from exc


def input_spec(model: onnx.ModelProto, path: Path) -> InputSpec:
    """The model's single ``(B, C, H, W)`` input; :class:`ExportError` for anything else."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) not in (4, 5):
        shapes = [(i.name, len(i.type.tensor_type.shape.dim)) for i in inputs]
        raise ExportError(
            f"{path} has inputs {shapes} (name, rank); accepted: one (B, C, H, W) or "
            "(B, C, D, H, W) image input"
        )
    dims = tuple(
        d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim
    )
    return InputSpec(inputs[0].name, dims)


def check_samples(samples: Any, spec: InputSpec, what: str) -> np.ndarray:
    """Validate ``(N, C, H, W)`` float samples against the model input; return float32.

    Raises:
        DatasetError: not a 4-D float array, empty, channels or fixed sizes that do not
            match the model, or non-finite values.
    """
    array = np.asarray(samples)
    rank = len(spec.dims)
    layout = "(N, C, H, W)" if rank == 4 else "(N, C, D, H, W)"
    if array.ndim != rank or array.shape[0] < 1 or not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(
            f"{what} has shape {array.shape} and dtype {array.dtype}; "
            f"accepted: a float32 {layout} array with N >= 1"
        )
    names = (
        ("channels", "height", "width") if rank == 4 else ("channels", "depth", "height", "width")
    )
    for axis, name in enumerate(names, start=1):
        expected = spec.dims[axis]
        if expected is not None and array.shape[axis] != expected:
            error = ChannelMismatchError if axis == 1 else DatasetError
            raise error(
                f"{what} has {array.shape[axis]} {name} (shape {array.shape}); the model's "
                f"input {spec.name!r} accepts {expected}"
            )
    bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if bad.any():
        raise DatasetError(
            f"{what} sample {int(np.flatnonzero(bad)[0])} contains NaN or Inf "
            f"({int(bad.sum())} of {array.shape[0]} samples do); accepted: finite values"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def ort_session(model: Path | bytes, threads: int = 0) -> onnxruntime.InferenceSession:
    """A CPU ONNX Runtime session; ``threads=0`` lets ONNX Runtime choose.

    Thread spinning is off: calibration runs share machines with training jobs.
    """
    from medseg.runtime.backends.onnxruntime import SessionFromOnnx

    require("onnxruntime", "running ONNX models on CPU")
    loader = SessionFromOnnx(model, ["cpu"], threads or None, spinning=False)
    return loader()


def run_model(path: Path, inputs: np.ndarray, what: str) -> np.ndarray:
    """Run ``path`` on ``inputs`` in ONNX Runtime (CPU); :class:`ExportError` if it cannot
    run or gives non-finite outputs."""
    from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner

    try:
        runner = OnnxRuntimeRunner(ort_session(path))
        first = runner.output_names[0]
        output = runner.infer({runner.input_names[0]: inputs}, [first])[first]
    except Exception as exc:
        raise ExportError(f"{what} does not run in ONNX Runtime: {first_line(exc)}") from exc
    if not np.isfinite(output).all():
        raise ExportError(
            f"{what} gives NaN or Inf outputs on {inputs.shape[0]} sample(s) in ONNX Runtime"
        )
    return np.asarray(output)


@contextlib.contextmanager
def modelopt_quiet(verbose: bool) -> Iterator[str]:
    """Keep modelopt's logs, prints and progress bars off the terminal unless ``verbose``.

    Yields the ``log_level`` to pass to modelopt functions that take one. modelopt logs to
    stdout through the ``modelopt.onnx`` logger and re-configures that logger (level and
    handlers) on every ``quantize`` call; both are restored afterwards. No warning filter
    is touched.
    """
    if verbose:
        yield "INFO"
        return
    loggers = [
        logging.getLogger(name)
        for name in ["modelopt.onnx", *logging.root.manager.loggerDict]
        if name == "modelopt.onnx" or name.startswith("modelopt.onnx.")
    ]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield "CRITICAL"
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            for handler in list(lg.handlers):
                if handler not in handlers:
                    lg.removeHandler(handler)
            for handler in handlers:
                if handler not in lg.handlers:
                    lg.addHandler(handler)


def copy_metadata(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    """Carry the exporter's ``metadata_props`` (class names, shapes...) over to ``target``."""
    present = {prop.key for prop in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in present:
            target.metadata_props.add(key=prop.key, value=prop.value)


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX elem type, from inputs, outputs, value_info and initializers."""
    types: dict[str, int] = {}
    graph = model.graph
    for info in (*graph.input, *graph.output, *graph.value_info):
        types[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def node_names(model: onnx.ModelProto, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types``, in graph order."""
    return [node.name for node in model.graph.node if node.op_type in op_types]
