"""Compare U-Net, Attention U-Net and attention-fusion on the same data and training budget.

Trains every architecture of ``medseg.models.list_models()`` with one ``TrainConfig`` that
differs only in ``arch``, evaluates each best checkpoint on the validation slices (Dice per
class pooled over slices; HD95 per contiguous block of validation slices), measures
parameters, GFLOPs and CPU latency, and writes ``<out>.json`` and ``<out>.md``::

    medseg data mni152 /tmp/mni_bench --force
    .venv/bin/python benchmarks/compare_models.py --dataset /tmp/mni_bench --epochs 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medseg.data import SliceSet, TrainingData, load_training_data
from medseg.metrics import compute_case_metrics
from medseg.metrics.slices import validation_dice
from medseg.models import count_flops, count_parameters, list_models
from medseg.train import EpochLog, TrainConfig, TrainResult, load_checkpoint, train
from medseg.train.slices import predict_slice_labels
from medseg.transforms.preprocessing import restore_size

console = Console(width=None if sys.stdout.isatty() else 150)
BUSY_PATTERN = "medseg train"  # another training on the machine spoils latency numbers
SPACING_MM = (1.0, 1.0, 1.0)  # MNI152 is 1 mm isotropic
WARMUP = 5
IDLE_BUSY = 0.2  # CPU busy fraction below which the machine counts as idle for timing
THREADS_HELP = "torch threads while training (fixed: results depend on it; and 2 OpenMP\n"
THREADS_HELP += "threads beside another training run ~10x slower than 1 on 2 cores)"
DATA_NOTE = (
    "The data is ONE template brain (MNI152 2009a, an average of 152 subjects) split by "
    "slices: validation is every 5th block of 8 consecutive axial slices. The numbers show "
    "relative behaviour on real anatomy, not generalisation across patients."
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw dataset folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/model_comparison"))
    p.add_argument("--work", type=Path, default=None, help="run dirs (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patch", type=int, default=128, help="square training crop (pixels)")
    p.add_argument("--variant", default="small", help="tiny | small | paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-iters", type=int, default=30)
    p.add_argument("--max-wait", type=float, default=1800.0, help="s to wait for an idle CPU")
    p.add_argument("--train-threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument(
        "--quick",
        action="store_true",
        help="seconds-long check (CI): 1 epoch, tiny variant, 32 px crops, 2 latency iters",
    )
    args = p.parse_args()
    if args.quick:
        args.epochs, args.variant, args.patch = 1, "tiny", 32
        args.latency_iters, args.max_wait = 2, 0.0
    if args.latency_iters < 1 or args.train_threads < 1:
        p.error("--latency-iters and --train-threads must be at least 1")
    return args


def contiguous_blocks(slices: SliceSet) -> list[list[int]]:
    """Positions of ``slices`` grouped into runs of consecutive slice indices of one case."""
    blocks: list[list[int]] = []
    for i, ref in enumerate(slices.refs):
        prev = slices.refs[i - 1] if i else None
        if prev is None or (prev.case_id, prev.index + 1) != (ref.case_id, ref.index):
            blocks.append([])
        blocks[-1].append(i)
    return blocks


def block_hd95(pred: np.ndarray, slices: SliceSet, classes: dict[str, int]) -> list[dict[str, Any]]:
    """HD95 (mm) per class of each contiguous block, restored to original size and stacked
    into a small ``(H, W, n)`` volume."""
    out = []
    for block in contiguous_blocks(slices):
        pred_3d, ref_3d = (
            np.stack([restore_size(a[i], slices.geometries[i], True) for i in block], axis=-1)
            for a in (pred, slices.labels)
        )
        per_class = compute_case_metrics(pred_3d, ref_3d, classes, SPACING_MM).classes
        name = f"{slices.refs[block[0]]}..{slices.refs[block[-1]].index:03d}"
        hd95 = {k: c.hd95_mm for k, c in per_class.items()}
        one_empty = [k for k, c in per_class.items() if c.surface_one_empty]
        out.append({"slices": name, "hd95_mm": hd95, "one_empty": one_empty})
    return out


def cpu_busy(seconds: float = 5.0) -> float:
    """Fraction of all CPU time that was busy (any process) over ``seconds``, /proc/stat."""

    def ticks() -> list[int]:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]

    before = ticks()
    time.sleep(seconds)
    delta = [b - a for a, b in zip(before, ticks(), strict=True)]
    return round(1.0 - (delta[3] + delta[4]) / max(1, sum(delta)), 3)  # idle + iowait


def wait_until_idle(max_wait_s: float) -> dict[str, Any]:
    """Poll every 20 s until no ``medseg train`` runs and the CPU is below ``IDLE_BUSY``
    busy over 5 s, at most ``max_wait_s``; says what it found."""
    t0 = time.monotonic()
    while True:
        found = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True)
        others = [line for line in found.stdout.splitlines() if line.strip()]
        busy, waited = cpu_busy(), time.monotonic() - t0
        if (not others and busy < IDLE_BUSY) or waited >= max_wait_s:
            status = {"busy": bool(others) or busy >= IDLE_BUSY, "cpu_busy_before": busy}
            return {"waited_s": round(waited, 1), **status, "other_trainings": others}
        console.print(f"waiting: {len(others)} other training(s), CPU {busy:.0%} busy")
        time.sleep(15)


def cpu_latency_ms(models: dict[str, Any], shape: tuple[int, ...], iters: int) -> dict[str, Any]:
    """Eager FP32 batch-1 latency on CPU: ``WARMUP`` then ``iters`` timed runs per model,
    the models taking turns so that a burst of load elsewhere hits all of them alike."""
    x = torch.randn(shape)
    times: dict[str, list[float]] = {arch: [] for arch in models}
    with torch.inference_mode():
        for i in range(WARMUP + iters):
            for arch, model in models.items():
                t0 = time.perf_counter_ns()
                model(x)
                if i >= WARMUP:
                    times[arch].append((time.perf_counter_ns() - t0) / 1e6)
    return {
        arch: {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95))}
        for arch, t in times.items()
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


TAIL = ("HD95 mm", "params M", "GFLOPs", "CPU ms med/p95", "train s", "best ep")


def cells(arch: str, r: dict[str, Any]) -> list[str]:
    """One table row: model, mean Dice, Dice per class, then the ``TAIL`` columns."""
    dice = [f"{v:.4f}" for v in (r["mean_dice"], *r["dice"].values())]
    size = (f"{r['hd95_mm']:.2f}", f"{r['params_m']:.3f}", f"{r['gflops']:.2f}")
    lat = "{median_ms:.1f} / {p95_ms:.1f}".format(**r["latency"])
    return [arch, *dice, *size, lat, f"{r['train_seconds']:.0f}", str(r["best_epoch"])]


def notes(rep: dict[str, Any]) -> list[str]:
    cfg, lat, m = rep["config"], rep["latency_setup"], rep["machine"]
    size = "1x{}x{}x{}".format(*rep["network_input_chw"])
    busy = " The machine was BUSY (see the JSON) when timing began." if lat["busy"] else ""
    one_empty = {a: r["hd95_one_empty"] for a, r in rep["rows"].items()}
    return [
        DATA_NOTE,
        f"Same `TrainConfig` for every model except `arch`: {cfg['epochs']} epochs, batch "
        f"{cfg['batch_size']}, AdamW lr {cfg['lr']} ({cfg['schedule']}), patch "
        f"{cfg['patch_size']}, augmentation {cfg['augment']} with flip axes {cfg['flip_axes']}, "
        f"seed {cfg['seed']}, variant `{cfg['variant']}`, {rep['train_threads']} torch "
        f"thread(s) on {rep['train_device']}; the best epoch by validation mean Dice is used.",
        "Dice: per class, pooled over all validation slices at original size "
        f"({rep['val_slices']} slices); mean Dice = mean over CSF/GM/WM.",
        "HD95: surface distances need contiguous anatomy, so HD95 is computed in 3D on each "
        f"contiguous block of validation slices ({rep['val_blocks']} blocks, spacing 1 mm) and "
        "averaged over blocks and classes. Empty-mask policy of `medseg.metrics`: both empty = "
        "0 mm, exactly one empty = the block's diagonal (about 305 mm), counted; (block, class) "
        f"pairs with one empty mask: {one_empty}. Per block values are in the JSON.",
        f"GFLOPs: 2 x MACs (conv/linear layers) for one {size} slice at network size.",
        f"CPU latency: PyTorch eager FP32, batch 1, `torch.inference_mode()`, input {size}, "
        f"{lat['warmup']} warmup then {lat['iters']} timed runs (`perf_counter_ns`), median / "
        f"p95 ms, models taking turns, {lat['threads']} threads on {m['cpu']} ({m['cores']} "
        f"cores); CPU {lat['cpu_busy_before']:.0%} busy in the 5 s before.{busy} ONNX Runtime "
        "latency replaces this once export exists (not yet).",
        "Training time: wall clock of `medseg.train.train` (with per-epoch validation) on a "
        "shared machine; compare it between rows with care.",
    ]


def train_all(args: argparse.Namespace, base: TrainConfig, work: Path) -> dict[str, TrainResult]:
    archs = sorted(list_models(), key=lambda a: (a != "unet", a != "attention-unet", a))
    results = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    for arch in archs:
        console.rule(f"[bold]{arch}[/] ({args.variant}) -> {work / arch}")
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:

            def on_epoch(log: EpochLog, bar: Progress = bar) -> None:
                dice = "  ".join(f"{k} {v:.3f}" for k, v in log.val_dice.items())
                bar.console.print(
                    f"epoch {log.epoch:3d}  loss {log.train_loss:.4f}  val {dice}  mean "
                    f"{log.val_mean_dice:.4f}  ({log.seconds:.0f} s){' *' if log.best else ''}",
                    highlight=False,
                )

            results[arch] = train(
                args.dataset,
                work / arch,
                replace(base, arch=arch),
                force=True,
                on_epoch=on_epoch,
            )
    return results


def evaluate(res: TrainResult, data: TrainingData, classes: dict[str, int]) -> dict[str, Any]:
    model = load_checkpoint(res.run_dir).model
    pred = predict_slice_labels(model, data.val.images, torch.device("cpu"))
    dice = validation_dice(pred, data.val, classes)
    blocks = block_hd95(pred, data.val, classes)
    return {
        "mean_dice": float(np.mean(list(dice.values()))),
        "dice": dice,
        "hd95_mm": float(np.mean([v for b in blocks for v in b["hd95_mm"].values()])),
        "hd95_mm_per_class": {k: float(np.mean([b["hd95_mm"][k] for b in blocks])) for k in dice},
        "hd95_one_empty": sum(len(b["one_empty"]) for b in blocks),
        "hd95_blocks": blocks,
        "params_m": count_parameters(model) / 1e6,
        "gflops": count_flops(model, (1, *data.val.images.shape[1:])) / 1e9,
        "train_seconds": res.seconds,
        "best_epoch": res.best_epoch,
        "curve": [[e.epoch, e.train_loss, e.val_mean_dice] for e in res.epochs],
        "run_dir": str(res.run_dir),
        "model": model,  # popped before writing
    }


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    latency_threads = torch.get_num_threads()
    torch.set_num_threads(args.train_threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="medseg_compare_"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(
        variant=args.variant,
        epochs=args.epochs,
        patch_size=(args.patch, args.patch),
        flip_axes=(0,),
        seed=args.seed,
    )
    results = train_all(args, base, work)
    axis = 2 if base.slice_axis is None else base.slice_axis  # None: whole-slice default
    data = load_training_data(args.dataset, axis, base.val_fraction, base.seed)
    classes = {k: v for k, v in data.spec.labels.items() if v > 0}
    chw = tuple(int(n) for n in data.val.images.shape[1:])
    rows = {arch: evaluate(res, data, classes) for arch, res in results.items()}

    console.rule("CPU latency")
    idle = wait_until_idle(args.max_wait)
    torch.set_num_threads(latency_threads)
    models = {arch: r.pop("model") for arch, r in rows.items()}
    for arch, ms in cpu_latency_ms(models, (1, *chw), args.latency_iters).items():
        rows[arch]["latency"] = ms
    threads = torch.get_num_threads()
    lat = {"warmup": WARMUP, "iters": args.latency_iters, "threads": threads, **idle}
    lat["cpu_busy_after"] = cpu_busy()
    rep: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ".venv/bin/python " + shlex.join(sys.argv),
        "note": DATA_NOTE,
        "dataset": {"path": str(args.dataset), "name": data.spec.name, "id": data.fingerprint},
        "split": data.split.description,
        "config": {k: v for k, v in base.to_dict().items() if k != "arch"},
        "train_threads": args.train_threads,
        "train_device": "cuda" if torch.cuda.is_available() else "cpu",
        "classes": list(classes),
        "network_input_chw": list(chw),
        "val_slices": len(data.val),
        "val_blocks": len(contiguous_blocks(data.val)),
        "machine": machine(),
        "latency_setup": lat,
        "curve_columns": ["epoch", "train_loss", "val_mean_dice"],
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    json_path, md_path = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    json_path.write_text(json.dumps(rep, indent=2) + "\n")
    head = ["model", "mean Dice", *(f"Dice {c}" for c in classes), *TAIL]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(cells(f"`{a}`", r)) + " |" for a, r in rows.items()]
    md += ["", *(f"- {n}" for n in notes(rep)), "", "Produced by:", "", "```bash"]
    md_path.write_text(
        f"# Model comparison ({rep['date']})\n\n" + "\n".join(md) + f"\n{rep['command']}\n```\n"
    )
    table = Table(title=f"model comparison ({args.variant}, {args.epochs} epochs)")
    for col in head:
        table.add_column(col, justify="left" if col == "model" else "right")
    for arch, r in rows.items():
        table.add_row(*cells(arch, r))
    console.print(table)
    console.print(f"[green]✓[/] {json_path}, {md_path} ({rep['wall_seconds']:.0f} s)")
    console.print(f"run dirs (curves, checkpoints): {work}")


if __name__ == "__main__":
    main()
