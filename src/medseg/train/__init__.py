"""Training (torch + MONAI): slices from a dataset folder, augmentation, loop, checkpoints.

from medseg.train import TrainConfig, train, load_checkpoint
result = train(Path("/tmp/mni"), Path("runs/af"), TrainConfig(arch="attention-fusion"))
model = load_checkpoint(result.run_dir).model
"""

from __future__ import annotations

from medseg.train.checkpoint import LoadedCheckpoint, load_checkpoint
from medseg.train.config import TrainConfig
from medseg.train.loop import EpochLog, TrainResult, train

__all__ = ["EpochLog", "LoadedCheckpoint", "TrainConfig", "TrainResult", "load_checkpoint", "train"]
