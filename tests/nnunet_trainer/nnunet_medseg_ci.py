"""A lab-style nnU-Net trainer subclass for the test suite's real result folders.

nnU-Net finds it through its ``nnUNet_extTrainer`` search path (set by tests/nnunet_real.py).
It changes only the training: one epoch of 3 training and 1 validation iterations, no
full-volume validation (about 100 s a case on CPU). The network is nnUNetTrainer's
(``build_network_architecture`` untouched), so ``medseg import nnunet`` verifies it from the
weights.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)


class nnUNetTrainer_medsegCI(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("nnUNetTrainer_medsegCI: full-volume validation skipped")


class nnUNetTrainer_medsegCI_NoMirroring(nnUNetTrainer_medsegCI, nnUNetTrainerNoMirroring):
    """The same, without mirroring in training and inference (nnUNetTrainerNoMirroring's)."""
