"""``medseg bench`` end to end on the tiny bundle and the toy dataset (real ONNX Runtime,
real torch reference), plus its bad inputs and the gate exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.bench.results import BenchResults
from medseg.cli.app import app

pytest.importorskip("onnxruntime")
runner = CliRunner()
FAST = ["--warmup", "1", "--iters", "3", "--repeats", "2", "--threads", "1"]


def _bench(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def report(tiny_bundle: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "report"
    code, output = _bench(
        tiny_bundle,
        "--data",
        toy_data,
        "--backends",
        "onnxruntime,torch",
        "--batch",
        "1,4",
        "--report",
        out,
        "--min-dice",
        "0.1",
        *FAST,
    )
    assert code == 0, output
    assert "onnxruntime fp32 b1: Dice" in output and "machine:" in output
    return out


def test_report_files_and_rows(report: Path) -> None:
    for name in ("results.json", "report.md", "junit.xml", "accuracy_vs_latency.png"):
        assert (report / name).is_file(), name
    assert (report / "accuracy_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = BenchResults.load(report / "results.json")
    assert results.machine["cpu"] and results.machine["libraries"]["onnxruntime"]
    for precision in ("fp32", "fp16", "int8"):
        for batch in (1, 4):
            row = results.row("onnxruntime", precision, batch)
            assert row is not None and row.status == "ok", (precision, batch)
            assert row.accuracy is not None and row.latency is not None
            assert 0.0 < row.accuracy.dice_mean <= 1.0
            assert row.latency.n == 6 and len(row.repeat_p50_ms) == 2
            assert row.latency.p50_ms <= row.latency.p95_ms <= row.latency.p99_ms
            assert row.slices_per_s == pytest.approx(1e3 * batch / row.latency.p50_ms)
            assert row.file_size_bytes and row.peak_host_mb and row.threads == 1
    fp32, int8 = results.row("onnxruntime", "fp32", 4), results.row("onnxruntime", "int8", 4)
    assert fp32 is not None and fp32.accuracy is not None and fp32.accuracy.dice_drop_pts is None
    assert int8 is not None and int8.accuracy is not None
    assert int8.accuracy.dice_drop_pts == pytest.approx(
        100 * (fp32.accuracy.dice_mean - int8.accuracy.dice_mean)
    )
    assert fp32.volume_s is not None  # end-to-end time is measured at the largest batch
    torch_row = results.row("torch", "fp32", 1)
    assert torch_row is not None and torch_row.status == "ok"
    assert torch_row.accuracy is not None  # same checkpoint as the FP32 ONNX: same Dice
    assert torch_row.accuracy.dice_mean == pytest.approx(fp32.accuracy.dice_mean, abs=1e-3)
    worst = int8.accuracy.worst_slice
    assert worst is not None and (report / worst["png"]).is_file()
    suite = ET.parse(report / "junit.xml").getroot()
    cases = suite.iter("testcase")
    assert {c.get("name") for c in cases} >= {"min_dice[onnxruntime.int8.b1]"}
    assert (
        "| onnxruntime |" in (report / "report.md").read_text()
        or "onnxruntime" in (report / "report.md").read_text()
    )


def test_the_recorded_validation_dice_is_reproduced(report: Path, tiny_bundle: Path) -> None:
    """--split val scores the bundle's recorded validation slices through the runtime."""
    manifest = json.loads((tiny_bundle / "medseg.json").read_text())
    results = BenchResults.load(report / "results.json")
    for precision, entry in manifest["precisions"].items():
        row = results.row("onnxruntime", precision, 4)
        assert row is not None and row.accuracy is not None
        # int8 on a CPU backend runs the CPU INT8 file when the bundle has one
        recorded = entry["details"].get("cpu_file", {}).get("accuracy") or entry["accuracy"]
        assert row.accuracy.dice_mean == pytest.approx(recorded["dice_mean"], abs=1e-4)


