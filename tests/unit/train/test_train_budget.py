"""Training at the speed of the hardware: time budget, progress lines, data workers, arithmetic."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from medseg.errors import ConfigError
from medseg.events import Event
from medseg.train.arith import cpu_has_native_bf16, resolve_arithmetic
from medseg.train.budget import VALIDATION_SHARE, parse_duration, size_run

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("2h", 7200), ("40s", 40), ("45", 45), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "ten minutes", "5d", "-3m"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--time-budget .* 30m"):
        parse_duration(text)


def test_size_run_fits_the_budget_and_keeps_validation_under_its_share() -> None:
    size = size_run(1800, elapsed_seconds=60, steps_done=5, step_seconds=2.0, validation_seconds=8)
    spent = 60 + (size.total_steps - 5) * 2.0 + size.validations * 8
    assert spent <= 1800
    assert size.validations * 8 <= VALIDATION_SHARE * 1800 + 1e-9
    assert size.total_steps > 700 and size.validations >= 10
    assert (size.total_steps - 5) <= size.validations * size.steps_between
    with pytest.raises(ConfigError, match="too short"):
        size_run(40, elapsed_seconds=39, steps_done=5, step_seconds=2.0, validation_seconds=5)


def test_arithmetic_follows_the_device(tmp_path: Path) -> None:
    avx2 = tmp_path / "cpuinfo"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(avx2) and cpu_has_native_bf16(amx)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    plain = resolve_arithmetic("cpu", cpu_bf16=False)
    assert plain.dtype is None and "FP32" in plain.reason and "AVX512_BF16" in plain.reason
    assert resolve_arithmetic("cpu", cpu_bf16=True).dtype == "bf16"
    assert resolve_arithmetic("cuda", cuda_bf16=True).dtype == "bf16"
    fp16 = resolve_arithmetic("cuda", cuda_bf16=False)
    assert fp16.dtype == "fp16" and fp16.scaler
    assert resolve_arithmetic("cpu", channels_last=False, cpu_bf16=False).channels_last is False
    with pytest.raises(ConfigError, match="--precision fp16 needs CUDA"):
        resolve_arithmetic("cpu", "fp16")


def _step(n: int) -> Event:
    return Event("train.step", "info", f"step {n}/10", {"step": n, "total": 10})


def test_log_gets_a_step_line_per_interval_and_every_validation() -> None:
    from medseg.cli.train_progress import training_events

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with training_events(console, interval=0.2) as sink:
        for n in range(1, 4):
            sink(_step(n))  # the first prints, the next two fall inside the interval
        sink(Event("train.validation", "done", "step 3: val Dice 0.5"))
        time.sleep(0.25)
        sink(_step(4))
    lines = out.getvalue().splitlines()
    assert lines == ["step 1/10", "✓ step 3: val Dice 0.5", "step 4/10"]


def test_a_silent_log_gets_a_heartbeat_line_naming_what_runs() -> None:
    import re

    from medseg.cli.train_progress import log_heartbeat, training_events

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with log_heartbeat(console, time.perf_counter(), interval=0.3) as beat:
        assert beat is not None
        time.sleep(0.8)  # silence: heartbeat lines (the phase the CLI starts in)
        beat.touch("planning DATA")
        time.sleep(0.8)
        with training_events(console, interval=60, heartbeat=beat) as sink:
            sink(_step(1))
            time.sleep(0.2)  # a step that prints nothing (inside the step-line interval)
            sink(_step(2))
            silent_since = beat.last
            sink(Event("train.validation", "start", "validating at step 2"))
            assert beat.last == silent_since  # a start event does not restart the silence count
            time.sleep(0.8)  # a long validation: the heartbeat names it
            sink(Event("train.validation", "done", "step 1: val Dice 0.5"))
    lines = [re.sub(r" \(elapsed \d+:\d\d\)$", "", line) for line in out.getvalue().splitlines()]
    assert all(line.endswith(")") for line in out.getvalue().splitlines() if "..." in line)
    assert [a for a, b in zip(lines, [None, *lines[:-1]], strict=True) if a != b] == [
        "  ... starting (loading torch)",
        "  ... planning DATA",
        "step 1/10",
        "  ... validating at step 2",
        "✓ step 1: val Dice 0.5",
    ]
    on_terminal = Console(file=io.StringIO(), force_terminal=True)
    with log_heartbeat(on_terminal, time.perf_counter()) as none:
        assert none is None  # the rich bar shows progress there


torch = pytest.importorskip("torch")
pytest.importorskip("monai")


def _sampler() -> object:
    from medseg.train.patches import PatchSampler, PatchSource

    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 1, 40, 48)).astype(np.float32)
    labels = (images[:, 0] > 0.5).astype(np.uint8)
    return PatchSampler([PatchSource("a", images, labels)], (32, 32), 0.5, seed=0)


def test_batches_do_not_depend_on_the_worker_count() -> None:
    from medseg.train.augment import build_augmentation
    from medseg.train.config import TrainConfig
    from medseg.train.patches import PatchDataset, StreamSampler
    from medseg.train.sources import _loader

    config = TrainConfig(patch_size=(32, 32), flip_axes=(0, 1), seed=3)
    runs = []
    for workers in (0, 2):
        dataset = PatchDataset(_sampler(), 8, 3, build_augmentation(config, crop=False))  # type: ignore[arg-type]
        stream = StreamSampler(4, start_step=1)
        it = _loader(dataset, 4, stream, workers, False, 3)
        runs.append([next(it) for _ in range(3)])
        del it
    for (a_img, a_lab), (b_img, b_lab) in zip(*runs, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(runs[0][0][0], runs[0][1][0])  # the steps differ


def test_ranks_share_the_global_batch() -> None:
    from medseg.train.patches import StreamSampler

    one = StreamSampler(4, start_step=2)
    first = [i for i, _ in zip(one, range(8), strict=False)]
    assert first == list(range(8, 16))
    ranks = [StreamSampler(4, 2, r, 2) for r in (0, 1)]
    got = sorted(i for s in ranks for i, _ in zip(s, range(4), strict=False))
    assert got == first and ranks[0].local_batch() == 2
    with pytest.raises(ConfigError, match="at least the number of processes"):
        StreamSampler(1, 0, 0, 2)


def test_epochs_and_time_budget_exclude_each_other(toy_dataset: Path, tmp_path: Path) -> None:
    from medseg.cli.app import app

    base = ["train", str(toy_dataset), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*base, "--epochs", "2", "--time-budget", "5m"])
    assert result.exit_code == 2 and "--epochs and --time-budget" in result.output
    result = runner.invoke(app, [*base, "--time-budget", "soon"])
    assert result.exit_code == 2 and "--time-budget 'soon'" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_time_budget_run_ends_in_time_with_best_checkpoint_and_log_lines(
    make_toy_dataset, tmp_path: Path
) -> None:
    from medseg.cli.app import app
    from medseg.train import load_checkpoint

    data = make_toy_dataset(tmp_path / "toy", num_cases=4, shape=(64, 64, 12))
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--arch", "unet", "--variant", "tiny"]
    started = time.perf_counter()
    result = runner.invoke(app, [*args, "--time-budget", "60s", "--lr", "5e-3"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert seconds < 60 + 10  # a few seconds over: the last checkpoint and curve on loaded cores
    record = json.loads((run / "config.json").read_text())
    budget = record["budget"]
    assert budget["seconds"] == 60 and budget["steps"] == record["steps"] > budget["warmup_steps"]
    assert record["timing"]["validation"] <= 0.2 * 60
    assert f"{record['steps']} steps" in result.output and "time budget 60 s" in result.output
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == record["steps"]  # validated at the end
    assert (run / "training_curve.png").is_file() and load_checkpoint(run).model is not None
    step_lines = [ln for ln in result.output.splitlines() if ln.startswith("step ")]
    assert step_lines and all("samples/s" in ln for ln in step_lines if "ETA" in ln)
    # a step line every 20 s, a heartbeat line after 25 s without one (planning under load)
    news = [ln for ln in result.output.splitlines() if ln.startswith(("step ", "  ... "))]
    assert len(news) >= 2, result.output
    validation = json.loads((run / "validation.json").read_text())
    assert 0.0 <= validation["mean_dice"] <= 1.0


def test_plan_batch_follows_the_training_device(toy_dataset: Path) -> None:
    from medseg.plan.device import TrainingDevice
    from medseg.plan.fingerprint import compute_fingerprint
    from medseg.plan.planner import BATCH_PIXEL_BUDGET, make_plan

    gpu_budget, why = TrainingDevice("cuda").pixel_budget(BATCH_PIXEL_BUDGET)
    assert gpu_budget == BATCH_PIXEL_BUDGET and "GPU" in why
    cpu_budget, why = TrainingDevice("cpu", cores=2).pixel_budget(BATCH_PIXEL_BUDGET)
    assert cpu_budget == 184_000 and "CPU training (2 cores)" in why
    assert cpu_budget // (224 * 256) == 3 and gpu_budget // (224 * 256) == 9  # the patch
    assert TrainingDevice("cpu", cores=64).pixel_budget(BATCH_PIXEL_BUDGET)[0] == gpu_budget
    fingerprint = compute_fingerprint(toy_dataset)
    cpu = make_plan(fingerprint, device=TrainingDevice("cpu", cores=2))
    gpu = make_plan(fingerprint)
    assert cpu.patch_size == gpu.patch_size  # the field of view does not follow the device
    assert any("CPU training (2 cores): 184,000 patch pixels per step" in n for n in cpu.notes)
