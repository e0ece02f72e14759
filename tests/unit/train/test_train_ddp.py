"""torchrun: two gloo processes on the CPU train like one process of the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.cli.train_torchrun import torchrun_command  # noqa: E402

SRC = Path(__file__).resolve().parents[3] / "src"


def test_torchrun_command_drops_nproc() -> None:
    cmd = torchrun_command(2, ["DATA", "--out", "RUN", "--nproc", "2", "--epochs", "1"])
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "medseg.train",
        "DATA",
        "--out",
        "RUN",
        "--epochs",
        "1",
    ]


def _train(data: Path, run: Path, nproc: int | None) -> subprocess.CompletedProcess[str]:
    args = [str(data), "--out", str(run), "--arch", "unet", "--variant", "tiny", "--lr", "5e-3"]
    args += ["--epochs", "3", "--batch-size", "4", "--workers", "0", "--fold", "0", "--folds", "4"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    if nproc is None:
        cmd = [sys.executable, "-m", "medseg.train", *args]
    else:  # `medseg train --nproc 2` runs this command
        cmd = torchrun_command(nproc, [*args, "--nproc", str(nproc)])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MEDSEG_DDP_TEST") != "1",
    reason="two gloo processes took 697 s on the loaded 2-core box and did not finish in 14 min "
    "in the clean-clone CI run; run it with MEDSEG_DDP_TEST=1 (issue 23 keeps it open)",
)
def test_two_gloo_processes_match_one_process_and_write_one_exportable_checkpoint(
    make_toy_dataset, tmp_path: Path
) -> None:
    data = make_toy_dataset(tmp_path / "toy", num_cases=4, shape=(32, 32, 8))
    one, two = tmp_path / "one", tmp_path / "two"
    single = _train(data, one, None)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = _train(data, two, 2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    record = json.loads((two / "config.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert record["train"] == json.loads((one / "config.json").read_text())["train"]
    assert sorted(p.name for p in two.glob("*.pt")) == ["last.pt", "model.pt"]
    assert not list(two.glob("*.tmp*"))
    losses = [
        [json.loads(r)["train_loss"] for r in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (one, two)
    ]
    assert len(losses[0]) == len(losses[1]) == 3
    for a, b in zip(*losses, strict=True):  # same global batch: same curve up to BatchNorm noise
        assert abs(a - b) <= 0.1 * a, losses
    assert losses[1][-1] < losses[1][0]  # it learns
    from medseg.events import ignore
    from medseg.export import ExportOptions, export_bundle

    export_bundle(two, tmp_path / "bundle", ExportOptions(), ignore)
    assert (tmp_path / "bundle" / "model.onnx").is_file()