def test_impossible_gate_exits_1_naming_it(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    code, output = _bench(
        tiny_bundle,
        "--data",
        toy_data,
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32,int8",
        "--batch",
        "1",
        "--max-dice-drop",
        "int8=-1",
        "--report",
        tmp_path / "r",
        *FAST,
    )
    assert code == 1, output
    assert "dice_drop[onnxruntime.int8.b1]" in output and "gate(s) failed" in output
    suite = ET.parse(tmp_path / "r" / "junit.xml").getroot()
    assert suite.get("failures") == "1"


def test_baseline_round_trip_and_another_bundles_baseline(
    tiny_bundle: Path, toy_data: Path, report: Path, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline.json"
    args = [
        "--data",
        toy_data,
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32",
        "--batch",
        "1",
        *FAST,
    ]
    code, output = _bench(tiny_bundle, *args, "--baseline", baseline, "--update-baseline")
    assert code == 0, output
    assert BenchResults.load(baseline).rows
    code, output = _bench(
        tiny_bundle,
        *args,
        "--baseline",
        baseline,
        "--max-latency-regression",
        "1000",
        "--max-dice-regression",
        "0",
    )
    assert code == 0, output
    assert "baseline_dice[onnxruntime.fp32.b1]" in output
    other = json.loads(baseline.read_text())
    other["bundle"]["fingerprint"] = "0123456789abcdef"
    baseline.write_text(json.dumps(other))
    code, output = _bench(
        tiny_bundle, *args, "--baseline", baseline, "--max-latency-regression", "10"
    )
    assert code == 0, output
    assert "another bundle" in output


def test_bad_inputs_exit_2(tiny_bundle: Path, toy_data: Path, tmp_path: Path) -> None:
    fp32_only = tmp_path / "fp32only"
    shutil.copytree(tiny_bundle, fp32_only)
    manifest = json.loads((fp32_only / "medseg.json").read_text())
    del manifest["precisions"]["fp16"]
    (fp32_only / "medseg.json").write_text(json.dumps(manifest))
    code, output = _bench(fp32_only, "--data", toy_data, "--precisions", "fp16", *FAST)
    assert code == 2 and "no fp16 model" in output, output

    other_labels = tmp_path / "toy2"
    shutil.copytree(toy_data, other_labels)
    spec = json.loads((other_labels / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "disc": 1, "tumour": 2}
    (other_labels / "dataset.json").write_text(json.dumps(spec))
    code, output = _bench(tiny_bundle, "--data", other_labels, *FAST)
    assert code == 2 and "tumour" in output and "classes" in output, output

    gates = tmp_path / "gates.toml"
    gates.write_text("[accuracy]\nmax_dice_dorp_pts = { int8 = 1.0 }\n")
    code, output = _bench(tiny_bundle, "--data", toy_data, "--gate", gates, *FAST)
    assert code == 2 and "max_dice_dorp_pts" in output, output

    code, output = _bench(tiny_bundle, "--data", toy_data, "--batch", "64", *FAST)
    assert code == 2 and "batch range" in output, output
    code, output = _bench(tiny_bundle, "--data", toy_data, "--backends", "gpu", *FAST)
    assert code == 2 and "--backends" in output, output
    code, output = _bench(tiny_bundle, "--data", toy_data, "--update-baseline", *FAST)
    assert code == 2 and "--baseline" in output, output


def test_bad_runs_leave_no_report_and_name_the_problem(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    code, output = _bench(tiny_bundle, "--data", toy_data, "--split", "test", "--report", report)
    assert code == 2 and "no labelled test cases" in output, output
    assert not report.exists()
    code, output = _bench(tiny_bundle, "--data", toy_data, "--report", tmp_path / "no" / "r")
    assert code == 2 and "does not exist" in output, output
    code, output = _bench(tiny_bundle, "--data", toy_data, "--max-cases", "0", *FAST)
    assert code == 2 and "--max-cases 0" in output, output
    folder = tmp_path / "folder.json"
    folder.mkdir()
    code, output = _bench(
        tiny_bundle, "--data", toy_data, "--baseline", folder, "--update-baseline", *FAST
    )
    assert code == 2 and "is a folder" in output, output
    code, output = _bench(tiny_bundle, "--data", toy_data, "--backends", "tensorrt", *FAST)
    assert code == 2 and "nothing was measured" in output and "TensorRT" in output, output


def test_validation_slices_outside_the_dataset_are_an_input_error(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    """A dataset with the bundle's case ids but fewer slices is not the validation dataset.

    The committed demo bundle records validation slices (a slice-level split; the planned
    tiny bundle records whole validation cases instead).
    """
    import numpy as np

    from medseg.data.nifti import load_nifti, save_nifti

    cropped = tmp_path / "mni"
    shutil.copytree(mni_dataset, cropped)
    for sub in ("imagesTr", "labelsTr"):
        for path in (cropped / sub).glob("*.nii.gz"):
            image = load_nifti(path)
            save_nifti(path, np.asarray(image.data)[..., :3], image.affine)
    code, output = _bench(demo_bundle, "--data", cropped, "--backends", "onnxruntime", *FAST)
    assert code == 2 and "outside this case's 3 slices" in output, output


def test_float_label_files_are_read_as_classes(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    import numpy as np

    from medseg.data.nifti import load_nifti, save_nifti

    floats = tmp_path / "toy"
    shutil.copytree(toy_data, floats)
    for path in (floats / "labelsTr").glob("*.nii.gz"):
        label = load_nifti(path)
        save_nifti(path, np.asarray(label.data).astype(np.float32), label.affine)
    code, output = _bench(
        tiny_bundle,
        "--data",
        floats,
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32",
        "--batch",
        "1",
        "--report",
        tmp_path / "r",
        *FAST,
    )
    assert code == 0, output
    row = BenchResults.load(tmp_path / "r" / "results.json").row("onnxruntime", "fp32", 1)
    assert row is not None and row.status == "ok"


def test_test_and_all_splits_score_whole_volumes(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "toy"
    shutil.copytree(toy_data, data)
    (data / "imagesTs").mkdir()
    (data / "labelsTs").mkdir()
    shutil.copy(data / "imagesTr" / "toy_001_0000.nii.gz", data / "imagesTs" / "t_000_0000.nii.gz")
    shutil.copy(data / "labelsTr" / "toy_001.nii.gz", data / "labelsTs" / "t_000.nii.gz")
    args = ["--backends", "onnxruntime", "--precisions", "fp32", "--batch", "4", *FAST]
    for split, cases in (("test", ["t_000"]), ("all", [f"toy_{i:03d}" for i in range(4)])):
        out = tmp_path / split
        code, output = _bench(tiny_bundle, "--data", data, "--split", split, "--report", out, *args)
        assert code == 0, output
        results = BenchResults.load(out / "results.json")
        assert results.dataset["cases"] == cases
        row = results.row("onnxruntime", "fp32", 4)
        assert row is not None and row.accuracy is not None and row.accuracy.hd95_mm is not None


def test_every_asked_row_is_printed_with_why_it_cannot_run(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    """The issue-14 command: every (backend, precision) asked for is a row; one that cannot
    run (ONNX Runtime bf16, PyTorch INT8) is printed as skipped, saying why."""
    pytest.importorskip("openvino")
    from medseg.runtime.cpu import cpu_features

    code, output = _bench(
        tiny_bundle,
        "--data",
        toy_data,
        "--backends",
        "onnxruntime,openvino,torch",
        "--precisions",
        "fp32,bf16,int8",
        "--batch",
        "1",
        "--report",
        tmp_path / "r",
        *FAST,
    )
    assert code == 0, output
    results = BenchResults.load(tmp_path / "r" / "results.json")
    native_bf16 = cpu_features().bf16 is not None
    for backend in ("onnxruntime", "openvino", "torch"):
        for precision in ("fp32", "bf16", "int8"):
            row = results.row(backend, precision, 1)
            assert row is not None, (backend, precision)
            assert f"{backend} {precision} b1:" in output, (backend, precision)
            runs = {
                ("onnxruntime", "bf16"): False,
                ("torch", "int8"): False,
                ("openvino", "bf16"): native_bf16,
                ("torch", "bf16"): native_bf16,
            }.get((backend, precision), True)
            assert row.status == ("ok" if runs else "skipped"), (backend, precision, row.reason)
    ort_bf16 = results.row("onnxruntime", "bf16", 1)
    torch_int8 = results.row("torch", "int8", 1)
    assert ort_bf16 is not None and "OpenVINO only" in ort_bf16.reason
    assert torch_int8 is not None and "no INT8" in torch_int8.reason
    torch_bf16 = results.row("torch", "bf16", 1)
    if native_bf16:  # CPU autocast: close to FP32, its drop measured against torch FP32
        assert torch_bf16 is not None and torch_bf16.accuracy is not None
        assert torch_bf16.accuracy.dice_drop_pts is not None
        assert abs(torch_bf16.accuracy.dice_drop_pts) < 5.0
