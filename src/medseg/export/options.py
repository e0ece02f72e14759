"""What ``medseg export`` is asked for (:class:`ExportOptions`) and the pieces both export
paths (slice models: :mod:`medseg.export.pipeline`; window recipes:
:mod:`medseg.export.windowed`) share: the input spec, the dataset check, precision entries.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.bundle import DimRange, InputSpec, PrecisionEntry, file_sha256
from medseg.deps import EXTRA_OF
from medseg.errors import ChannelMismatchError, ConfigError, DatasetError, MissingDependencyError
from medseg.export.accuracy import CPU_BACKENDS, Accuracy, installed_cpu_backends
from medseg.limits import MAX_BATCH, check_batch
from medseg.transforms.preprocessing import Recipe

__all__ = [
    "CALIBRATION_NAME",
    "INPUT_NAME",
    "PARITY_MAX_ABS_DIFF",
    "PARITY_MIN_ARGMAX",
    "ExportOptions",
    "check_dataset_matches_model",
    "input_spec",
    "precision_entry",
    "tool_versions",
    "window_input_spec",
]

INPUT_NAME = "image"
#: FP32 ONNX vs PyTorch on real slices: largest accepted |logit difference| and the least
#: accepted argmax agreement. Float reordering in ONNX Runtime gives ~1e-5 here.
PARITY_MAX_ABS_DIFF = 1e-3
PARITY_MIN_ARGMAX = 0.999
CALIBRATION_NAME = "calibration.npz"


@dataclass(frozen=True)
class ExportOptions:
    """What ``medseg export`` was asked for.

    Attributes:
        fp16: also write ``model.fp16.onnx`` (AutoCast, I/O in FP32).
        int8: also write ``model.int8.onnx`` (Q/DQ, calibrated on ``calib_data``).
        calib_data: dataset folder to draw calibration slices from (its training split).
        calib_slices: number of calibration slices.
        calib_method: ``"max"`` or ``"entropy"``.
        max_dice_drop: INT8 mean Dice-drop budget in points, met by every INT8 file on the
            backend that runs it (default 0.3); ``None``: no budget (measure and record only).
        max_class_drop: INT8 budget on the worst class's Dice drop in points (default 1.0);
            ``None``: the mean only.
        batch: allowed batch sizes (min, opt, max).
        height, width: fixed input size; ``None``: the size the model was trained at.
        dynamic_hw: accept any H, W (multiples of 16) from 16 to 4x the training size.
        data: dataset for parity and validation accuracy; ``None``: ``calib_data``, else
            the dataset recorded in the checkpoint.
        check_tensorrt: before the bundle is written, build every ONNX file with TensorRT-RTX
            (in memory, no GPU needed): a node TensorRT refuses fails the export, and the
            network report (and any partial-Q/DQ warning) is logged.
        guard_backend: the CPU backend the TensorRT-form Q/DQ file's budget is met on
            (``"onnxruntime"`` or ``"openvino"``); ``None``: ONNX Runtime, whose Q/DQ
            arithmetic is TensorRT's (the CPU INT8 file is always guarded on ONNX Runtime, the
            backend that runs it).
    """

    fp16: bool = False
    int8: bool = False
    calib_data: Path | None = None
    calib_slices: int = 64
    calib_method: str = "max"
    max_dice_drop: float | None = 0.3
    max_class_drop: float | None = 1.0
    batch: tuple[int, int, int] = (1, 8, 32)
    height: int | None = None
    width: int | None = None
    dynamic_hw: bool = False
    data: Path | None = None
    check_tensorrt: bool = False
    guard_backend: str | None = None

    def __post_init__(self) -> None:
        if self.guard_backend is not None:
            if self.guard_backend not in CPU_BACKENDS:
                raise ConfigError(
                    f"--guard-backend {self.guard_backend!r}: accepted {', '.join(CPU_BACKENDS)}"
                )
            if not self.int8:
                raise ConfigError(
                    "--guard-backend is the INT8 accuracy guard's: use it with --int8"
                )
            if self.guard_backend not in installed_cpu_backends():
                raise MissingDependencyError(
                    f"--guard-backend {self.guard_backend}: {self.guard_backend} is not installed; "
                    f"install it with: pip install 'medseg-edge[{EXTRA_OF[self.guard_backend]}]'"
                )
        if self.int8 and self.calib_data is None:
            raise ConfigError("--int8 needs calibration data: pass --calib-data DATASET")
        if self.calib_method not in ("max", "entropy"):
            raise ConfigError(f"--calib-method {self.calib_method!r} must be 'max' or 'entropy'")
        for flag, value in (
            ("--max-dice-drop", self.max_dice_drop),
            ("--max-class-drop", self.max_class_drop),
        ):
            if value is not None and not value >= 0:
                raise ConfigError(f"{flag} {value} must be >= 0 points, or 'none'")
        if not self.int8:
            for option, unused in (
                ("--calib-data", self.calib_data is not None),
                ("--calib-slices", self.calib_slices != 64),
                ("--calib-method", self.calib_method != "max"),
            ):
                if unused:
                    raise ConfigError(
                        f"{option} sets the INT8 calibration: use it with --int8 (or drop it)"
                    )
        if self.dynamic_hw and (self.height is not None or self.width is not None):
            raise ConfigError("--dynamic-hw and --height/--width are exclusive: choose one")
        if (self.height is None) != (self.width is None):
            raise ConfigError("--height and --width go together")
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and (value <= 0 or value % 16):
                raise ConfigError(f"--{name} {value} must be a positive multiple of 16")
        if self.calib_slices < 1 or self.calib_slices > 100_000:
            raise ConfigError(
                f"--calib-slices {self.calib_slices} must be >= 1 (slices drawn from --calib-data)"
            )
        text = ":".join(map(str, self.batch))
        try:
            DimRange(*self.batch)  # validates min <= opt <= max
        except ConfigError:
            raise ConfigError(
                f"--batch {text} must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:32"
            ) from None
        try:
            check_batch(self.batch[-1], "MAX")
        except ConfigError:
            raise ConfigError(
                f"--batch {text} must be MIN:OPT:MAX with MAX at most {MAX_BATCH}, e.g. 1:8:32"
            ) from None
        for option, path in (("--calib-data", self.calib_data), ("--data", self.data)):
            if path is not None and not Path(path).is_dir():
                raise ConfigError(f"{option} {path}: no such dataset folder")

    @property
    def int8_backend(self) -> str:
        """The backend the INT8 guard measures on (see ``guard_backend``)."""
        return self.guard_backend or "onnxruntime"

    @property
    def budget(self) -> Any:
        """The INT8 :class:`~medseg.export.guard.Budget` of ``max_dice_drop`` and
        ``max_class_drop``."""
        from medseg.export.guard import Budget

        return Budget(self.max_dice_drop, self.max_class_drop)


def input_spec(options: ExportOptions, channels: int, trained_hw: tuple[int, int]) -> InputSpec:
    h, w = (options.height, options.width) if options.height is not None else trained_hw
    assert h is not None and w is not None  # both or neither (ExportOptions)
    if options.dynamic_hw:
        height, width = DimRange(16, h, 4 * h), DimRange(16, w, 4 * w)
    else:
        height, width = DimRange(h, h, h), DimRange(w, w, w)
    return InputSpec(INPUT_NAME, channels, DimRange(*options.batch), height, width)


def window_input_spec(options: Any, channels: int, recipe: Recipe, name: str) -> InputSpec:
    """Static ``patch_size`` H x W, the options' batch range; conflicting sizes refused."""
    assert recipe.patch_size is not None  # a window recipe
    ph, pw = recipe.patch_size
    if options.dynamic_hw:
        raise ConfigError(
            "--dynamic-hw does not apply to a sliding-window run: its network input is the "
            f"static patch {ph}x{pw} (slices of any size are covered by windows)"
        )
    if options.height is not None and (options.height, options.width) != (ph, pw):
        raise ConfigError(
            f"--height/--width {options.height}x{options.width} differ from the run's patch "
            f"{ph}x{pw}; a sliding-window bundle's input is its training patch"
        )
    static = (DimRange(ph, ph, ph), DimRange(pw, pw, pw))
    return InputSpec(name, channels, DimRange(*options.batch), *static)


def check_dataset_matches_model(path: Path, spec: Any, meta: dict[str, Any]) -> None:
    """A dataset's labels and channel count must be the trained model's (``meta``: checkpoint)."""
    if dict(spec.labels) != dict(meta["classes"]):
        raise DatasetError(
            f"{path} has labels {dict(spec.labels)} but the model was trained on {meta['classes']}"
        )
    if spec.num_channels != meta["in_channels"]:
        raise ChannelMismatchError(
            f"{path} has {spec.num_channels} channel(s) but the model takes {meta['in_channels']}"
        )


def tool_versions() -> dict[str, str]:
    versions = {"medseg-edge": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxsim", "onnxruntime", "nvidia-modelopt", "monai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def precision_entry(
    path: Path, parity: dict[str, float], accuracy: Accuracy, details: dict[str, Any]
) -> PrecisionEntry:
    return PrecisionEntry(
        path.name, file_sha256(path), path.stat().st_size, parity, accuracy.to_dict(), details
    )
