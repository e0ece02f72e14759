"""The bundle manifest ``medseg.json``: the contract between the training and scanner sides.

Written by ``medseg export`` and read by the runtime (so this module imports only the
standard library and medseg's numpy-only parts). :meth:`Manifest.from_dict` is the schema:
it checks every key and type and says which key is wrong and what is accepted.

A bundle directory holds ``medseg.json``, ``model.onnx`` (FP32), optionally
``model.fp16.onnx`` and ``model.int8.onnx`` (+ ``calibration.npz``), and, once built on the
target, ``engines/<device-key>/<precision>.plan`` with a sidecar JSON.

Schema version 2 (issue 12) adds the ``"window"`` recipe (a static network patch slid over
slices resampled to a target spacing), the dataset ``plan`` the model was trained with (stored
verbatim) and the per-class ``postprocess`` rules decided on validation. Version-1 manifests
still load (they have neither, and their recipes default the new fields).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file
from medseg.config_io import json_ready
from medseg.data.orientation import reorient_plan
from medseg.data.postprocess import Postprocess
from medseg.data.preprocessing import Recipe
from medseg.errors import ConfigError
from medseg.names import PRECISIONS as _PRECISIONS
from medseg.names import RUNTIME_PRECISIONS as _RUNTIME_PRECISIONS
from medseg.names import file_precision

__all__ = [
    "MANIFEST_NAME",
    "ONNX_FILES",
    "PRECISIONS",
    "RUNTIME_PRECISIONS",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "DimRange",
    "InputSpec",
    "Manifest",
    "PrecisionEntry",
    "file_precision",
    "file_sha256",
]

SCHEMA_VERSION = 2
#: Versions this medseg reads (1: before plans, windows and post-processing).
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
MANIFEST_NAME = "medseg.json"
PRECISIONS = _PRECISIONS  # medseg.names, re-exported here
#: Recipe fields added with schema 2 (left out of a version-1 manifest when at their defaults).
_RECIPE_V2_KEYS = ("patch_size", "target_spacing", "mirror_axes", "ct_zscore", "overlap")
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
RUNTIME_PRECISIONS = _RUNTIME_PRECISIONS  # medseg.names, re-exported here


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{MANIFEST_NAME}: missing key {where}{key}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(
            f"{MANIFEST_NAME}: {where}{key} must be {names}, got {type(value).__name__} {value!r}"
        )
    return value


def _recipe(data: dict[str, Any]) -> Recipe:
    """The ``preprocessing`` section; its errors name the section (``preprocessing: ...``)."""
    try:
        return Recipe.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{MANIFEST_NAME}: preprocessing: {exc}") from None


@dataclass(frozen=True)
class DimRange:
    """Allowed sizes of one input dimension (an optimisation-profile axis).

    ``min <= opt <= max``; ``opt`` is the size engines are tuned for.
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"shape range {self.min}:{self.opt}:{self.max} must satisfy 1 <= min <= opt <= max"
            )

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.is_static else f"{self.min}:{self.opt}:{self.max}"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> DimRange:
        if not isinstance(data, dict):
            raise ConfigError(f"{MANIFEST_NAME}: {where} must be an object with min, opt, max")
        values = [int(_require(data, k, int, f"{where}.")) for k in ("min", "opt", "max")]
        try:
            return cls(*values)
        except ConfigError:
            raise ConfigError(
                f"{MANIFEST_NAME}: {where} is {':'.join(map(str, values))} (min:opt:max); "
                "accepted: 1 <= min <= opt <= max"
            ) from None


@dataclass(frozen=True)
class InputSpec:
    """The network input: ``(N, C, H, W)`` float32 and the sizes it accepts.

    Attributes:
        name: ONNX input name.
        channels: ``C``.
        batch, height, width: allowed ranges of ``N``, ``H``, ``W`` (H and W multiples of 16).
        layout: always ``"NCHW"``.
        dtype: always ``"float32"`` (precision lives inside the graph; I/O stays FP32).
    """

    name: str
    channels: int
    batch: DimRange
    height: DimRange
    width: DimRange
    layout: str = "NCHW"
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        w = "input."
        return cls(
            name=_require(data, "name", str, w),
            channels=_require(data, "channels", int, w),
            batch=DimRange.from_dict(_require(data, "batch", dict, w), "input.batch"),
            height=DimRange.from_dict(_require(data, "height", dict, w), "input.height"),
            width=DimRange.from_dict(_require(data, "width", dict, w), "input.width"),
            layout=_require(data, "layout", str, w),
            dtype=_require(data, "dtype", str, w),
        )


