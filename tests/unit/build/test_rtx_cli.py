"""``medseg build --runtime tensorrt-rtx`` end to end on the committed demo bundle (a real
build, no GPU), its bad-input errors, the ``tensorrt-rtx`` backend without a GPU, the bench's
network section, and the import boundary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.bench.networks import engine_networks, network_lines
from medseg.bundle.manifest import Manifest
from medseg.cli.app import app
from medseg.errors import BackendError, ConfigError
from medseg.runtime.backends import create_backend
from medseg.runtime.engines_rtx import parse_capabilities

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")

runner = CliRunner()
SRC = Path(__file__).resolve().parents[3] / "src"
KEY = "rtx-sm86-sm89-sm120"


@pytest.fixture(scope="module")
def demo_built(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the committed demo bundle after ``medseg build --runtime tensorrt-rtx``."""
    bundle = Path(shutil.copytree(demo_bundle, tmp_path_factory.mktemp("demo") / "bundle"))
    shutil.rmtree(bundle / "engines", ignore_errors=True)  # from a local make trt-compile
    result = runner.invoke(
        app, ["build", str(bundle), "--runtime", "tensorrt-rtx", "--precision", "all"]
    )
    assert result.exit_code == 0, result.output
    return bundle, result.output


@pytest.mark.slow
def test_demo_bundle_builds_three_plans_and_prints_the_network_report(
    demo_built: tuple[Path, str],
) -> None:
    bundle, output = demo_built
    text = " ".join(output.split())
    for precision in ("fp32", "fp16", "int8"):
        assert (bundle / "engines" / KEY / f"{precision}.plan").is_file()
        side = json.loads((bundle / "engines" / KEY / f"{precision}.json").read_text())
        assert side["network"]["layer_count"] > 300
        assert f"network {precision}: {side['network']['layer_count']} layers" in text
    assert "int8: 1511 layers; 88 conv (int8 79, fp32 9)" in text  # the committed bundle
    assert "3 engine(s)" in text and "--backend tensorrt-rtx" in text


@pytest.mark.slow
def test_bench_networks_section_lists_every_plan(demo_built: tuple[Path, str]) -> None:
    bundle, _ = demo_built
    networks = engine_networks(bundle)
    assert list(networks) == [f"{KEY}/fp32", f"{KEY}/fp16", f"{KEY}/int8"]
    assert networks[f"{KEY}/int8"]["convolutions"] == {"int8": 79, "fp16": 0, "fp32": 9}
    lines = network_lines(networks)
    assert lines[0] == "## Engine networks (TensorRT parser)"
    assert any(line.startswith(f"| {KEY}/int8 | tensorrt-rtx 1.7") for line in lines)
    assert network_lines({}) == []


@pytest.mark.slow
def test_rtx_backend_without_gpu_is_one_clear_error(demo_built: tuple[Path, str]) -> None:
    bundle, _ = demo_built
    manifest = Manifest.load(bundle)
    with pytest.raises(BackendError, match="no NVIDIA GPU visible"):
        create_backend(bundle, manifest, "tensorrt-rtx", "int8")
    with pytest.raises(ConfigError, match="the backend here is TensorRT-RTX"):
        create_backend(bundle, manifest, "tensorrt-rtx", "int8", threads=2)
    # auto falls back to a CPU backend (OpenVINO where the bundle records its accuracy)
    assert create_backend(bundle, manifest, "auto", "int8").name in ("onnxruntime", "openvino")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--compute-capability", "86,90"], "'90' is not a compute capability TensorRT-RTX"),
        (["--compute-capability", "86,90"], "accepted: 75, 80, 86, 89, 120, 121"),
        (["--compute-capability", "86,8.6"], "repeats a capability"),
        (["--dla-core", "0"], "--dla-core: option(s) of the standard TensorRT runtime"),
        (["--version-compatible"], "--version-compatible: option(s) of the standard TensorRT"),
        (["--hardware-compat", "ampere+"], "--hardware-compat: option(s) of the standard"),
        (["--timing-cache", "x.cache"], "--timing-cache: option(s) of the standard"),
    ],
)
def test_rtx_bad_options_exit_2_before_any_work(
    demo_bundle: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "b", ignore=_no_engines))
    result = runner.invoke(app, ["build", str(bundle), "--runtime", "tensorrt-rtx", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) <= 3 and lines[0].startswith("error: "), result.output  # one wrapped line
    assert fragment in " ".join(result.output.split()), result.output
    assert not (bundle / "engines").exists()


def _no_engines(folder: str, names: list[str]) -> list[str]:
    return ["engines"] if "engines" in names else []


def test_compute_capability_without_rtx_and_unknown_runtime_exit_2(
    demo_bundle: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "b", ignore=_no_engines))
    result = runner.invoke(app, ["build", str(bundle), "--compute-capability", "86"])
    assert result.exit_code == 2 and "is a TensorRT-RTX option" in result.output
    result = runner.invoke(app, ["build", str(bundle), "--runtime", "tensorrt-llm"])
    assert result.exit_code == 2 and "--runtime 'tensorrt-llm' must be one of" in result.output
    assert not (bundle / "engines").exists()


def test_parse_capabilities_spellings() -> None:
    assert parse_capabilities("120,86,sm89") == ("8.6", "8.9", "12.0")
    assert parse_capabilities("7.5") == ("7.5",)
    with pytest.raises(ConfigError, match=r"'\(empty\)' is not"):
        parse_capabilities("86,")


def test_rtx_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, medseg.build, medseg.runtime.backends.tensorrt_rtx, "
        "medseg.runtime.engines_rtx, medseg.bundle.network_report, medseg.bench.networks\n"
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & {"tensorrt_rtx", "tensorrt", "cuda", "torch", "onnx", "onnxruntime"}
