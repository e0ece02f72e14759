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
from medseg.errors import ConfigError
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
    manifest["postprocess"] = None  # its rules name GM and WM, refused first otherwise
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
    deadline = time.monotonic() + 600  # imports and checks first: slow on 2 loaded cores
    try:
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "export never created its temporary folder"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the export's work, not only at its start
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output
    assert "terminated" in output
    assert list(tmp_path.iterdir()) == []


# -- 4. late checks: options and inputs are checked before work, named as typed ---------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--int8", "--calib-slices", "0"], "--calib-slices 0 must be >= 1"),
        (["--batch", "0:0:0"], "--batch 0:0:0 must be MIN:OPT:MAX"),
        (["--batch", "8:1:4"], "--batch 8:1:4 must be MIN:OPT:MAX"),
        (["--data", "no-such-folder"], "--data no-such-folder: no such dataset folder"),
    ],
)
def test_export_options_are_checked_before_any_work(
    args: list[str], expected: str, mni_dataset: Path, tmp_path: Path
) -> None:
    started = time.perf_counter()
    checkpoint = REPO / "models" / "mni152-tissue"
    calib = ["--calib-data", str(mni_dataset)] if "--int8" in args else []
    code, output = _run("export", checkpoint, "--out", tmp_path / "b", *args, *calib)
    assert code == 2, output
    assert expected in _one_error_line(output)
    assert time.perf_counter() - started < 20
    assert list(tmp_path.iterdir()) == []


