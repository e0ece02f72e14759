"""Validation Dice that ``medseg train --time-budget B`` reaches, for several budgets (issue 23).

Each budget is one ``medseg train COHORT --out RUN --time-budget B`` process with every other
default, run one after the other (never side by side: they would share the cores). Output goes
to a pipe, as in a CI log: each line is time-stamped as it arrives (``train.stamped.log``,
seconds from the process start), so the longest silence of the log is measured, not assumed.

Per budget, ``OUT/<budget>/`` gets the log, the run's ``config.json`` (plan, budget sizing,
time split), ``metrics.jsonl``, ``validation.json`` (the best checkpoint on every slice of the
validation cases) and ``training_curve.png``, and a ``summary.json``. ``OUT/summary.json``,
``OUT/table.md`` and ``OUT/dice_vs_budget.png`` put the budgets side by side.

    medseg data mni152-cohort /tmp/cohort            # the 12-case cohort, seed 0
    python benchmarks/train_budget.py /tmp/cohort --budgets 10m,20m,30m,60m \\
        --out benchmarks/results/train-budget --note "idle machine"

``--quick`` runs one 30-second budget of the tiny U-Net (the test suite's check that the
script works, not a measurement).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUN_FILES = ("config.json", "metrics.jsonl", "validation.json", "training_curve.png")


def machine_line(machine: dict[str, Any]) -> str:
    """``describe_machine()`` in one line: CPU, its class (AVX2, AVX-512 VNNI, AMX...), cores."""
    features = machine["cpu_features"]
    bf16 = f", BF16 {features['bf16']}" if features["bf16"] else ", no native BF16"
    return f"{machine['cpu']} ({features['cpu_class']}{bf16}), {machine['cores']} cores"


def run_budget(cohort: Path, budget: str, run_dir: Path, extra: list[str]) -> dict[str, Any]:
    """One training process; returns the stamped log's figures (wall time, silences, exit code)."""
    cmd = [sys.executable, "-m", "medseg", "train", str(cohort), "--out", str(run_dir)]
    cmd += ["--time-budget", budget, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    started = time.monotonic()
    stamped: list[tuple[float, str]] = []
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            at = time.monotonic() - started
            stamped.append((at, line.rstrip("\n")))
            print(f"[{budget} {at:7.1f} s] {line}", end="", flush=True)
        code = proc.wait()
    wall = time.monotonic() - started
    times = [0.0] + [t for t, _ in stamped] + [wall]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "command": " ".join(
            ["medseg", "train", "COHORT", "--out", "RUN", "--time-budget", budget, *extra]
        ),
        "exit_code": code,
        "wall_seconds": round(wall, 1),
        "log_lines": len(stamped),
        "max_silence_seconds": round(max(gaps), 1),
        "silences_over_30s": [round(g, 1) for g in gaps if g > 30.0],
        "stamped": stamped,
    }


def full_validation(cohort: Path, run_dir: Path) -> dict[str, Any]:
    """The best checkpoint (``run_dir/model.pt``) scored on every validation slice of the run's
    held-out cases with the run's validation arithmetic, as an ``--epochs`` run scores it at
    the end (a budgeted run validates on a fixed subset of the slices).

    Returns ``{"dice": {class: mean over cases}, "mean_dice", "hd95_mm": {class: mm},
    "cases", "slices", "seconds"}``. Runs after the training process, outside its budget."""
    import torch

    from medseg.plan.planner import Plan
    from medseg.train import load_checkpoint
    from medseg.train.arith import run_arithmetic
    from medseg.train.config import TrainConfig
    from medseg.train.planned import evaluate_cases, load_planned_data, torch_predictor

    started = time.monotonic()
    record = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict(record["train"])
    data = load_planned_data(cohort, config, Plan.from_dict(record["plan"]), device="cpu")
    model = load_checkpoint(run_dir).model  # eval mode
    # the run's own validation arithmetic (BF16 autocast on a CPU with native BF16)
    dtype = run_arithmetic(config, "cpu").autocast_dtype()
    with torch.inference_mode():
        result = evaluate_cases(data, torch_predictor(model, torch.device("cpu"), dtype), True)
    hd95 = {name: m["hd95"] for name, m in result["mean"].items()}
    return {
        "dice": {name: round(float(m["dice"]), 4) for name, m in result["mean"].items()},
        "mean_dice": round(float(result["mean_dice"]), 4),
        "hd95_mm": {name: None if v is None else round(float(v), 2) for name, v in hd95.items()},
        "cases": sorted(result["cases"]),
        "slices": int(sum(result["slices"].values())),
        "seconds": round(time.monotonic() - started, 1),
    }