@dataclass(frozen=True)
class PrecisionEntry:
    """One ONNX file of the bundle and what was measured on it at export.

    Attributes:
        file: file name inside the bundle.
        sha256: hex digest of the file.
        size_bytes: file size.
        parity: agreement with the reference (FP32: PyTorch; FP16/INT8: the FP32 ONNX) on real
            slices: ``max_abs_diff`` of logits and ``argmax_agreement`` in [0, 1].
        accuracy: on the validation split with ONNX Runtime CPU: ``dice_mean``,
            ``dice_per_class``, ``dice_drop_pts`` (FP32 minus this, in Dice points = x100),
            ``argmax_agreement`` with FP32.
        details: precision-specific facts (FP16: op types kept in FP32; INT8: calibration
            method, quantised and excluded nodes, the accuracy-guard attempts).
    """

    file: str
    sha256: str
    size_bytes: int
    parity: dict[str, float]
    accuracy: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], precision: str) -> PrecisionEntry:
        w = f"precisions.{precision}."
        file = _require(data, "file", str, w)
        if file != ONNX_FILES[precision]:
            raise ConfigError(
                f"{MANIFEST_NAME}: {w}file is {file!r}; a bundle's {precision} model is "
                f"{ONNX_FILES[precision]!r}"
            )
        return cls(
            file=file,
            sha256=_require(data, "sha256", str, w),
            size_bytes=_require(data, "size_bytes", int, w),
            parity=_require(data, "parity", dict, w),
            accuracy=_require(data, "accuracy", dict, w),
            details=_require(data, "details", dict, w),
        )


