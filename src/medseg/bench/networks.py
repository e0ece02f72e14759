"""The network reports of a bundle's built engines, for the bench results and report.

Every ``engines/<key>/<precision>.json`` sidecar that carries a network report (written by
``medseg build``, either runtime) is summarised under ``"<key>/<precision>"``; sidecars that
cannot be read are skipped (the engine checks report them where an engine is used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.bundle.engines import ENGINES_DIR, EngineSidecar
from medseg.bundle.entries import PRECISIONS
from medseg.errors import ConfigError

__all__ = ["engine_networks", "network_lines"]


def engine_networks(bundle: Path) -> dict[str, dict[str, Any]]:
    """``{"rtx-sm86-sm89-sm120/int8": {runtime, version, layer_count, convolutions, ...}}``."""
    found: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        for side in sorted((Path(bundle) / ENGINES_DIR).glob(f"*/{precision}.json")):
            try:
                sidecar = EngineSidecar.load(side)
            except ConfigError:
                continue
            if sidecar.network is None:
                continue
            net = sidecar.network
            found[f"{side.parent.name}/{precision}"] = {
                "runtime": sidecar.runtime,
                "version": sidecar.tensorrt_version,
                "layer_count": net.layer_count,
                "convolutions": net.to_dict()["convolutions"],
                "fp32_tensors": len(net.fp32_tensors),
                "fp32_convolutions": list(net.fp32_convolutions),
                "warnings": list(net.warnings),
            }
    return found


def network_lines(networks: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of the report's "Engine networks" section ([] when none were built)."""
    if not networks:
        return []
    lines = [
        "## Engine networks (TensorRT parser)",
        "",
        "| engine | runtime | layers | conv INT8 | conv FP16 | conv FP32 | FP32 tensors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, net in networks.items():
        convs = net["convolutions"]
        lines.append(
            f"| {key} | {net['runtime']} {net['version']} | {net['layer_count']} | "
            f"{convs.get('int8', 0)} | {convs.get('fp16', 0)} | {convs.get('fp32', 0)} | "
            f"{net['fp32_tensors']} |"
        )
    lines.append("")
    lines += [f"- warning: {w}" for net in networks.values() for w in net["warnings"]]
    return [*lines, ""]