def summarise(
    budget: str, figures: dict[str, Any], cohort: Path, run_dir: Path, out: Path
) -> dict[str, Any]:
    """Copy the run's files to ``out`` and gather the figures of the table."""
    out.mkdir(parents=True, exist_ok=True)
    stamped = figures.pop("stamped")
    (out / "train.log").write_text("".join(f"{line}\n" for _, line in stamped))
    (out / "train.stamped.log").write_text("".join(f"{t:8.1f} {line}\n" for t, line in stamped))
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, out / name)
    from medseg.train.rundir import read_metrics

    def read(name: str) -> dict[str, Any]:  # {} where a failed run wrote none
        path = run_dir / name
        return json.loads(path.read_text()) if path.exists() else {}

    config, validation = read("config.json"), read("validation.json")
    rows = read_metrics(run_dir)
    best: dict[str, Any] = max(rows, key=lambda r: r.get("val_mean_dice", -1.0), default={})
    timing = config.get("timing", {})
    sizing = config.get("budget", {})
    subset = {name: round(float(m["dice"]), 4) for name, m in validation.get("mean", {}).items()}
    summary = {
        "budget": budget,
        **figures,
        "budget_seconds": sizing.get("seconds"),
        "steps": config.get("steps", sizing.get("steps")),
        "step_seconds_warmup": sizing.get("step_seconds"),
        "patch": config.get("train", {}).get("patch_size"),
        "batch": config.get("train", {}).get("batch_size"),
        "arithmetic": config.get("arithmetic"),
        "timing": timing,
        "validation_share_of_wall": round(
            timing.get("validation", 0.0) / figures["wall_seconds"], 3
        ),
        "data_share_of_steps": round(
            timing.get("data", 0.0) / max(timing.get("steps", 0.0), 1e-9), 3
        ),
        "best_step": best.get("step"),
        "run_validation": {  # what the run chose its best checkpoint by (maybe a subset)
            "dice": subset,
            "mean_dice": round(float(best.get("val_mean_dice", float("nan"))), 4),
            "slices": int(sum(validation.get("slices", {}).values())),
        },
        "full_validation": full_validation(cohort, run_dir) if figures["exit_code"] == 0 else None,
        "budget_sizing": sizing,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(summaries: list[dict[str, Any]]) -> str:
    """The markdown table of the budgets side by side (Dice: the best checkpoint on every
    validation slice; "the run's validation": what the run chose it by, on its subset;
    "start-up etc.": the wall time less steps and validation: imports, planning, preparing the
    cases, the last checkpoint and curve)."""
    scored = [s["full_validation"] for s in summaries if s["full_validation"]]
    classes = list(scored[0]["dice"]) if scored else []
    head = ["budget", "wall s", "steps", "patch x batch", "steps s", "data wait s"]
    head += ["validation s (share)", "start-up etc. s", "mean Dice", *classes]
    head += ["the run's validation: mean Dice (slices)"]
    head += ["longest log silence s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sorted(summaries, key=lambda s: s["budget_seconds"] or 0):
        t = s["timing"]
        other = s["wall_seconds"] - t.get("steps", 0.0) - t.get("validation", 0.0)
        patch = "x".join(str(p) for p in s["patch"] or []) + f" x {s['batch']}"
        full = s["full_validation"] or {"dice": {}, "mean_dice": float("nan")}
        cells = [
            s["budget"],
            f"{s['wall_seconds']:.0f}",
            str(s["steps"]),
            patch,
            f"{t.get('steps', 0.0):.0f}",
            f"{t.get('data', 0.0):.1f}",
            f"{t.get('validation', 0.0):.0f} ({100 * s['validation_share_of_wall']:.1f} %)",
            f"{other:.0f}",
            f"**{full['mean_dice']:.3f}**",
            *(f"{full['dice'].get(c, float('nan')):.3f}" for c in classes),
            f"{s['run_validation']['mean_dice']:.3f} ({s['run_validation']['slices']} of "
            f"{full.get('slices', '?')})",
            f"{s['max_silence_seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    """Validation Dice of the best checkpoint (mean and per class) against the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((s for s in summaries if s["full_validation"]), key=lambda s: s["budget_seconds"])
    if not done:
        return
    minutes = [s["budget_seconds"] / 60 for s in done]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in done[0]["full_validation"]["dice"]:
        dice = [s["full_validation"]["dice"][name] for s in done]
        ax.plot(minutes, dice, "o--", label=name)
    ax.plot(minutes, [s["full_validation"]["mean_dice"] for s in done], "ko-", lw=2, label="mean")
    ax.set(xlabel="--time-budget (minutes)", ylabel="validation Dice, best checkpoint", ylim=(0, 1))
    ax.set_title("medseg train on the 12-case cohort, every other default", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "cohort", type=Path, help="a dataset folder (medseg data mni152-cohort DIR)"
    )
    parser.add_argument(
        "--budgets", default="10m,20m,30m,60m", help="comma-separated --time-budget values"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train-budget"))
    parser.add_argument(
        "--note", default="", help="what else ran on the machine, recorded as given"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one 30 s budget of the tiny U-Net (checks the script; the figures mean nothing)",
    )
    parser.add_argument("extra", nargs="*", help="more medseg train options, after --")
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.extra = "30s", ["--arch", "unet", "--variant", "tiny", *args.extra]
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    from medseg.bench.machine import describe_machine

    machine = describe_machine()
    print(
        f"machine: {machine_line(machine)}; budgets {', '.join(budgets)}; note: {args.note or '-'}",
        flush=True,
    )
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="train-budget-") as work:
        for budget in budgets:
            run_dir = Path(work) / budget
            figures = run_budget(args.cohort, budget, run_dir, args.extra)
            summaries.append(summarise(budget, figures, args.cohort, run_dir, args.out / budget))
            print(table(summaries), flush=True)
            record = {"machine": machine, "note": args.note}
            (args.out / "summary.json").write_text(
                json.dumps({**record, "runs": summaries}, indent=2) + "\n"
            )
            (args.out / "table.md").write_text(table(summaries))
            plot(summaries, args.out / "dice_vs_budget.png")
    return 0 if all(s["exit_code"] == 0 for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
