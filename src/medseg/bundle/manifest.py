"""The bundle manifest ``medseg.json``: the contract between the training and scanner sides.

Written by ``medseg export`` and read by the runtime (so this module imports only the
standard library, pydantic and medseg's numpy-only parts). The dataclasses below ARE the
schema: their type hints are checked by pydantic (:func:`medseg.schema.parse`), their
``__post_init__`` holds the cross-field rules; an error names the file, the key path and what
is accepted. To add a field: give it a type and a default (older manifests lack it), see
``medseg/schema.py``.

A bundle directory holds ``medseg.json``, ``model.onnx`` (FP32), optionally
``model.fp16.onnx`` and ``model.int8.onnx`` (+ ``calibration.npz``), and, once built on the
target, ``engines/<device-key>/<precision>.plan`` with a sidecar JSON.

Schema version 2 (issue 12) adds the ``"window"`` recipe (a static network patch slid over
slices resampled to a target spacing), the dataset ``plan`` the model was trained with (stored
verbatim) and the per-class ``postprocess`` rules decided on validation. Version-1 manifests
still load (they have neither, and their recipes default the new fields).

Schema version 3 (issue 15) adds imported nnU-Net models: ``preprocessing`` may be an
:class:`~medseg.transforms.nnunet_recipe.NnunetRecipe` (``"kind": "nnunet"``; the medseg
:class:`~medseg.transforms.preprocessing.Recipe` is kind ``"medseg"``, the default when the key is
absent), ``input.depth`` with layout ``"NCDHW"`` for 3D patches (static, only the batch
varies), and fold ensembles: ``folds`` names the folds, each fold's ONNX files live in
``fold_<k>/`` and each precision entry lists them under ``folds`` (the entry's own ``sha256``
is :func:`ensemble_sha256` of the fold digests). A manifest that uses none of these may keep
schema 2; one that uses any must say 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

from medseg.bundle.entries import (
    MANIFEST_NAME,
    NNUNET_SCHEMA_VERSION,
    ONNX_FILES,
    PRECISIONS,
    RUNTIME_PRECISIONS,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    InputSpec,
    PrecisionEntry,
    file_sha256,
    fold_dir,
)
from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, StrictInt, StrictStr, Via, load_json, parse, save_json
from medseg.transforms.nnunet_recipe import NnunetRecipe
from medseg.transforms.orientation import reorient_plan
from medseg.transforms.postprocess import Postprocess
from medseg.transforms.preprocessing import Recipe

__all__ = ["Manifest"]

#: Recipe fields added with schema 2 (left out of a version-1 manifest when at their defaults).
_RECIPE_V2_KEYS = ("patch_size", "target_spacing", "mirror_axes", "ct_zscore", "overlap")


def _preprocessing(data: Any, fields: dict[str, Any]) -> Recipe | NnunetRecipe:
    """The ``preprocessing`` section: by its ``kind``, ``"medseg"`` (default) or ``"nnunet"``."""
    if getattr(data, "pipeline_kind", None) is not None:  # a recipe object already
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"preprocessing must be an object, got {type(data).__name__}")
    kind = data.get("kind", "medseg")
    if kind == "nnunet":
        return NnunetRecipe.from_dict(data)
    if kind != "medseg":
        raise ConfigError(f"preprocessing.kind {kind!r} must be 'medseg' or 'nnunet'")
    from pydantic import ValidationError

    from medseg.schema import describe_error

    body = {k: v for k, v in data.items() if k != "kind"}
    try:
        return parse_recipe(body)
    except ValidationError as exc:  # same wording as a directly typed field
        nested = bool(exc.errors(include_url=False)[0]["loc"])
        raise ConfigError(f"preprocessing{'.' if nested else ': '}{describe_error(exc)}") from None


def parse_recipe(body: dict[str, Any]) -> Recipe:
    """A medseg :class:`Recipe` validated by its type hints (pydantic)."""
    from pydantic import TypeAdapter

    return TypeAdapter(Recipe).validate_python(body)


def _postprocess(data: Any, fields: dict[str, Any]) -> Postprocess | None:
    """The ``postprocess`` section: its rules may only name the manifest's classes."""
    if data is None or isinstance(data, Postprocess):
        return data
    return Postprocess.from_dict(data, list(fields.get("classes", {})), "postprocess")


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

    __pydantic_config__ = FORBID_EXTRA

    model: dict[str, Any]
    classes: dict[str, StrictInt]
    input: InputSpec
    output_name: StrictStr
    preprocessing: Annotated[Recipe | NnunetRecipe, Via(_preprocessing)]
    precisions: dict[str, PrecisionEntry]
    calibration: dict[str, Any] | None
    source: dict[str, Any]
    tool_versions: dict[str, str]
    created: StrictStr
    schema_version: StrictInt = SCHEMA_VERSION
    orientation: StrictStr | None = None
    plan: dict[str, Any] | None = None
    postprocess: Annotated[Postprocess | None, Via(_postprocess)] = None
    backend_accuracy: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    folds: tuple[StrictStr, ...] | None = None

    def __post_init__(self) -> None:
        """Cross-field rules (types are checked by the schema, :func:`medseg.schema.parse`)."""
        if not self.classes:
            raise ConfigError("classes must map names to integer labels; it is empty")
        values = sorted(self.classes.values())
        if values != list(range(len(values))):
            raise ConfigError(
                f"classes {self.classes} must give each class its own value 0..{len(values) - 1} "
                f"(the network's output channels), got {values}"
            )
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown or "fp32" not in self.precisions:
            raise ConfigError(
                f"precisions {sorted(self.precisions)} must include fp32 and only "
                f"{list(PRECISIONS)}"
            )
        for precision, entry in self.precisions.items():
            if entry.file != ONNX_FILES[precision]:
                raise ConfigError(
                    f"precisions.{precision}.file is {entry.file!r}; a bundle's {precision} "
                    f"model is {ONNX_FILES[precision]!r}"
                )
        if self.orientation is not None:
            try:
                reorient_plan(self.orientation, self.orientation)
            except ConfigError:
                raise ConfigError(
                    f"orientation {self.orientation!r} must be null or axis codes: 3 letters "
                    "with one of R/L, A/P and S/I each, e.g. 'RAS'"
                ) from None
        for backend, by_precision in self.backend_accuracy.items():
            wrong = sorted(set(by_precision) - set(RUNTIME_PRECISIONS))
            if wrong:
                raise ConfigError(
                    f"backend_accuracy.{backend} has precisions {wrong}; accepted: "
                    f"{', '.join(RUNTIME_PRECISIONS)}"
                )
        _check_schema3(self)
        recipe = self.preprocessing
        if recipe.pipeline_kind == "nnunet":
            return
        if self.input.depth is not None:
            raise ConfigError("input.depth (a 3D input) needs nnU-Net preprocessing")
        if recipe.pipeline_kind == "window":
            assert recipe.patch_size is not None  # guaranteed by Recipe
            ph, pw = recipe.patch_size
            h, w = self.input.height, self.input.width
            if not (h.is_static and w.is_static and (h.min, w.min) == (ph, pw)):
                raise ConfigError(
                    f"a 'window' recipe with patch_size {ph}x{pw} needs a static "
                    f"input of that size, got height {h} and width {w}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def medseg_recipe(self, what: str) -> Recipe:
        """The medseg :class:`Recipe`; ConfigError naming ``what`` for an nnU-Net bundle."""
        if self.preprocessing.pipeline_kind == "nnunet":
            raise ConfigError(
                f"{what} runs medseg recipes only (whole slices or sliding windows); this is "
                "an nnU-Net bundle (preprocessing kind 'nnunet'), which medseg infer, bench, "
                "build and serve run"
            )
        return cast(Recipe, self.preprocessing)

    def nnunet_recipe(self, what: str) -> NnunetRecipe:
        """The :class:`NnunetRecipe`; ConfigError naming ``what`` for any other bundle."""
        if self.preprocessing.pipeline_kind != "nnunet":
            raise ConfigError(
                f"{what} needs an nnU-Net bundle (preprocessing kind 'nnunet', written by "
                "medseg import nnunet + medseg export); this bundle has a medseg "
                f"{self.preprocessing.pipeline_kind!r} recipe"
            )
        return cast(NnunetRecipe, self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the exact content of ``medseg.json``."""
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        if self.folds is None:  # schema 1/2 manifests are written back without the new keys
            data.pop("folds")
            for entry in data["precisions"].values():
                entry.pop("folds")
        else:
            data["folds"] = list(self.folds)
        if self.input.depth is None:
            data["input"].pop("depth")
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
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Validate and parse; ConfigError naming ``where`` and the first wrong key otherwise."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        if "schema_version" not in data:
            raise ConfigError(f"{where}: missing key schema_version")
        version = data.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
            raise ConfigError(
                f"{where} has schema_version {version!r}; this medseg reads versions "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}: re-export the bundle with "
                "this version"
            )
        return parse(cls, data, where)

    @classmethod
    def load(cls, bundle: Path) -> Manifest:
        """Read and validate ``bundle/medseg.json``; errors name that file."""
        path = Path(bundle) / MANIFEST_NAME
        if not path.is_file():
            raise ConfigError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME}")
        return cls.from_dict(load_json(path), str(path))

    def save(self, bundle: Path) -> Path:
        """Write ``bundle/medseg.json`` atomically (strict JSON: a non-finite number is null)."""
        return save_json(Path(bundle) / MANIFEST_NAME, self.to_dict())

    def onnx_path(self, bundle: Path, precision: str, verify: bool = True) -> Path:
        """Path of a precision's ONNX file; with ``verify``, its sha256 must match the manifest."""
        if precision not in self.precisions:
            raise ConfigError(
                f"bundle {bundle} has no {precision} model; it has {sorted(self.precisions)}"
            )
        if self.folds is not None:
            raise ConfigError(
                f"bundle {bundle} is an nnU-Net fold ensemble (one ONNX file per fold: "
                f"{', '.join(self.folds)}); this step takes a bundle with one model: run "
                "medseg infer or medseg bench on it, or export one fold (medseg import nnunet "
                "--folds K, then medseg export)"
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


def _check_schema3(manifest: Manifest) -> None:
    """Manifest rules of nnU-Net recipes, 3D inputs and fold ensembles (schema 3)."""
    recipe = manifest.preprocessing
    uses = recipe.pipeline_kind == "nnunet" or manifest.folds is not None
    if (
        uses or manifest.input.depth is not None
    ) and manifest.schema_version < NNUNET_SCHEMA_VERSION:
        raise ConfigError(
            f"nnU-Net preprocessing, folds and input.depth need schema_version "
            f"{NNUNET_SCHEMA_VERSION}, got {manifest.schema_version}"
        )
    if manifest.folds is not None:
        if not manifest.folds or len(set(manifest.folds)) != len(manifest.folds):
            raise ConfigError(f"folds {list(manifest.folds)} must be distinct names, at least one")
        for precision, entry in manifest.precisions.items():
            if entry.folds is None or list(entry.folds) != list(manifest.folds):
                raise ConfigError(
                    f"precisions.{precision}.folds must list the folds {list(manifest.folds)}, "
                    f"got {None if entry.folds is None else list(entry.folds)}"
                )
            for fold, item in entry.folds.items():
                if item.file != f"{fold_dir(fold)}/{ONNX_FILES[precision]}":
                    raise ConfigError(
                        f"precisions.{precision}.folds.{fold}.file is {item.file!r}; "
                        f"expected {fold_dir(fold)}/{ONNX_FILES[precision]!r}"
                    )
    else:
        with_folds = sorted(p for p, e in manifest.precisions.items() if e.folds is not None)
        if with_folds:
            raise ConfigError(f"precisions {with_folds} list folds but the manifest has none")
    if recipe.pipeline_kind != "nnunet":
        return
    recipe = manifest.nnunet_recipe("_check_schema3")
    if manifest.input.patch != recipe.patch_size:
        raise ConfigError(
            f"input patch {manifest.input.patch} must be the nnU-Net patch_size "
            f"{recipe.patch_size} (static; 2d: height x width, 3d: depth, height, width)"
        )
    if manifest.input.channels != recipe.num_input_channels:
        raise ConfigError(
            f"input.channels {manifest.input.channels} must equal the recipe's "
            f"num_input_channels {recipe.num_input_channels}"
        )
    if dict(manifest.classes) != dict(recipe.labels):
        raise ConfigError(
            f"classes {dict(manifest.classes)} must equal the nnU-Net labels {dict(recipe.labels)}"
        )
