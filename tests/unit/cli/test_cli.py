"""The command line: thin commands, one-line errors with exit code 2, honest stubs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.outputs import write_marker

runner = CliRunner()
PIPELINE_STEPS = ["train", "export", "build", "infer", "bench"]
SRC = str(Path(__file__).resolve().parents[3] / "src")


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_lists_every_pipeline_step() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in [*PIPELINE_STEPS, "data", "demo"]:
        assert name in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["data", "check", "--help"],
        ["data", "mni152", "--help"],
        ["demo", "--help"],
        ["infer", "--help"],
        ["build", "--help"],
        ["bench", "--help"],
    ],
)
def test_built_commands_have_help_with_examples(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Examples" in result.output and "medseg" in result.output


@pytest.mark.parametrize("step", PIPELINE_STEPS)
def test_standalone_entry_point_is_the_same_command(step: str) -> None:
    """``medseg-STEP --help`` and ``medseg STEP --help`` show the same options."""
    code = (
        f"import sys; sys.argv = ['medseg-{step}', '--help']; "
        f"from medseg.cli.app import {step}_main; {step}_main()"
    )
    proc = _run_module("-c", code)
    assert proc.returncode == 0, proc.stderr
    via_app = runner.invoke(app, [step, "--help"])
    assert via_app.exit_code == 0
    options = {w for w in via_app.output.split() if w.startswith("--")}
    assert options and options <= set(proc.stdout.split())


def test_standalone_train_is_medseg_train(tmp_path: Path) -> None:
    code = (
        "import sys; sys.argv = ['medseg-train', 'DATA', '--out', 'RUN', '--epochs', '0']; "
        "from medseg.cli.app import train_main; train_main()"
    )
    proc = _run_module("-c", code)
    direct = runner.invoke(app, ["train", "DATA", "--out", "RUN", "--epochs", "0"])
    assert proc.returncode == direct.exit_code == 2
    assert (
        "epochs must be at least 1" in proc.stderr and "epochs must be at least 1" in direct.output
    )
    helps = [_run_module("-m", "medseg", "train", "--help").stdout]
    helps.append(
        _run_module(
            "-c",
            "import sys; sys.argv = ['medseg-train', '--help']; "
            "from medseg.cli.app import train_main; train_main()",
        ).stdout
    )
    assert all("Examples" in h and "--patch" in h for h in helps)


def test_installed_console_scripts_when_installed() -> None:
    exe = shutil.which("medseg-export", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("medseg is not pip-installed in this interpreter's environment")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--fp16" in proc.stdout and "Examples" in proc.stdout
    build = str(Path(exe).with_name("medseg-build"))
    proc = subprocess.run([build, "bundle"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a bundle" in proc.stderr


def test_data_check_accepts_the_mni_dataset(mni_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = runner.invoke(app, ["data", "check", str(mni_dataset), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "CSF" in result.output and "WM" in result.output
    assert out.is_file()


def test_data_check_names_missing_label_files_in_one_line(
    mni_dataset: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "mni-copy"
    shutil.copytree(mni_dataset, copy)
    for f in (copy / "labelsTr").iterdir():
        f.unlink()
    proc = _run_module("-m", "medseg", "data", "check", str(copy))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "MNI152_001.nii.gz" in lines[0] and "label" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = _run_module("-m", "medseg", "data", "check", str(tmp_path / "nope"), "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_data_check_on_missing_folder_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_mni152_refuses_non_empty_dir_then_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "mni"
    out.mkdir()
    (out / "old.txt").write_text("x")
    result = runner.invoke(app, ["data", "mni152", str(out)])
    assert result.exit_code == 2 and "--force would not replace it" in result.output
    assert (out / "old.txt").exists()
    # --force replaces only a dataset medseg wrote (issue 22): not a folder of the user's
    result = runner.invoke(app, ["data", "mni152", str(out), "--force"])
    assert result.exit_code == 2 and "--force replaces only a dataset" in result.output
    assert (out / "old.txt").exists()
    write_marker(out, "dataset", "medseg data mni152")  # as an earlier run leaves it
    preview = tmp_path / "mni.png"
    result = runner.invoke(app, ["data", "mni152", str(out), "--force", "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    assert "replacing the dataset" in result.output
    assert not (out / "old.txt").exists() and (out / "dataset.json").is_file()
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "medseg data check" in result.output  # prints the next command


def test_mni152_missing_parent_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "mni152", str(tmp_path / "a" / "b")])
    assert result.exit_code == 2 and "parent folder" in result.output
    assert list(tmp_path.iterdir()) == []


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "medseg-edge" in result.output


def test_demo_runs_every_built_step(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model_dir = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue"
    # the export step is covered by tests/unit/export; --no-export keeps this test short
    args = ["demo", "--out", str(tmp_path / "demo"), "--model", str(model_dir), "--no-export"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert steps["data check"] == "done" and steps["intensity baseline"] == "done"
    assert summary["intensity_baseline"]["val_metrics"]["mean"]["dice"] > 0.7
    if not (model_dir / "model.pt").is_file():
        pytest.skip(f"no committed demo model at {model_dir}")
    assert steps["trained model"] == "done"
    # the committed model beats the classical intensity baseline on the same slices
    baseline = summary["intensity_baseline"]["val_metrics"]["mean"]["dice"]
    assert summary["model"]["val_mean_dice"] > baseline
    assert (tmp_path / "demo" / "demo_model_worst_slice.png").is_file()


def test_demo_scanner_side_steps_on_the_committed_bundle(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    """The demo's build (skipped here, with the reason) and whole-brain infer steps."""
    pytest.importorskip("onnxruntime")
    from medseg.demo import DemoStep
    from medseg.demo.deploy_steps import build_demo_engines, infer_demo_volume

    bundle = tmp_path / "bundle"  # a copy: with TensorRT here, engines are written into it
    shutil.copytree(demo_bundle, bundle)
    steps: list[DemoStep] = []
    built = build_demo_engines(bundle, steps.append)
    if not built:
        assert (
            steps[-1].status == "skipped" and "engines are built on the target" in steps[-1].detail
        )
    summary = infer_demo_volume(bundle, mni_dataset, tmp_path, steps.append)
    assert steps[-1].name == "infer" and steps[-1].status == "done"
    assert (tmp_path / "mni152_mask.nii.gz").is_file() and (tmp_path / "mni152_mask.png").is_file()
    assert 1000 < summary["volumes_ml"]["GM"] < 1200  # the template's grey matter, ml


def test_demo_bench_is_a_demo_every_bundle_precision_without_the_slow_rows() -> None:
    """The demo's bench: the bundle's three precisions per CPU backend, TensorRT only when
    the demo built engines; no torch reference or BF16 row (each a whole-volume pass)."""
    import importlib.util

    from medseg.demo.deploy_steps import demo_bench_options

    options = demo_bench_options()
    expected = (
        ("onnxruntime", "openvino") if importlib.util.find_spec("openvino") else ("onnxruntime",)
    )
    assert options.backends == expected
    assert options.precisions == ("fp32", "fp16", "int8")
    assert options.batches == (1, 8) and options.iters * options.repeats <= 10
    assert demo_bench_options(tensorrt=True).backends == (*expected, "tensorrt")
