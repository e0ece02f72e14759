"""Segmentation networks (the torch side of medseg): blocks, nets and the model registry.

``create_model(arch, in_channels, num_classes, variant)`` builds one of
:func:`list_models` (``attention-fusion``, ``attention-unet``, ``unet``); every model maps
``(B, C, H, W)`` float32 slices to ``(B, K, H, W)`` logits and exports to ONNX with the
dynamo exporter. :func:`model_record` gives the dict a checkpoint stores and
:func:`create_model_from_config` rebuilds from.
"""

from __future__ import annotations

from medseg.models.complexity import count_flops, count_macs, count_parameters
from medseg.models.nets import (
    AttentionFusionConfig,
    AttentionFusionNet,
    AttentionUNetConfig,
    UNetConfig,
)
from medseg.models.registry import (
    ModelEntry,
    create_model,
    create_model_from_config,
    get_model_entry,
    list_models,
    list_variants,
    model_record,
    register_model,
)

__all__ = [
    "AttentionFusionConfig",
    "AttentionFusionNet",
    "AttentionUNetConfig",
    "ModelEntry",
    "UNetConfig",
    "count_flops",
    "count_macs",
    "count_parameters",
    "create_model",
    "create_model_from_config",
    "get_model_entry",
    "list_models",
    "list_variants",
    "model_record",
    "register_model",
]