@dataclass(frozen=True)
class Manifest:
    """The content of ``medseg.json`` (see the module docstring).

    ``orientation`` is the voxel order the model was trained in, as axis codes (``"RAS"``:
    voxel axes point Right, Anterior, Superior); the runtime reorients inputs to it. ``None``
    (bundles exported before it was recorded): unknown, inputs are used as they are.

    ``plan`` is the dataset plan (fingerprint summary, ``plans.json`` content) the model was
    trained with, verbatim; ``postprocess`` the per-class rules decided on validation at
    export (``None``: none). A ``"window"`` recipe requires a static input height x width
    equal to its ``patch_size`` (only the batch axis varies).

    ``backend_accuracy`` is the validation accuracy of each precision measured on each CPU
    backend installed at export: ``{backend: {precision: {dice_mean, dice_per_class,
    dice_drop_pts, argmax_agreement, reference}}}``, the drop and agreement against FP32 of
    the same backend (OpenVINO's INT8 and BF16 numerics differ from ONNX Runtime's). Empty
    for bundles exported before it was recorded.
    """

    model: dict[str, Any]
    classes: dict[str, int]
    input: InputSpec
    output_name: str
    preprocessing: Recipe
    precisions: dict[str, PrecisionEntry]
    calibration: dict[str, Any] | None
    source: dict[str, Any]
    tool_versions: dict[str, str]
    created: str
    schema_version: int = SCHEMA_VERSION
    orientation: str | None = None
    plan: dict[str, Any] | None = None
    postprocess: Postprocess | None = None
    backend_accuracy: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        recipe = self.preprocessing
        if recipe.size_policy == "window":
            assert recipe.patch_size is not None  # guaranteed by Recipe
            ph, pw = recipe.patch_size
            h, w = self.input.height, self.input.width
            if not (h.is_static and w.is_static and (h.min, w.min) == (ph, pw)):
                raise ConfigError(
                    f"{MANIFEST_NAME}: a 'window' recipe with patch_size {ph}x{pw} needs a static "
                    f"input of that size, got height {h} and width {w}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the exact content of ``medseg.json``."""
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        data["postprocess"] = None if self.postprocess is None else self.postprocess.to_dict()
        if self.schema_version < 2:  # written back as it was read
            for key in ("plan", "postprocess"):
                if data[key] is None:
                    data.pop(key)
            if not data["backend_accuracy"]:  # measured per backend since schema 2's exports
                data.pop("backend_accuracy")
            defaults = Recipe().to_dict()
            for key in _RECIPE_V2_KEYS:
                if data["preprocessing"][key] == defaults[key]:
                    data["preprocessing"].pop(key)
        head = {"schema_version": data.pop("schema_version")}
        orientation = data.pop("orientation")
        ordered: dict[str, Any] = {}
        for key, value in data.items():  # orientation sits next to the preprocessing recipe
            ordered[key] = value
            if key == "preprocessing":
                ordered["orientation"] = orientation
        return {**head, **ordered}

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validate and parse; ConfigError naming the first wrong key otherwise."""
        if not isinstance(data, dict):
            raise ConfigError(f"{MANIFEST_NAME} must hold a JSON object")
        version = _require(data, "schema_version", int, "")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ConfigError(
                f"{MANIFEST_NAME} has schema_version {version}; this medseg reads versions "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}: re-export the bundle with "
                "this version"
            )
        classes = _require(data, "classes", dict, "")
        if not classes or not all(isinstance(v, int) for v in classes.values()):
            raise ConfigError(f"{MANIFEST_NAME}: classes must map names to integer labels")
        precisions = _require(data, "precisions", dict, "")
        unknown = sorted(set(precisions) - set(PRECISIONS))
        if unknown or "fp32" not in precisions:
            raise ConfigError(
                f"{MANIFEST_NAME}: precisions {sorted(precisions)} must include fp32 and only "
                f"{list(PRECISIONS)}"
            )
        calibration = data.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            raise ConfigError(f"{MANIFEST_NAME}: calibration must be an object or null")
        orientation = data.get("orientation")
        if orientation is not None:
            try:
                reorient_plan(orientation, orientation)
            except ConfigError:
                raise ConfigError(
                    f"{MANIFEST_NAME}: orientation {orientation!r} must be null or axis codes: "
                    "3 letters with one of R/L, A/P and S/I each, e.g. 'RAS'"
                ) from None
        plan = data.get("plan")
        if plan is not None and not isinstance(plan, dict):
            raise ConfigError(f"{MANIFEST_NAME}: plan must be an object or null")
        post = data.get("postprocess")
        postprocess = (
            None if post is None else Postprocess.from_dict(post, list(classes), "postprocess")
        )
        backend_accuracy = data.get("backend_accuracy", {})
        if not isinstance(backend_accuracy, dict) or not all(
            isinstance(by_precision, dict)
            and all(
                p in RUNTIME_PRECISIONS and isinstance(v, dict) for p, v in by_precision.items()
            )
            for by_precision in backend_accuracy.values()
        ):
            raise ConfigError(
                f"{MANIFEST_NAME}: backend_accuracy must map backend -> precision (one of "
                f"{', '.join(RUNTIME_PRECISIONS)}) -> accuracy object"
            )
        return cls(
            schema_version=version,
            backend_accuracy=backend_accuracy,
            model=_require(data, "model", dict, ""),
            classes=classes,
            input=InputSpec.from_dict(_require(data, "input", dict, "")),
            output_name=_require(data, "output_name", str, ""),
            preprocessing=_recipe(_require(data, "preprocessing", dict, "")),
            precisions={p: PrecisionEntry.from_dict(e, p) for p, e in precisions.items()},
            calibration=calibration,
            source=_require(data, "source", dict, ""),
            tool_versions=_require(data, "tool_versions", dict, ""),
            created=_require(data, "created", str, ""),
            orientation=orientation,
            plan=plan,
            postprocess=postprocess,
        )

    @classmethod
    def load(cls, bundle: Path) -> Manifest:
        """Read and validate ``bundle/medseg.json``."""
        path = Path(bundle) / MANIFEST_NAME
        if not path.is_file():
            raise ConfigError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:  # name the file itself, not only "medseg.json"
            message = str(exc)
            if message.startswith(MANIFEST_NAME):
                message = f"{path}{message[len(MANIFEST_NAME) :]}"
            raise ConfigError(message) from None

    def save(self, bundle: Path) -> Path:
        """Write ``bundle/medseg.json`` atomically."""
        path = Path(bundle) / MANIFEST_NAME
        with atomic_file(path) as tmp:  # strict JSON: a non-finite number becomes null
            tmp.write_text(json.dumps(json_ready(self.to_dict()), indent=2, allow_nan=False) + "\n")
        return path

    def onnx_path(self, bundle: Path, precision: str, verify: bool = True) -> Path:
        """Path of a precision's ONNX file; with ``verify``, its sha256 must match the manifest."""
        if precision not in self.precisions:
            raise ConfigError(
                f"bundle {bundle} has no {precision} model; it has {sorted(self.precisions)}"
            )
        entry = self.precisions[precision]
        path = Path(bundle) / entry.file
        if not path.is_file():
            raise ConfigError(f"bundle file {path} is missing")
        if verify and file_sha256(path) != entry.sha256:
            raise ConfigError(
                f"{path} does not match the sha256 in {MANIFEST_NAME} (truncated or tampered); "
                "re-export the bundle"
            )
        return path
