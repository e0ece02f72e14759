"""torchrun: two gloo processes on the CPU train like one process of the same global batch.

Fast and unable to hang CI:

* the one-process reference runs in this process (``medseg train`` through typer's runner):
  only torchrun and its two ranks are new Python processes;
* those processes share a byte-code cache, filled first by this process with the byte code of
  what it has imported (torch, MONAI, medseg): this project's machines set
  ``PYTHONDONTWRITEBYTECODE=1`` and install with ``pip --no-compile``, so without it each new
  process compiles torch and MONAI from source (about 40 s of CPU each, three at once: most of
  the 697 s the test once took beside other work);
* torchrun runs ``--standalone`` (its rendezvous binds port 0 and keeps it: no port two
  sessions or xdist workers could both take) with gloo on the loopback interface;
* every process has a hard timeout: torchrun is sent SIGTERM (it stops its ranks), then the
  launcher and every process it started are killed.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.cli.app import app  # noqa: E402
from medseg.cli.train_torchrun import torchrun_command  # noqa: E402

SRC = Path(__file__).resolve().parents[3] / "src"
#: Hard limit of the torchrun run (it takes 30-90 s on 2 loaded cores).
TIMEOUT_S = 420
ARGS = ["--arch", "unet", "--variant", "tiny", "--lr", "5e-3", "--epochs", "3"]
ARGS += ["--batch-size", "4", "--workers", "0", "--fold", "0", "--folds", "4"]


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


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # not a rank of an enclosing run
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


#: Packages whose byte code the ranks load (the rest is small).
CACHED = {"torch", "monai", "medseg", "numpy", "scipy", "matplotlib", "nibabel", "sympy", "rich"}
CACHED |= {"typer", "click", "PIL", "networkx", "jinja2", "fsspec", "filelock", "pydantic"}


def _fill_byte_code_cache(cache: Path) -> None:
    """Write the byte code of the modules of :data:`CACHED` this process has imported into
    ``cache`` (the ranks' ``PYTHONPYCACHEPREFIX``); files already there and current are kept."""
    import torch.distributed.run  # noqa: F401  (what the launcher imports)

    saved = sys.pycache_prefix
    sys.pycache_prefix = str(cache)
    try:
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if name.partition(".")[0] in CACHED and path and path.endswith(".py"):
                compileall.compile_file(path, quiet=2)
    finally:
        sys.pycache_prefix = saved


def _cache_dir(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    """pytest's cache folder (kept between sessions), else the session's shared temp folder."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("medseg-pycache"))
    shared = factory.getbasetemp()
    return shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts each rank in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _run_bounded(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``cmd``; past ``timeout`` s stop it and all it started, and fail the test."""
    with subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            below = _descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)  # torchrun stops its ranks
            time.sleep(5)
            for pid in [proc.pid, *below]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"{' '.join(cmd[:6])} ... ran past {timeout} s; killed:\n{out[-3000:]}")


@pytest.mark.slow  # 60-90 s on 2 loaded cores (torchrun and two ranks start torch and MONAI)
def test_two_gloo_processes_match_one_process_and_write_one_exportable_checkpoint(
    make_toy_dataset: Callable[..., Path],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    one_torch_thread: None,
) -> None:
    data = make_toy_dataset(tmp_path / "toy", num_cases=4, shape=(32, 32, 8))
    one, two = tmp_path / "one", tmp_path / "two"
    single = CliRunner().invoke(app, ["train", str(data), "--out", str(one), *ARGS])
    assert single.exit_code == 0, single.output[-2000:]
    cache = _cache_dir(request, tmp_path_factory)
    # `medseg train --nproc 2` runs this command
    cmd = torchrun_command(2, [str(data), "--out", str(two), *ARGS, "--nproc", "2"])
    env = _env(cache)
    if "PYTHONPYCACHEPREFIX" in env:
        _fill_byte_code_cache(cache)
    code, out = _run_bounded(cmd, env, TIMEOUT_S)
    assert code == 0, out[-3000:]
    assert "2 processes (DDP, gloo)" in out
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
