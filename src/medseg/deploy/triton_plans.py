"""The TensorRT engines of a bundle that can go into a Triton model repository.

Every ``bundle/engines/<device-key>/<precision>.plan`` is checked against its sidecar before it
is exported: the sidecar must exist, name the same precision, match the plan's sha256, and have
been built from the ONNX file the bundle holds now. A plan that fails is an error naming it (a
repository must not serve an engine of another model), with the command that rebuilds it.
TensorRT-RTX plans (``engines/rtx-*``) are left out: Triton's ``tensorrt_plan`` backend runs
standard TensorRT plans only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.bundle.engines import ENGINES_DIR, RTX_KEY_PREFIX, EngineSidecar, sidecar_path
from medseg.bundle.entries import PRECISIONS, DimRange
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.runtime.engines import check_plan_files
from medseg.schema import parse

__all__ = ["BundlePlan", "find_plans"]


@dataclass(frozen=True)
class BundlePlan:
    """A checked plan, its sidecar, and its optimisation-profile ranges.

    Attributes:
        path: ``bundle/engines/<device-key>/<precision>.plan``.
        sidecar: what it was built from, with and for.
        batch, height, width: the profile it was built with (the manifest's ranges where the
            sidecar records none).
    """

    path: Path
    sidecar: EngineSidecar
    batch: DimRange
    height: DimRange
    width: DimRange

    @property
    def device_key(self) -> str:
        """The ``engines/`` folder the plan is in."""
        return self.path.parent.name

    @property
    def built_for(self) -> str:
        """``"NVIDIA Orin (sm87)"``: the GPU the plan was built on."""
        sm = self.sidecar.compute_capability.replace(".", "")
        return f"{self.sidecar.gpu_name} (sm{sm})"


def _profile_range(sidecar: EngineSidecar, axis: str, default: DimRange, side: Path) -> DimRange:
    if axis not in sidecar.profile:
        return default
    return parse(DimRange, sidecar.profile[axis], f"{side}: profile.{axis}")


def _check(plan: Path, precision: str, bundle: Path, manifest: Manifest) -> EngineSidecar:
    if precision not in manifest.precisions:
        raise ConfigError(
            f"engine {plan} is {precision}, which the bundle no longer has "
            f"({sorted(manifest.precisions)}): delete it"
        )
    return check_plan_files(plan, bundle, manifest, precision)


def find_plans(bundle: Path, manifest: Manifest) -> list[BundlePlan]:
    """The bundle's plans, by precision (fp32, fp16, int8) then device key.

    Raises:
        ConfigError: one line naming the first plan that may not be exported, and why.
    """
    spec, found = manifest.input, []
    for precision in PRECISIONS:
        for plan in sorted((Path(bundle) / ENGINES_DIR).glob(f"*/{precision}.plan")):
            if plan.parent.name.startswith(RTX_KEY_PREFIX):
                continue  # TensorRT-RTX plans: Triton's tensorrt_plan backend cannot run them
            sidecar = _check(plan, precision, Path(bundle), manifest)
            side = sidecar_path(plan)
            found.append(
                BundlePlan(
                    plan,
                    sidecar,
                    batch=_profile_range(sidecar, "batch", spec.batch, side),
                    height=_profile_range(sidecar, "height", spec.height, side),
                    width=_profile_range(sidecar, "width", spec.width, side),
                )
            )
    return found
