"""Training speed: today's loop against the new one, side by side in one process (issue 23).

Both loops train the attention-fusion network at the dataset's planned patch and batch:

* ``before``: the loop before issue 23: patches sampled and augmented in the training
  process (``DataLoader`` without workers), FP32, NCHW;
* ``after``: the new defaults: data in worker processes (``default_workers``), the
  arithmetic of :func:`medseg.train.arith.resolve_arithmetic` (channels-last; BF16 on CPUs
  with native BF16).

The two alternate in rounds (a slow moment of a shared machine hits both), each round
timing ``--steps`` optimisation steps after one untimed step; the medians are reported with
the ratio and each loop's data share (time waiting for the next batch / step time).

    python benchmarks/train_speed.py --data /tmp/cohort --rounds 3 --steps 3 \\
        --json benchmarks/results/train-speed/amd-epyc-avx2.json --note "loaded: ..."
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _setup(data_dir: Path, patch: str | None, batch: int | None) -> tuple[Any, Any, Any]:
    from medseg.train.augment import build_augmentation
    from medseg.train.config import TrainConfig
    from medseg.train.patches import PatchDataset
    from medseg.train.planned import load_planned_data

    size = None if patch is None else tuple(int(p) for p in patch.split("x"))
    config = TrainConfig(patch_size=size, batch_size=batch)  # type: ignore[arg-type]
    data = load_planned_data(data_dir, config)
    config = data.config
    assert config.batch_size is not None
    dataset = PatchDataset(data.sampler(), 10**6, 0, build_augmentation(config, crop=False))
    return data, config, dataset


class Loop:
    """One loop variant: its data stream, model, optimiser and arithmetic."""

    def __init__(self, name: str, data: Any, config: Any, dataset: Any, new: bool) -> None:
        from monai.losses import DiceCELoss

        from medseg.models import create_model
        from medseg.train.arith import resolve_arithmetic
        from medseg.train.patches import StreamSampler
        from medseg.train.sources import _loader
        from medseg.train.steps import default_workers

        self.name = name
        if new:
            self.arith = resolve_arithmetic("cpu")
            self.workers = default_workers("cpu")
        else:
            self.arith = resolve_arithmetic("cpu", "fp32", channels_last=False)
            self.workers = 0
        self.fmt, self.dtype = self.arith.memory_format(), self.arith.autocast_dtype()
        torch.manual_seed(0)
        model = create_model("attention-fusion", len(data.channel_names), len(data.spec_labels))
        self.model = model.to(memory_format=self.fmt)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.loss_fn = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=True
        )
        self.batches = _loader(
            dataset, config.batch_size, StreamSampler(config.batch_size), self.workers, False, 0
        )
        self.batch = config.batch_size

    def step(self) -> tuple[float, float]:
        """One step: (seconds, seconds waiting for the batch)."""
        t0 = time.perf_counter()
        images, labels = next(self.batches)
        waited = time.perf_counter() - t0
        images = images.contiguous(memory_format=self.fmt)
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", self.dtype, enabled=self.dtype is not None):
            loss = self.loss_fn(self.model(images).float(), labels[:, None])
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="nnU-Net raw dataset folder")
    parser.add_argument("--patch", help="HxW (default: the plan's)")
    parser.add_argument("--batch", type=int, help="default: the plan's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per loop per round")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--note", default="", help="machine load etc. (recorded)")
    parser.add_argument("--quick", action="store_true", help="one round of one step (CI)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 1, 1

    data, config, dataset = _setup(args.data, args.patch, args.batch)
    loops = [
        Loop("before", data, config, dataset, False),
        Loop("after", data, config, dataset, True),
    ]
    times: dict[str, list[float]] = {lp.name: [] for lp in loops}
    waits: dict[str, list[float]] = {lp.name: [] for lp in loops}
    for lp in loops:
        lp.step()  # untimed: allocator, thread pools, worker start-up
    for r in range(args.rounds):
        for lp in loops:
            for _ in range(args.steps):
                s, w = lp.step()
                times[lp.name].append(s)
                waits[lp.name].append(w)
            print(f"round {r + 1} {lp.name}: {np.median(times[lp.name][-args.steps :]):.2f} s/step")
    rows = {}
    for lp in loops:
        step = float(np.median(times[lp.name]))
        rows[lp.name] = {
            "workers": lp.workers,
            "arithmetic": lp.arith.reason,
            "seconds_per_step_median": round(step, 3),
            "samples_per_s": round(lp.batch / step, 3),
            "data_share": round(float(np.sum(waits[lp.name]) / np.sum(times[lp.name])), 3),
            "steps_timed": len(times[lp.name]),
        }
    ratio = rows["after"]["samples_per_s"] / rows["before"]["samples_per_s"]
    result = {
        "benchmark": "train_speed",
        "network": "attention-fusion (small)",
        "patch": list(config.patch_size),
        "batch": config.batch_size,
        "dataset": str(args.data),
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "note": args.note,
        "rows": rows,
        "ratio_after_over_before": round(ratio, 3),
    }
    for name, row in rows.items():
        print(
            f"{name:7s} {row['samples_per_s']:6.2f} samples/s  "
            f"{row['seconds_per_step_median']:.2f} s/step  data {row['data_share']:.0%}  "
            f"workers {row['workers']}  {row['arithmetic']}"
        )
    print(
        f"ratio after/before: {ratio:.2f}x at patch {config.patch_size}, batch {config.batch_size}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
