"""One error hierarchy for medseg.

Every error a user can cause (a bad file, a bad option, a missing extra) is a
:class:`MedsegError`. Its message is one line that names the file or value received and
what would be accepted. The CLI prints that line and exits with code 2 (``--debug`` shows
the traceback); anything that is not a ``MedsegError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ChannelMismatchError",
    "ConfigError",
    "DatasetError",
    "EngineBuildError",
    "ExportError",
    "GateFailedError",
    "MedsegError",
    "MissingDependencyError",
    "ModelMismatchError",
    "ServerError",
]


class MedsegError(Exception):
    """Base class of every error caused by user input or environment; exit code 2 in the CLI."""

    exit_code = 2


class ConfigError(MedsegError, ValueError):
    """An option, recipe or configuration value is invalid.

    Also a ``ValueError`` so that pydantic (``medseg.schema``) records the key path of one raised
    in a dataclass's ``__post_init__``.
    """


class DatasetError(MedsegError):
    """A dataset folder or a medical image file is missing, corrupt or inconsistent."""


class ExportError(MedsegError):
    """ONNX export, simplification, parity or precision conversion failed."""


class ChannelMismatchError(DatasetError):
    """An image, a batch or a dataset has another channel count than the model takes.

    The one class for this mismatch wherever it is found (a scan, a batch given to a backend,
    a dataset given to export or calibration).
    """


class EngineBuildError(MedsegError):
    """A TensorRT engine could not be built, or a plan on disk cannot be used (stale, foreign)."""


class BackendError(MedsegError):
    """A runtime backend could not load or run a model (session, engine context, CUDA call)."""


class ModelMismatchError(ConfigError):
    """A bundle's model file disagrees with its manifest (input/output names or shapes)."""


class MissingDependencyError(MedsegError):
    """An optional dependency is not installed; the message names the extra to install."""


class GateFailedError(MedsegError):
    """A benchmark gate failed (exit code 1: the run worked, the result is not good enough)."""

    exit_code = 1


class ServerError(MedsegError):
    """An inference server could not be started or reached, or it refused a request."""
