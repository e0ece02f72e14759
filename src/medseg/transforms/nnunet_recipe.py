"""nnU-Net v2's preprocessing recipe, as data (numpy only; importable by the runtime).

:class:`NnunetRecipe` records everything ``nnUNetPredictor`` needs besides the network: the
axis transposition, the configuration's target spacing and patch, per-channel normalisation
with the dataset fingerprint's statistics, resampling orders, the trainer's mirroring axes and
the labels. :meth:`NnunetRecipe.from_plans` reads it from nnU-Net's own ``plans.json`` and
``dataset.json`` dicts (no nnunetv2 import); the functions that run it are in
:mod:`medseg.transforms.nnunet_preprocess`.

The recipe is a file format (``nnunet.json``, and ``preprocessing`` inside ``medseg.json``):
:meth:`NnunetRecipe.from_dict` and :meth:`NnunetRecipe.from_plans` validate it with
:mod:`medseg.schema` (types, unknown keys, one-value rules on the fields); ``__post_init__``
keeps the rules that span fields (dimensions, the transposition's inverse, one normalisation
per channel, CT statistics for CT only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from medseg.errors import ConfigError
from medseg.schema import (
    FORBID_EXTRA,
    After,
    Before,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    check,
    parse,
)

__all__ = [
    "CONFIGURATIONS",
    "IMAGE_READERS",
    "NORMALIZATION_SCHEMES",
    "NnunetNormalization",
    "NnunetRecipe",
    "NnunetResampling",
]

CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
IMAGE_READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient")
NORMALIZATION_SCHEMES = (
    "CTNormalization",
    "ZScoreNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
)
_CT_KEYS = ("percentile_00_5", "percentile_99_5", "mean", "std")
_RESAMPLING_FN = "resample_data_or_seg_to_shape"


def _finite(what: str, value: Any) -> float:
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{what} {value!r} must be a finite number")
    return float(value)


def _supported(what: str, accepted: Sequence[str], note: str = "") -> After:
    """A rule: the value must be one of ``accepted`` (``"<what> 'x' is not supported; ..."``)."""

    def rule(value: str) -> str:
        if value not in accepted:
            raise ValueError(
                f"{what} {value!r} is not supported; supported: {', '.join(accepted)}{note}"
            )
        return value

    return After(rule)


def _labels_shape(value: Any) -> Any:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"labels {value!r} must be a non-empty {{name: value}} object")
    if any(isinstance(v, list | tuple) for v in value.values()):
        raise ValueError(
            "region-based labels (a list of values per name) are not supported; "
            "labels must be {name: int}"
        )
    return value


def _labels_values(labels: dict[str, int]) -> dict[str, int]:
    values = sorted(labels.values())
    if values != list(range(len(values))):
        raise ValueError(f"label values {values} must be consecutive 0..K-1 (0 background)")
    return dict(sorted(labels.items(), key=lambda kv: kv[1]))


_Finite = Annotated[StrictFloat, check(math.isfinite, "a finite number")]
_ORDER = check(lambda v: 0 <= v <= 5, "a spline order 0..5")
_Ints = tuple[StrictInt, ...]


@dataclass(frozen=True)
class NnunetNormalization:
    """One channel's nnU-Net normalisation.

    Attributes:
        scheme: one of :data:`NORMALIZATION_SCHEMES` (nnU-Net's class name).
        use_mask_for_norm: z-score over the non-zero (cropping) mask only.
        percentile_00_5, percentile_99_5, mean, std: CT only, the fingerprint's foreground
            intensity statistics (clip to the percentiles, then ``(x - mean) / std``).
    """

    __pydantic_config__ = FORBID_EXTRA  # validated by from_dict (medseg.schema)

    scheme: Annotated[StrictStr, _supported("normalization scheme", NORMALIZATION_SCHEMES)]
    use_mask_for_norm: StrictBool = False
    percentile_00_5: StrictFloat | None = None
    percentile_99_5: StrictFloat | None = None
    mean: StrictFloat | None = None
    std: StrictFloat | None = None

    def __post_init__(self) -> None:
        """Cross-field rules (types and the scheme: :meth:`from_dict`'s schema)."""
        stats = [getattr(self, k) for k in _CT_KEYS]
        if self.scheme == "CTNormalization":
            for key, value in zip(_CT_KEYS, stats, strict=True):
                object.__setattr__(self, key, _finite(f"CTNormalization {key}", value))
            if not self.percentile_00_5 <= self.percentile_99_5:  # type: ignore[operator]
                raise ConfigError(
                    f"CTNormalization percentile_00_5 {self.percentile_00_5} must be <= "
                    f"percentile_99_5 {self.percentile_99_5}"
                )
        elif any(v is not None for v in stats):
            raise ConfigError(f"{self.scheme} takes no intensity statistics (CT only)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (CT statistics only for CT)."""
        out: dict[str, Any] = {"scheme": self.scheme, "use_mask_for_norm": self.use_mask_for_norm}
        if self.scheme == "CTNormalization":
            out.update({k: getattr(self, k) for k in _CT_KEYS})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnunetNormalization:
        """Inverse of :meth:`to_dict`; unknown or mistyped keys are an error."""
        return parse(cls, data, "nnunet normalization")


@dataclass(frozen=True)
class NnunetResampling:
    """nnU-Net's ``resample_data_or_seg_to_shape`` settings.

    Attributes:
        order_data: spline order of the image resampling (nnU-Net: 3).
        order_probabilities: order of the logits' resampling back to the scan (nnU-Net: 1).
        order_z: order along the low-resolution axis when it is resampled separately.
        force_separate_z: ``None`` decides from the spacings and the threshold.
        separate_z_anisotropy_threshold: max/min spacing ratio beyond which z is separate.
    """

    __pydantic_config__ = FORBID_EXTRA  # validated by from_dict (medseg.schema)

    order_data: Annotated[StrictInt, _ORDER] = 3
    order_probabilities: Annotated[StrictInt, _ORDER] = 1
    order_z: Annotated[StrictInt, _ORDER] = 0
    force_separate_z: StrictBool | None = None
    separate_z_anisotropy_threshold: Annotated[_Finite, check(lambda v: v > 1.0, "> 1")] = 3.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnunetResampling:
        """Inverse of :meth:`to_dict`; unknown or mistyped keys are an error."""
        return parse(cls, data, "nnunet resampling")


def _length(what: str, value: tuple[Any, ...], lengths: Sequence[int], unit: str) -> None:
    if len(value) not in lengths:
        raise ConfigError(
            f"{what} {list(value)!r} must be a list of {' or '.join(map(str, lengths))} {unit}"
        )


@dataclass(frozen=True)
class NnunetRecipe:
    """Everything nnU-Net v2 does to a case around the network, for one configuration.

    Attributes:
        configuration: ``"2d"``, ``"3d_fullres"`` or ``"3d_lowres"``.
        image_reader: nnU-Net's reader class; fixes the array order (see
            :func:`medseg.transforms.nnunet_preprocess.nnunet_array`).
        transpose_forward, transpose_backward: permutations of the three ``(z, y, x)`` axes.
        spacing: the configuration's target spacing in mm, in transposed array order (2 values
            for ``2d``: the first axis keeps the case's own spacing).
        patch_size: the network's static patch, ``(h, w)`` or ``(d, h, w)``.
        normalization: one entry per input channel.
        resampling: resampling orders and the separate-z rule.
        mirror_axes: patch axes mirrored at inference (the trainer's
            ``inference_allowed_mirroring_axes``; empty: no mirroring).
        tile_step_size: sliding-window step as a fraction of the patch (nnU-Net: 0.5).
        labels: ``{name: value}`` with consecutive values ``0..K-1``, 0 the background.
        num_input_channels: number of image channels.
    """

    __pydantic_config__ = FORBID_EXTRA  # validated by from_dict / from_plans (medseg.schema)

    configuration: Annotated[
        StrictStr,
        _supported("nnU-Net configuration", CONFIGURATIONS, " (cascades are not)"),
    ]
    image_reader: Annotated[StrictStr, _supported("image_reader", IMAGE_READERS)]
    transpose_forward: _Ints
    transpose_backward: _Ints
    spacing: tuple[Annotated[_Finite, check(lambda v: v > 0, "> 0 mm")], ...]
    patch_size: tuple[Annotated[StrictInt, check(lambda v: v >= 1, "positive")], ...]
    normalization: tuple[NnunetNormalization, ...]
    labels: Annotated[dict[StrictStr, StrictInt], Before(_labels_shape), After(_labels_values)]
    num_input_channels: Annotated[StrictInt, check(lambda v: v >= 1, "a positive integer")]
    resampling: NnunetResampling = field(default_factory=NnunetResampling)
    mirror_axes: _Ints = ()
    tile_step_size: Annotated[_Finite, check(lambda v: 0.0 < v <= 1.0, "in (0, 1]")] = 0.5

    def __post_init__(self) -> None:
        """Rules that span fields (types and one-value rules: the schema of :meth:`from_dict`)."""
        fwd, bwd = tuple(self.transpose_forward), tuple(self.transpose_backward)
        _length("transpose_forward", fwd, (3,), "ints")
        _length("transpose_backward", bwd, (3,), "ints")
        if sorted(fwd) != [0, 1, 2] or tuple(fwd[i] for i in bwd) != (0, 1, 2):
            raise ConfigError(
                f"transpose_forward {list(fwd)} / transpose_backward {list(bwd)} must be a "
                "permutation of [0, 1, 2] and its inverse"
            )
        nd = 2 if self.configuration == "2d" else 3
        _length("patch_size", tuple(self.patch_size), (nd,), "ints")
        _length("spacing", tuple(self.spacing), (nd,), "values in mm")
        c, norm = self.num_input_channels, tuple(self.normalization)
        if len(norm) != c:
            raise ConfigError(
                f"normalization must hold one entry per input channel ({c}), got {len(norm)}"
            )
        mirror = tuple(self.mirror_axes)
        if any(a not in range(nd) for a in mirror) or len(set(mirror)) != len(mirror):
            raise ConfigError(
                f"mirror_axes {list(mirror)} must be distinct patch axes among {list(range(nd))}"
            )
        for name, value in (
            ("transpose_forward", fwd),
            ("transpose_backward", bwd),
            ("patch_size", tuple(self.patch_size)),
            ("spacing", tuple(float(s) for s in self.spacing)),
            ("normalization", norm),
            ("mirror_axes", mirror),
            ("tile_step_size", float(self.tile_step_size)),
            ("labels", dict(self.labels)),
        ):
            object.__setattr__(self, name, value)

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the network's patch (2 or 3)."""
        return len(self.patch_size)

    @property
    def num_classes(self) -> int:
        """Output channels ``K`` of the network (background included)."""
        return len(self.labels)

    @property
    def pipeline_kind(self) -> str:
        """The runtime pipeline that runs this recipe: ``"nnunet"``
        (:mod:`medseg.runtime.pipelines.nnunet`)."""
        return "nnunet"

    @property
    def report_axis(self) -> int:
        """The volume axis reports slice along (overlays, HD95 blocks): Z of the reader's
        ``(X, Y, Z)`` voxel order, whatever axis nnU-Net runs its 2D slices along."""
        return 2

    @property
    def overlap(self) -> float:
        """Sliding-window overlap ``1 - tile_step_size`` (:mod:`medseg.runtime.sliding_window`)."""
        return 1.0 - self.tile_step_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``"kind": "nnunet"`` (the manifest's tag)."""
        return {
            "kind": "nnunet",
            "configuration": self.configuration,
            "image_reader": self.image_reader,
            "transpose_forward": list(self.transpose_forward),
            "transpose_backward": list(self.transpose_backward),
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "normalization": [n.to_dict() for n in self.normalization],
            "resampling": self.resampling.to_dict(),
            "mirror_axes": list(self.mirror_axes),
            "tile_step_size": self.tile_step_size,
            "labels": dict(self.labels),
            "num_input_channels": self.num_input_channels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnunetRecipe:
        """Inverse of :meth:`to_dict`; unknown, missing or mistyped keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"nnunet preprocessing must be a JSON object, got {type(data).__name__}"
            )
        if data.get("kind", "nnunet") != "nnunet":
            raise ConfigError(f"nnunet preprocessing has kind {data['kind']!r}, expected 'nnunet'")
        body = {k: v for k, v in data.items() if k != "kind"}
        return parse(cls, body, "nnunet preprocessing")

    @classmethod
    def from_plans(
        cls,
        plans: Mapping[str, Any],
        dataset_json: Mapping[str, Any],
        configuration: str,
        mirror_axes: Sequence[int] = (),
        tile_step_size: float = 0.5,
    ) -> NnunetRecipe:
        """The recipe of one configuration of nnU-Net's ``plans.json`` / ``dataset.json``.

        Args:
            plans: the parsed ``plans.json``.
            dataset_json: the parsed ``dataset.json`` (``labels``, ``channel_names``).
            configuration: a key of ``plans["configurations"]``.
            mirror_axes: the trainer's ``inference_allowed_mirroring_axes`` (checkpoint).
            tile_step_size: nnU-Net's default 0.5.
        """
        configs = plans.get("configurations", {})
        if configuration not in configs:
            raise ConfigError(
                f"configuration {configuration!r} is not in plans.json; it has: "
                f"{', '.join(sorted(configs))}"
            )
        conf = _resolved(configs, configuration)
        for key in ("resampling_fn_data", "resampling_fn_probabilities"):
            if conf.get(key) != _RESAMPLING_FN:
                raise ConfigError(
                    f"plans.json {configuration}.{key} {conf.get(key)!r} is not supported; "
                    f"supported: {_RESAMPLING_FN!r}"
                )
        data_kw = conf.get("resampling_fn_data_kwargs", {})
        prob_kw = conf.get("resampling_fn_probabilities_kwargs", {})
        if data_kw.get("order_z", 0) != prob_kw.get("order_z", 0) or data_kw.get(
            "force_separate_z"
        ) != prob_kw.get("force_separate_z"):
            raise ConfigError(
                f"plans.json {configuration}: data and probability resampling use different "
                "order_z/force_separate_z; not supported"
            )
        resampling = {
            "order_data": data_kw.get("order", 3),
            "order_probabilities": prob_kw.get("order", 1),
            "order_z": data_kw.get("order_z", 0),
            "force_separate_z": data_kw.get("force_separate_z"),
        }
        schemes = conf["normalization_schemes"]
        masks = conf.get("use_mask_for_norm", [False] * len(schemes))
        props = plans.get("foreground_intensity_properties_per_channel", {})
        normalization = []
        for c, (scheme, mask) in enumerate(zip(schemes, masks, strict=True)):
            stats: dict[str, Any] = {}
            if scheme == "CTNormalization":
                ch = props.get(str(c))
                if ch is None:
                    raise ConfigError(f"plans.json has no intensity properties for channel {c}")
                stats = {k: ch[k] for k in _CT_KEYS}
            normalization.append({"scheme": scheme, "use_mask_for_norm": bool(mask), **stats})
        record = {
            "configuration": configuration,
            "image_reader": plans.get("image_reader_writer", "SimpleITKIO"),
            "transpose_forward": plans["transpose_forward"],
            "transpose_backward": plans["transpose_backward"],
            "spacing": conf["spacing"],
            "patch_size": conf["patch_size"],
            "normalization": normalization,
            "labels": dataset_json["labels"],
            "num_input_channels": len(
                dataset_json.get("channel_names", dataset_json.get("modality", {}))
            ),
            "resampling": resampling,
            "mirror_axes": tuple(mirror_axes),
            "tile_step_size": tile_step_size,
        }
        return parse(cls, record, f"nnU-Net recipe of {configuration!r} from plans.json")


def _resolved(configs: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A configuration with its ``inherits_from`` chain applied (nnU-Net's PlansManager)."""
    conf = dict(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ConfigError(f"plans.json configuration {name!r} inherits from {parent!r}, broken")
        seen.add(parent)
        merged = dict(configs[parent])
        merged.update(conf)
        if "inherits_from" not in configs[parent]:
            merged.pop("inherits_from", None)
        conf = merged
    return conf
