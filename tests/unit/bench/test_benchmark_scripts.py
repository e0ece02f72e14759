"""Every script under benchmarks/ runs in its seconds-long ``--quick`` mode, so none can rot
(cpu_side_by_side.py failed on main for a release once the demo bundle became a window
bundle). Each writes into a temporary folder, never into benchmarks/results/.
``triton_smoke.py`` runs in full in CI (``make triton-smoke``), so it is not repeated here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(SCRIPTS)])}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_every_script_has_a_quick_mode() -> None:
    for script in sorted(SCRIPTS.glob("*.py")):
        assert "--quick" in script.read_text(), f"{script.name} has no --quick mode"


def test_cpu_side_by_side_quick(demo_bundle: Path, mni_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "sbs"
    _run(
        [
            str(SCRIPTS / "cpu_side_by_side.py"),
            str(demo_bundle),
            str(mni_dataset),
            "--out",
            str(out),
            "--quick",
        ],
        tmp_path,
    )
    report = (out / "report.md").read_text()
    assert "model.int8.cpu.onnx" in report and "% FP32 peak" in report
    assert (out / "results.json").is_file()


def test_prepost_share_quick(demo_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepost.json"
    _run(
        [
            str(SCRIPTS / "prepost_share.py"),
            "--bundle",
            str(demo_bundle),
            "--quick",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert out.is_file()


def test_infer_memory_quick(tmp_path: Path) -> None:
    out = tmp_path / "mem.json"
    _run([str(SCRIPTS / "infer_memory.py"), "--quick", "--out", str(out)], tmp_path)
    assert out.is_file()


def test_compare_models_quick(toy_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    _run(
        [
            str(SCRIPTS / "compare_models.py"),
            "--dataset",
            str(toy_data),
            "--quick",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "runs"),
        ],
        tmp_path,
    )
    assert Path(f"{out}.json").is_file()


def test_train_budget_quick(toy_data: Path, tmp_path: Path) -> None:
    """One 30 s budget: the stamped log, the run's files and the side-by-side table."""
    import json

    out = tmp_path / "tb"
    done = _run(
        [str(SCRIPTS / "train_budget.py"), str(toy_data), "--quick", "--out", str(out)], tmp_path
    )
    summary = json.loads((out / "summary.json").read_text())
    (run,) = summary["runs"]
    assert run["exit_code"] == 0 and run["budget_seconds"] == 30 and run["steps"] >= 1
    # the budget counts from the command's start; Python's own start-up and exit come on top
    assert run["wall_seconds"] < 30 + 20 and run["log_lines"] == len(
        (out / "30s" / "train.log").read_text().splitlines()
    )
    assert run["timing"]["steps"] > 0 and run["best_step"] >= 1 and len(run["patch"]) == 2
    full = run["full_validation"]  # every validation slice, scored after the run
    assert 0.0 <= full["mean_dice"] <= 1.0 and full["cases"]
    assert full["slices"] >= run["run_validation"]["slices"] >= 1
    for name in ("config.json", "metrics.jsonl", "validation.json", "training_curve.png"):
        assert (out / "30s" / name).is_file(), name
    assert "| 30s |" in (out / "table.md").read_text() and "| 30s |" in done.stdout
    assert (out / "dice_vs_budget.png").is_file()
