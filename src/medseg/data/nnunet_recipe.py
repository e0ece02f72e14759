"""nnU-Net v2's preprocessing recipe, as data (numpy only; importable by the runtime).

:class:`NnunetRecipe` records everything ``nnUNetPredictor`` needs besides the network: the
axis transposition, the configuration's target spacing and patch, per-channel normalisation
with the dataset fingerprint's statistics, resampling orders, the trainer's mirroring axes and
the labels. :meth:`NnunetRecipe.from_plans` reads it from nnU-Net's own ``plans.json`` and
``dataset.json`` dicts (no nnunetv2 import); the functions that run it are in
:mod:`medseg.data.nnunet_preprocess`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError

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
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} {value!r} must be a finite number")
    return float(value)


def _unknown(data: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
    extra = sorted(set(data) - set(known))
    if extra:
        raise ConfigError(f"{what}: unknown key(s) {extra}; accepted: {sorted(known)}")


@dataclass(frozen=True)
class NnunetNormalization:
    """One channel's nnU-Net normalisation.

    Attributes:
        scheme: one of :data:`NORMALIZATION_SCHEMES` (nnU-Net's class name).
        use_mask_for_norm: z-score over the non-zero (cropping) mask only.
        percentile_00_5, percentile_99_5, mean, std: CT only, the fingerprint's foreground
            intensity statistics (clip to the percentiles, then ``(x - mean) / std``).
    """

    scheme: str
    use_mask_for_norm: bool = False
    percentile_00_5: float | None = None
    percentile_99_5: float | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise ConfigError(
                f"normalization scheme {self.scheme!r} is not supported; "
                f"supported: {', '.join(NORMALIZATION_SCHEMES)}"
            )
        if not isinstance(self.use_mask_for_norm, bool):
            raise ConfigError(f"use_mask_for_norm {self.use_mask_for_norm!r} must be true/false")
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
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        _unknown(data, ("scheme", "use_mask_for_norm", *_CT_KEYS), "nnunet normalization")
        if "scheme" not in data:
            raise ConfigError("nnunet normalization needs 'scheme'")
        return cls(**dict(data))


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

    order_data: int = 3
    order_probabilities: int = 1
    order_z: int = 0
    force_separate_z: bool | None = None
    separate_z_anisotropy_threshold: float = 3.0

    def __post_init__(self) -> None:
        for name in ("order_data", "order_probabilities", "order_z"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
                raise ConfigError(f"resampling {name} {value!r} must be a spline order 0..5")
        if self.force_separate_z is not None and not isinstance(self.force_separate_z, bool):
            raise ConfigError(
                f"resampling force_separate_z {self.force_separate_z!r} must be null, true or false"
            )
        t = _finite(
            "resampling separate_z_anisotropy_threshold", self.separate_z_anisotropy_threshold
        )
        if not t > 1.0:
            raise ConfigError(f"resampling separate_z_anisotropy_threshold {t} must be > 1")
        object.__setattr__(self, "separate_z_anisotropy_threshold", t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnunetResampling:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        _unknown(data, tuple(cls.__dataclass_fields__), "nnunet resampling")
        return cls(**dict(data))


def _int_tuple(what: str, value: Any, lengths: tuple[int, ...]) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) not in lengths:
        raise ConfigError(
            f"{what} {value!r} must be a list of {' or '.join(map(str, lengths))} ints"
        )
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ConfigError(f"{what} {value!r} must hold integers")
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class NnunetRecipe:
    """Everything nnU-Net v2 does to a case around the network, for one configuration.

    Attributes:
        configuration: ``"2d"``, ``"3d_fullres"`` or ``"3d_lowres"``.
        image_reader: nnU-Net's reader class; fixes the array order (see
            :func:`medseg.data.nnunet_preprocess.nnunet_array`).
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

    configuration: str
    image_reader: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    normalization: tuple[NnunetNormalization, ...]
    labels: Mapping[str, int]
    num_input_channels: int
    resampling: NnunetResampling = field(default_factory=NnunetResampling)
    mirror_axes: tuple[int, ...] = ()
    tile_step_size: float = 0.5

    def __post_init__(self) -> None:
        if self.configuration not in CONFIGURATIONS:
            raise ConfigError(
                f"nnU-Net configuration {self.configuration!r} is not supported; "
                f"supported: {', '.join(CONFIGURATIONS)} (cascades are not)"
            )
        if self.image_reader not in IMAGE_READERS:
            raise ConfigError(
                f"image_reader {self.image_reader!r} is not supported; supported: "
                f"{', '.join(IMAGE_READERS)}"
            )
        fwd = _int_tuple("transpose_forward", self.transpose_forward, (3,))
        bwd = _int_tuple("transpose_backward", self.transpose_backward, (3,))
        if sorted(fwd) != [0, 1, 2] or tuple(fwd[i] for i in bwd) != (0, 1, 2):
            raise ConfigError(
                f"transpose_forward {list(fwd)} / transpose_backward {list(bwd)} must be a "
                "permutation of [0, 1, 2] and its inverse"
            )
        nd = 2 if self.configuration == "2d" else 3
        patch = _int_tuple("patch_size", self.patch_size, (nd,))
        if any(p < 1 for p in patch):
            raise ConfigError(f"patch_size {list(patch)} must be positive")
        if not isinstance(self.spacing, Sequence) or len(self.spacing) != nd:
            raise ConfigError(f"spacing {self.spacing!r} must be {nd} values in mm")
        spacing = tuple(_finite("spacing", s) for s in self.spacing)
        if any(s <= 0 for s in spacing):
            raise ConfigError(f"spacing {list(spacing)} must be > 0 mm")
        c = self.num_input_channels
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ConfigError(f"num_input_channels {c!r} must be a positive integer")
        norm = tuple(self.normalization)
        if len(norm) != c or not all(isinstance(n, NnunetNormalization) for n in norm):
            raise ConfigError(
                f"normalization must hold one entry per input channel ({c}), got {len(norm)}"
            )
        mirror = _int_tuple("mirror_axes", self.mirror_axes, tuple(range(nd + 1)))
        if any(a not in range(nd) for a in mirror) or len(set(mirror)) != len(mirror):
            raise ConfigError(
                f"mirror_axes {list(mirror)} must be distinct patch axes among {list(range(nd))}"
            )
        step = _finite("tile_step_size", self.tile_step_size)
        if not 0.0 < step <= 1.0:
            raise ConfigError(f"tile_step_size {step} must be in (0, 1]")
        labels = self._check_labels(self.labels)
        for name, value in (
            ("transpose_forward", fwd),
            ("transpose_backward", bwd),
            ("patch_size", patch),
            ("spacing", spacing),
            ("normalization", norm),
            ("mirror_axes", mirror),
            ("tile_step_size", step),
            ("labels", labels),
        ):
            object.__setattr__(self, name, value)

    @staticmethod
    def _check_labels(labels: Any) -> dict[str, int]:
        if not isinstance(labels, Mapping) or not labels:
            raise ConfigError(f"labels {labels!r} must be a non-empty {{name: value}} object")
        if any(isinstance(v, list | tuple) for v in labels.values()):
            raise ConfigError(
                "region-based labels (a list of values per name) are not supported; "
                "labels must be {name: int}"
            )
        if any(isinstance(v, bool) or not isinstance(v, int) for v in labels.values()):
            raise ConfigError(f"labels {dict(labels)} must map names to integers")
        values = sorted(labels.values())
        if values != list(range(len(values))):
            raise ConfigError(f"label values {values} must be consecutive 0..K-1 (0 background)")
        return {str(k): int(v) for k, v in sorted(labels.items(), key=lambda kv: kv[1])}

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
        """Inverse of :meth:`to_dict`; unknown or missing keys are an error."""
        required = (
            "configuration",
            "image_reader",
            "transpose_forward",
            "transpose_backward",
            "spacing",
            "patch_size",
            "normalization",
            "labels",
            "num_input_channels",
        )
        optional = ("kind", "resampling", "mirror_axes", "tile_step_size")
        _unknown(data, required + optional, "nnunet preprocessing")
        if data.get("kind", "nnunet") != "nnunet":
            raise ConfigError(f"nnunet preprocessing has kind {data['kind']!r}, expected 'nnunet'")
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigError(f"nnunet preprocessing is missing {missing}")
        norm = data["normalization"]
        if not isinstance(norm, Sequence) or isinstance(norm, str):
            raise ConfigError(
                "nnunet preprocessing 'normalization' must be a list, one per channel"
            )
        kwargs = {k: data[k] for k in required if k != "normalization"}
        kwargs["normalization"] = tuple(NnunetNormalization.from_dict(n) for n in norm)
        if "resampling" in data:
            kwargs["resampling"] = NnunetResampling.from_dict(data["resampling"])
        for key in ("mirror_axes", "tile_step_size"):
            if key in data:
                kwargs[key] = data[key]
        return cls(**kwargs)

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
        resampling = NnunetResampling(
            order_data=data_kw.get("order", 3),
            order_probabilities=prob_kw.get("order", 1),
            order_z=data_kw.get("order_z", 0),
            force_separate_z=data_kw.get("force_separate_z"),
        )
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
            normalization.append(NnunetNormalization(scheme, bool(mask), **stats))
        return cls(
            configuration=configuration,
            image_reader=plans.get("image_reader_writer", "SimpleITKIO"),
            transpose_forward=tuple(plans["transpose_forward"]),
            transpose_backward=tuple(plans["transpose_backward"]),
            spacing=tuple(conf["spacing"]),
            patch_size=tuple(conf["patch_size"]),
            normalization=tuple(normalization),
            labels=dict(dataset_json["labels"]),
            num_input_channels=len(
                dataset_json.get("channel_names", dataset_json.get("modality", {}))
            ),
            resampling=resampling,
            mirror_axes=tuple(mirror_axes),
            tile_step_size=tile_step_size,
        )


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
