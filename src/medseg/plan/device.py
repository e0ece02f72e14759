"""The training device a plan is made for: its compute budget per optimisation step.

A GPU run keeps nnU-Net's memory-sized batch (:data:`~medseg.plan.planner.BATCH_PIXEL_BUDGET`,
8 patches of 256 x 256). A CPU run is compute-bound: a step costs time in proportion to its
patch pixels, and a time-budgeted run learns more from many small steps than from a few
large ones. Measured (issue 23) on a 2-core AVX2 EPYC: attention-fusion, FP32, batch 9 at
224 x 256 (516 k pixels) takes 5.8 s per step forward + backward + AdamW (4.6 s
channels-last); :data:`CPU_PIXELS_PER_CORE` aims at about 2 s per step, and grows with the
cores up to the GPU budget. The patch cap stays the same on both devices: the patch is the
network's field of view in the sliding window, chosen by the anatomy, not by the speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["CPU_PIXELS_PER_CORE", "TrainingDevice", "training_device"]

#: Patch pixels per optimisation step per CPU core (about 2 s per step on an AVX2 core pair).
CPU_PIXELS_PER_CORE = 92_000


@dataclass(frozen=True)
class TrainingDevice:
    """Where the plan's run will train.

    Attributes:
        kind: ``"cpu"`` or ``"cuda"``.
        cores: CPU cores the run may use (``cpu`` only).
    """

    kind: str
    cores: int = 1

    def pixel_budget(self, gpu_budget: int) -> tuple[int, str]:
        """Patch pixels per step and the reason, given the GPU (memory) budget."""
        if self.kind == "cuda":
            return gpu_budget, f"GPU training: {gpu_budget:,} patch pixels per step (memory)"
        budget = min(gpu_budget, CPU_PIXELS_PER_CORE * max(1, self.cores))
        return budget, (
            f"CPU training ({self.cores} cores): {budget:,} patch pixels per step, about 2 s "
            f"per step (a GPU plan uses {gpu_budget:,}; --batch-size overrides)"
        )


def training_device(kind: str, cores: int | None = None) -> TrainingDevice:
    """A :class:`TrainingDevice`; ``cores`` defaults to the cores this process may use."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    return TrainingDevice("cuda" if kind == "cuda" else "cpu", int(cores))
