"""The defect families of the fuzz pass of issue 11, each replayed on real files.

Every bad input must exit 2 with one line naming the file, key or option, before heavy work,
and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.nifti import load_nifti, save_nifti
from medseg.options import available_cpus

pytest.importorskip("onnxruntime")
runner = CliRunner()
REPO = Path(__file__).resolve().parents[3]


def _run(*args: str | Path) -> tuple[int, str]:
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = runner.invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    return errors[0]


@pytest.fixture
def scan(mni_dataset: Path) -> Path:
    return mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz"


# -- 1. hangs: thread counts are capped --------------------------------------------------------
@pytest.mark.parametrize("command", ["infer", "bench"])
def test_threads_beyond_the_machine_are_refused_at_once(
    command: str, demo_bundle: Path, mni_dataset: Path, scan: Path, tmp_path: Path
) -> None:
    args: list[str | Path] = (
        ["infer", demo_bundle, scan, "--out", tmp_path / "m.nii.gz"]
        if command == "infer"
        else ["bench", demo_bundle, "--data", mni_dataset]
    )
    started = time.perf_counter()
    code, output = _run(*args, "--threads", "999")
    assert code == 2, output
    line = _one_error_line(output)
    assert "--threads 999" in line and f"1..{available_cpus()}" in line
    assert time.perf_counter() - started < 30
    assert not any(tmp_path.iterdir())


# -- 2. exit 0 on bad input ------------------------------------------------------------------
def test_a_manifest_listing_fewer_classes_than_the_model_outputs_is_refused(
    demo_bundle: Path, scan: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    manifest = json.loads((bundle / "medseg.json").read_text())
    manifest["classes"] = {"background": 0, "CSF": 1}
    (bundle / "medseg.json").write_text(json.dumps(manifest))
    out = tmp_path / "mask.nii.gz"
    code, output = _run("infer", bundle, scan, "--out", out, "--backend", "onnxruntime")
    assert code == 2, output
    line = _one_error_line(output)
    assert "model.onnx" in line and "outputs 4 classes" in line and "classes lists 2" in line
    assert not out.exists()


def _dataset_copy(mni_dataset: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(mni_dataset, data)
    return data


def test_bench_runs_the_dataset_check_first_label_value(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    data = _dataset_copy(mni_dataset, tmp_path)
    label_path = data / "labelsTr" / "MNI152_001.nii.gz"
    label = load_nifti(label_path)
    values = np.asarray(label.data).copy()
    values[0, 0, 0] = 7
    save_nifti(label_path, values, label.affine)
    report = tmp_path / "report"
    started = time.perf_counter()
    code, output = _run("bench", demo_bundle, "--data", data, "--report", report)
    assert code == 2, output
    line = _one_error_line(output)
    assert "labelsTr/MNI152_001.nii.gz has 7" in line and "not in dataset.json" in line
    assert time.perf_counter() - started < 30  # before any variant runs
    assert not report.exists()


def test_bench_runs_the_dataset_check_first_label_shape(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    data = _dataset_copy(mni_dataset, tmp_path)
    label_path = data / "labelsTr" / "MNI152_001.nii.gz"
    label = load_nifti(label_path)
    save_nifti(label_path, np.asarray(label.data)[:-1], label.affine)
    started = time.perf_counter()
    code, output = _run("bench", demo_bundle, "--data", data)
    assert code == 2, output
    assert "labelsTr/MNI152_001.nii.gz" in _one_error_line(output)
    assert time.perf_counter() - started < 30


def test_an_output_that_is_the_input_is_refused_even_with_force(
    demo_bundle: Path, scan: Path, tmp_path: Path
) -> None:
    image = tmp_path / "scan.nii.gz"
    shutil.copyfile(scan, image)
    before = image.read_bytes()
    code, output = _run("infer", demo_bundle, image, "--out", image, "--force")
    assert code == 2, output
    line = _one_error_line(output)
    assert "--out" in line and "is the input" in line
    assert image.read_bytes() == before
    # the same file through another spelling of its path
    code, output = _run(
        "infer", demo_bundle, image, "--out", tmp_path / "." / "scan.nii.gz", "--force"
    )
    assert code == 2 and "is the input" in output
    assert image.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


# -- 3. partial output: SIGTERM cleans up like SIGINT ---------------------------------------
def test_sigterm_during_export_leaves_nothing_behind(mni_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "medseg", "export", str(REPO / "models" / "mni152-tissue")]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--data", str(mni_dataset)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "export never created its temporary folder"
        time.sleep(0.2)
    time.sleep(1.0)  # inside the export's work, not only at its start
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    assert "terminated" in output
    assert list(tmp_path.iterdir()) == []