# -- 5. unclear messages ----------------------------------------------------------------------
def test_a_file_that_is_not_a_checkpoint_gets_one_line_without_pytorch_advice(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint\n")
    code, output = _run("export", bad, "--out", tmp_path / "b")
    assert code == 2, output
    line = _one_error_line(output)
    assert str(bad) in line and "not a readable checkpoint" in line
    assert "weights_only" not in output and "arbitrary code" not in output


def _patch_nifti_header(path: Path, offset: int, payload: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(payload)] = payload
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("offset", "payload", "expected"),
    [
        (70, (999).to_bytes(2, "little"), "data code 999"),  # datatype
        (80, b"\x00\x00\x00\x00", "pixdim"),  # pixdim[1] = 0.0
    ],
)
def test_nibabel_log_lines_do_not_leak_before_the_error(
    offset: int,
    payload: bytes,
    expected: str,
    demo_bundle: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "scan.nii"
    save_nifti(path, np.zeros((8, 8, 8), dtype=np.float32), np.eye(4))
    _patch_nifti_header(path, offset, payload)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    out = str(tmp_path / "m.nii.gz")
    proc = subprocess.run(
        [sys.executable, "-m", "medseg", "infer", str(demo_bundle), str(path), "--out", out],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert str(path) in lines[0] and expected in lines[0]


def _cut_dicom(tmp_path: Path, where: str) -> Path:
    from pydicom.data import get_testdata_file

    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    pixel_tag = raw.find(b"\xe0\x7f\x10\x00")
    end = pixel_tag - 200 if where == "header" else pixel_tag + 3000
    folder = tmp_path / f"cut-{where}"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(raw[:end])
    return folder


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("header", "truncated: it has the header of a 128x128 image"),
        ("pixels", "truncated inside its pixel data: 2988 of the 32768 bytes"),
    ],
)
def test_truncated_dicom_files_are_called_truncated(
    where: str, expected: str, demo_bundle: Path, tmp_path: Path
) -> None:
    folder = _cut_dicom(tmp_path, where)
    code, output = _run("infer", demo_bundle, folder, "--out", tmp_path / "m.nii.gz")
    assert code == 2, output
    line = _one_error_line(output)
    assert expected in line and "structured report" not in line and "plugin" not in line


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("preprocessing", "percentiles", [99.5, 0.5], "preprocessing: percentiles"),
        ("input", "height", {"min": 0, "opt": -3, "max": 0}, "input.height: shape range 0:-3:0"),
    ],
)
def test_manifest_errors_name_the_file_and_key(
    section: str, key: str, value: object, expected: str, demo_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    manifest = json.loads((bundle / "medseg.json").read_text())
    manifest[section][key] = value
    (bundle / "medseg.json").write_text(json.dumps(manifest))
    code, output = _run("bench", bundle, "--data", tmp_path)
    assert code == 2, output
    line = _one_error_line(output)
    assert str(bundle / "medseg.json") in line and expected in line


def test_the_p95_flag_example_is_the_form_it_takes(demo_bundle: Path, tmp_path: Path) -> None:
    code, output = _run("bench", demo_bundle, "--data", tmp_path, "--max-p95-ms", "900")
    assert code == 2, output
    line = _one_error_line(output)
    assert "BACKEND.PRECISION" in line and "--max-p95-ms onnxruntime.fp32=900" in line


def test_writing_a_dicom_seg_raises_no_warning(tmp_path: Path) -> None:
    """A real MR file (PatientPosition HFS) gives a SEG without any UserWarning."""
    import warnings

    from pydicom.data import get_testdata_file

    from medseg.runtime.io.dicom import read_dicom_series
    from medseg.runtime.io.dicom_seg import write_dicom_seg

    series = read_dicom_series(get_testdata_file("MR_small.dcm"))
    labels = np.zeros(series.data.shape, dtype=np.uint8)
    labels[10:20, 10:20] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_dicom_seg(tmp_path / "seg.dcm", labels, series, {"background": 0, "lesion": 1})


def test_a_single_component_patient_name_gives_no_warning_and_is_kept(tmp_path: Path) -> None:
    """Scanners and anonymisers write names like ``ANONYMOUS`` (no ``^``): highdicom warned on
    each such SEG; the SEG now carries the source's name unchanged and no warning."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    from medseg.runtime.io.dicom import read_dicom_series
    from medseg.runtime.io.dicom_seg import write_dicom_seg

    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    source.PatientName = "ANONYMOUS"
    source.save_as(tmp_path / "mr.dcm")
    series = read_dicom_series(tmp_path / "mr.dcm")
    labels = np.zeros(series.data.shape, dtype=np.uint8)
    labels[10:20, 10:20] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_dicom_seg(tmp_path / "seg.dcm", labels, series, {"background": 0, "lesion": 1})
    assert str(pydicom.dcmread(tmp_path / "seg.dcm").PatientName) == "ANONYMOUS"
    assert str(series.datasets[0].PatientName) == "ANONYMOUS"  # the source is left as read


# -- 6. --backend auto says which engine it refused and why ---------------------------------
def test_auto_backend_says_which_engine_was_refused(
    demo_bundle: Path, scan: Path, tmp_path: Path
) -> None:
    from medseg.bundle import Manifest
    from medseg.runtime.cuda import gpu_available
    from medseg.runtime.engines import select_engine

    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    manifest = Manifest.load(bundle)
    assert select_engine(bundle, manifest, "fp32").refused is None  # no engine: nothing to say
    plan = bundle / "engines" / "sm86-rtx-a6000" / "fp32.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"not an engine")
    choice = select_engine(bundle, manifest, "fp32")
    assert choice.plan is None and choice.refused is not None
    assert "engines/sm86-rtx-a6000/fp32.plan" in choice.refused
    if not gpu_available():
        assert "no GPU" in choice.refused
    image = load_nifti(scan)  # 8 axial slices of the brain: seconds, not the 189 slices
    small = tmp_path / "small.nii.gz"
    save_nifti(small, np.asarray(image.data)[..., 90:98], image.affine)
    out = tmp_path / "mask.nii.gz"
    code, output = _run("infer", bundle, small, "--out", out, "--threads", "1")
    assert code == 0, output
    warned = [line for line in output.splitlines() if line.startswith("warning:")]
    # the CPU backend auto picks next: OpenVINO where installed (the bundle records its accuracy)
    try:
        import openvino  # noqa: F401

        fallback = "running OpenVINO instead"
    except ImportError:
        fallback = "running ONNX Runtime instead"
    assert len(warned) == 1 and "fp32.plan" in warned[0] and fallback in warned[0], warned
    assert out.is_file()


# -- structure: library returns results, the CLI renders ------------------------------------
def test_bench_cli_and_demo_share_one_pipeline_function() -> None:
    src = REPO / "src" / "medseg"
    for module in ("cli/bench.py", "demo/deploy_steps.py"):
        text = (src / module).read_text()
        assert "bench_pipeline(" in text, module
        for step in ("run_bench(", "evaluate_gates(", "write_report(", "update_baseline("):
            assert step not in text, f"{module} calls {step} itself"


def test_library_code_holds_no_rich_markup() -> None:
    import re

    src = REPO / "src" / "medseg"
    markup = re.compile(r"\[/\]|\[(?:bold|green|yellow|red)\b")
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.parts[-2] != "cli" and markup.search(p.read_text())
    ]
    assert offenders == []


def test_backends_take_a_session_or_a_callable_making_one(demo_bundle: Path) -> None:
    """Polygraphy-style loaders: a path, a loader callable, or the session itself."""
    from medseg.bundle import Manifest
    from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend, SessionFromOnnx
    from medseg.runtime.backends.tensorrt import EngineFromPath, TensorRTBackend

    manifest = Manifest.load(demo_bundle)
    path = manifest.onnx_path(demo_bundle, "fp32")
    args = (manifest.input, manifest.output_name, manifest.num_classes)
    loader = SessionFromOnnx(path, threads=1)
    batch = np.zeros((1, 1, manifest.input.height.min, manifest.input.width.min), np.float32)
    outputs = []
    for source in (path, loader, loader()):
        kwargs = {"threads": 1} if isinstance(source, Path) else {}
        with OnnxRuntimeBackend(source, *args, **kwargs) as backend:
            outputs.append(backend.infer(batch))
            assert backend.threads == 1 and "CPU" in backend.describe()
    for other in outputs[1:]:
        np.testing.assert_array_equal(outputs[0], other)
    # the manifest check runs on injected sessions too
    with pytest.raises(ConfigError, match=r"outputs 4 classes but medseg\.json classes lists 3"):
        OnnxRuntimeBackend(loader, manifest.input, manifest.output_name, 3).load()
    with pytest.raises(ConfigError, match="providers and threads"):
        OnnxRuntimeBackend(loader, *args, threads=1)
    engine = TensorRTBackend(EngineFromPath(Path("x.plan")), *args)
    assert engine.engine_path == Path("x.plan")
    assert TensorRTBackend(lambda: None, *args).engine_path is None
