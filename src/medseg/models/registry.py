"""Model registry: architectures by name, width variants as data (timm style).

An architecture registers a builder ``(in_channels, num_classes, config) -> nn.Module``
together with its config dataclass and a table of named variants::

    @register_model("unet", config_class=UNetConfig, variants=UNET_VARIANTS, summary="...")
    def unet(in_channels: int, num_classes: int, config: UNetConfig) -> nn.Module: ...

``create_model`` builds a variant and attaches a JSON-ready record to the model that a
checkpoint stores and :func:`create_model_from_config` rebuilds from::

    {"arch": "attention-fusion", "variant": "small", "in_channels": 1, "num_classes": 4,
     "config": {"base_channels": 16, ...}}

The record's ``config`` is the source of truth; ``variant`` is a label.

The built-in nets (:mod:`medseg.models.nets`) register themselves when imported, and
``medseg.models`` imports them: any import of this module (which first runs the package's
``__init__``) sees them registered, and the registry itself never imports the nets.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medseg.errors import ConfigError

__all__ = [
    "ModelEntry",
    "config_from_dict",
    "config_to_dict",
    "create_model",
    "create_model_from_config",
    "get_model_entry",
    "list_models",
    "list_variants",
    "model_record",
    "register_model",
]

ModelBuilder = Callable[[int, int, Any], nn.Module]
BuilderT = TypeVar("BuilderT", bound=ModelBuilder)

_RECORD_ATTR = "_medseg_record"
_RECORD_KEYS = ("arch", "variant", "in_channels", "num_classes", "config")


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Attributes:
        name: the ``--arch`` name, e.g. ``"attention-fusion"``.
        builder: ``(in_channels, num_classes, config) -> nn.Module``.
        config_class: frozen dataclass of the architecture's options.
        variants: named instances of ``config_class`` (``"tiny"``, ``"small"``, ...).
        summary: one line for listings, citing the paper.
    """

    name: str
    builder: ModelBuilder
    config_class: type
    variants: Mapping[str, Any]
    summary: str

    def variant_config(self, variant: str) -> Any:
        """The config of ``variant``; ConfigError listing the accepted variants otherwise."""
        if variant not in self.variants:
            raise ConfigError(
                f"unknown variant {variant!r} of model {self.name!r}; "
                f"accepted: {', '.join(self.variants)}"
            )
        return self.variants[variant]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, config_class: type, variants: Mapping[str, Any], summary: str
) -> Callable[[BuilderT], BuilderT]:
    """Decorator registering a builder under ``name`` with its variant table.

    Raises:
        ValueError: ``name`` is taken, or a variant is not a ``config_class`` instance.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    for label, config in variants.items():
        if not isinstance(config, config_class):
            raise ValueError(f"variant {label!r} of {name!r} is not a {config_class.__name__}")

    def decorator(builder: BuilderT) -> BuilderT:
        _REGISTRY[name] = ModelEntry(name, builder, config_class, dict(variants), summary)
        return builder

    return decorator


def list_models() -> list[str]:
    """Registered architecture names, sorted (the accepted values of ``--arch``)."""
    return sorted(_REGISTRY)


def get_model_entry(arch: str) -> ModelEntry:
    """The registry entry of ``arch``; ConfigError listing the accepted names otherwise."""
    if arch not in _REGISTRY:
        raise ConfigError(f"unknown architecture {arch!r}; accepted: {', '.join(list_models())}")
    return _REGISTRY[arch]


def list_variants(arch: str) -> list[str]:
    """Variant names of ``arch``, in registration order (smallest first)."""
    return list(get_model_entry(arch).variants)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
    }


ConfigT = TypeVar("ConfigT")


def config_from_dict(config_class: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    """Build ``config_class`` from a (JSON-loaded) dict; lists become tuples.

    Raises:
        ConfigError: unknown keys (the message lists the accepted ones) or invalid values.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
    accepted = [field.name for field in dataclasses.fields(config_class)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown {config_class.__name__} option(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return config_class(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid {config_class.__name__} {dict(data)!r}: {exc}") from exc


def _check_channels(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _build(
    entry: ModelEntry, variant: str, in_channels: int, num_classes: int, config: Any
) -> nn.Module:
    in_channels = _check_channels("in_channels", in_channels)
    num_classes = _check_channels("num_classes", num_classes)
    model = entry.builder(in_channels, num_classes, config)
    record = {
        "arch": entry.name,
        "variant": variant,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "config": config_to_dict(config),
    }
    setattr(model, _RECORD_ATTR, record)
    return model


def create_model(
    arch: str, in_channels: int, num_classes: int, variant: str = "small"
) -> nn.Module:
    """Build a registered architecture.

    Args:
        arch: a name from :func:`list_models`, e.g. ``"attention-fusion"``.
        in_channels: input channels ``C`` of ``(B, C, H, W)`` slices.
        num_classes: output channels ``K`` of the ``(B, K, H, W)`` logits (background included).
        variant: a name from :func:`list_variants`.

    Returns:
        The model (train mode, float32, CPU), carrying its :func:`model_record`.

    Raises:
        ConfigError: unknown ``arch`` or ``variant``, or non-positive channel counts.
    """
    entry = get_model_entry(arch)
    return _build(entry, variant, in_channels, num_classes, entry.variant_config(variant))


def create_model_from_config(record: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from the record :func:`model_record` returned (e.g. from a checkpoint).

    Args:
        record: ``{"arch", "variant", "in_channels", "num_classes", "config"}``.

    Raises:
        ConfigError: a missing key, an unknown ``arch`` or an invalid ``config``.
    """
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise ConfigError(
            f"model record lacks {', '.join(missing)}; expected keys: {', '.join(_RECORD_KEYS)}"
        )
    entry = get_model_entry(record["arch"])
    config: Any = config_from_dict(entry.config_class, record["config"])
    return _build(
        entry, str(record["variant"]), record["in_channels"], record["num_classes"], config
    )


def model_record(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready record of a model built by :func:`create_model` (a copy).

    Raises:
        ConfigError: the model was not built through this registry.
    """
    record = getattr(model, _RECORD_ATTR, None)
    if not isinstance(record, dict):
        raise ConfigError(
            f"{type(model).__name__} was not built by medseg.models.create_model; "
            "it has no architecture record"
        )
    return copy.deepcopy(record)
