"""Triton Python-backend model ``medseg-<name>-segment`` (copied as ``<model>/1/model.py``).

``medseg export-triton`` copies this file into the repository. It runs inside Triton's Python
backend stub and hands every request to :class:`medseg.deploy.segment_service.SegmentService`,
i.e. to :class:`medseg.runtime.Segmenter` on the bundle copy in ``1/bundle/`` (the code path of
``medseg infer``). The server's Python environment needs ``medseg-edge[runtime]``.

Tensors cross the stub by DLPack, in both directions, never as numpy arrays: the stub's
``Tensor(name, ndarray)`` / ``as_numpy()`` are compiled against numpy < 2 and read numpy 2
arrays wrongly (an output came back with 0 bytes), while DLPack is a C struct that does not
depend on numpy's ABI. A request that fails (bad input) gets a Triton error response whose
message names the problem; the model keeps serving the next one.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub's interpreter ignores PYTHONPATH; `medseg serve` names the medseg it runs here.
_SOURCE = os.environ.get("MEDSEG_SOURCE", "")
if _SOURCE and _SOURCE not in sys.path:
    sys.path.insert(0, _SOURCE)

from medseg.deploy.segment_service import (  # noqa: E402
    INPUT_AFFINE,
    INPUT_NIFTI,
    INPUT_VOLUME,
    OUTPUT_LABELS,
    RequestCancelled,
    SegmentService,
)
from medseg.errors import MedsegError  # noqa: E402

__all__ = ["TritonPythonModel"]

# The stub takes a DLPack capsule without renaming it "used_dltensor", so numpy's capsule
# destructor would complain (the stub owns the tensor and frees it); mark it used ourselves.
_USED = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def _input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else np.from_dlpack(tensor)


def _output(name: str, array: np.ndarray) -> Any:
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED)
    return tensor


def _error(message: str, invalid_input: bool, kind: str | None = None) -> Any:
    kind = kind or ("INVALID_ARG" if invalid_input else "INTERNAL")
    code = getattr(pb_utils.TritonError, kind, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    """The Python backend's model class: ``initialize``, ``execute``, ``finalize``."""

    service: SegmentService

    def initialize(self, args: dict[str, str]) -> None:
        """Check the bundle copy against the exported sha256 and open the segmenter.

        Raises:
            MedsegError: the bundle copy does not match (the message gives the rebuild
                command); Triton then refuses to load the model.
        """
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = Path(__file__).resolve().parent.parent
        self.service = SegmentService.from_model_dir(model_dir, params)
        backend = self.service.segmenter.backend.describe()
        pb_utils.Logger.log_info(
            f"{config['name']}: {backend}, {self.service.settings.precision}, "
            f"cap {self.service.settings.max_voxels} voxels"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request: ``labels`` (X, Y, Z) uint8, or an error naming why."""
        responses = []
        for request in requests:
            # Triton >= 23.10: true once a gRPC client cancelled the call or its deadline
            # (client_timeout) passed; checked between batches, so an abandoned volume stops
            # within one batch instead of holding the model instance until it is done.
            is_cancelled = getattr(request, "is_cancelled", None)
            try:
                if is_cancelled is not None and is_cancelled():
                    raise RequestCancelled("request cancelled by the client before it started")
                labels = self.service.segment_request(
                    volume=_input(request, INPUT_VOLUME),
                    affine=_input(request, INPUT_AFFINE),
                    nifti=_input(request, INPUT_NIFTI),
                    cancelled=is_cancelled,
                )
                responses.append(pb_utils.InferenceResponse([_output(OUTPUT_LABELS, labels)]))
            except RequestCancelled as exc:
                pb_utils.Logger.log_info(f"{exc}; abandoned")
                responses.append(_error(str(exc), invalid_input=False, kind="CANCELLED"))
            except MedsegError as exc:
                responses.append(_error(str(exc), invalid_input=True))
            except Exception as exc:  # a bug must fail this request, not the server
                responses.append(_error(f"internal error: {type(exc).__name__}: {exc}", False))
        return responses

    def finalize(self) -> None:
        """Close the backend when Triton unloads the model."""
        self.service.close()
