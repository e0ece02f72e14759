"""Real TensorRT-RTX engines built on this CPU-only machine from tiny bundles of every
registered architecture: plans, sidecars, network reports, and the refusal rules that apply
before a plan runs (other TensorRT-RTX version, other GPU, files that disagree)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rtx_testutils import bundle_with, conv_graph

from medseg.build import BuildOptions, BuiltEngine, build_engines
from medseg.bundle.engines import EngineSidecar, sidecar_path
from medseg.bundle.entries import PRECISIONS
from medseg.bundle.manifest import Manifest
from medseg.errors import EngineBuildError
from medseg.events import Event
from medseg.runtime.cuda import GpuInfo
from medseg.runtime.engines import check_engine, find_engine
from medseg.runtime.engines_rtx import check_rtx_engine, find_rtx_engine

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.slow  # a tiny-bundle export per architecture, then real builds

RTX_4090 = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), 24 << 30, "12.8", "12.8")
RTX_2080 = GpuInfo("NVIDIA GeForce RTX 2080 Ti", (7, 5), 11 << 30, "12.8", "12.8")
H200 = GpuInfo("NVIDIA H200", (9, 0), 141 << 30, "12.8", "12.8")
KEY = "rtx-sm86-sm89-sm120"

#: (bundle copy, its manifest, precision -> built engine), per architecture
Built = tuple[Path, Manifest, dict[str, BuiltEngine]]


@pytest.fixture(scope="module")
def built(arch_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every architecture's bundle (copied) with its three TensorRT-RTX plans, default targets."""
    out = {}
    for arch, source in arch_bundles.items():
        bundle = Path(shutil.copytree(source, tmp_path_factory.mktemp("rtx") / arch))
        events: list[Event] = []
        engines = build_engines(bundle, BuildOptions(runtime="tensorrt-rtx"), events.append)
        lines = [e.message for e in events]
        out[arch] = (bundle, Manifest.load(bundle), {e.precision: e for e in engines}, lines)
    return out


def _onnx_convs(path: Path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_every_architecture_builds_three_plans_with_sidecars(built: dict) -> None:
    for arch, (bundle, manifest, engines, lines) in built.items():
        assert sorted(engines) == sorted(PRECISIONS), arch
        assert lines[0].startswith(f"TensorRT-RTX {trt.__version__} (ahead-of-time")
        for precision, engine in engines.items():
            assert engine.path == bundle / "engines" / KEY / f"{precision}.plan"
            assert engine.size_bytes == engine.path.stat().st_size > 10_000
            side = EngineSidecar.load(sidecar_path(engine.path))
            assert side == engine.sidecar
            assert side.runtime == "tensorrt-rtx" and side.tensorrt_version == trt.__version__
            assert side.compute_capabilities == ("8.6", "8.9", "12.0")
            assert side.device_key == KEY and side.gpu_name == ""
            assert side.source_onnx_sha256 == manifest.precisions[precision].sha256
            assert 0 < side.build_seconds < 120
            assert side.flags["strongly_typed"] and side.flags["timing_cache"] is None
            spec = manifest.input
            assert side.profile["batch"] == {"min": 1, "opt": 4, "max": 8}
            assert side.profile["height"]["max"] == spec.height.max
            assert any(f"network {precision}: " in line for line in lines)


def test_network_report_matches_the_onnx_files(built: dict) -> None:
    for arch, (bundle, manifest, engines, _) in built.items():
        for precision, engine in engines.items():
            net = engine.network
            assert net is not None
            convs = _onnx_convs(bundle / manifest.precisions[precision].file)
            assert net.num_convolutions == net.layer_types["CONVOLUTION"] == convs, arch
            assert net.layer_count == sum(net.layer_types.values())
            if precision == "fp32":
                assert net.convolutions["fp32"] == convs and net.fp32_convolutions == ()
            if precision == "fp16":
                assert net.convolutions["fp16"] > 0 and "CAST" in net.layer_types
            if precision == "int8":
                assert net.convolutions["int8"] > 0, arch
                assert net.layer_types["QUANTIZE"] > 0 and net.layer_types["DEQUANTIZE"] > 0
                kept = set(manifest.precisions["int8"].details["kept_in_higher_precision"])
                assert kept <= set(net.fp32_convolutions) | {n for n in kept if "Conv" not in n}
            assert net.partial_qdq == () and net.warnings == (), (arch, net.warnings)
        fp32, fp16 = engines["fp32"].network, engines["fp16"].network
        assert fp32 is not None and fp16 is not None
        assert manifest.output_name in fp32.fp32_tensors  # every activation of an FP32 file
        assert len(fp16.fp32_tensors) < len(fp32.fp32_tensors), arch  # AutoCast's FP32 rest


def test_compute_capability_list_picks_folder_and_targets(
    arch_bundles: dict[str, Path], tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(arch_bundles["unet"], tmp_path / "b"))
    options = BuildOptions(
        precisions=("fp16",), runtime="tensorrt-rtx", compute_capabilities=("12.0", "7.5")
    )
    (engine,) = build_engines(bundle, options)
    assert engine.path == bundle / "engines" / "rtx-sm75-sm120" / "fp16.plan"
    assert engine.sidecar.compute_capabilities == ("7.5", "12.0")


def test_plans_run_only_on_listed_gpus_and_same_version(built: dict) -> None:
    bundle, manifest, engines, _ = built["attention-fusion"]
    plan = engines["int8"].path
    assert check_rtx_engine(bundle, manifest, "int8", RTX_4090, trt.__version__) == plan
    with pytest.raises(EngineBuildError) as info:
        check_rtx_engine(bundle, manifest, "int8", RTX_4090, "1.6.0.50")
    message = str(info.value)
    assert (
        f"built with TensorRT-RTX {trt.__version__}; this machine has TensorRT-RTX 1.6" in message
    )
    rebuild = f"medseg build {bundle} --precision int8 --runtime tensorrt-rtx"
    assert f"`{rebuild} --compute-capability 86,89,120`" in message
    with pytest.raises(EngineBuildError, match="--compute-capability 75,86,89,120`"):
        check_rtx_engine(bundle, manifest, "int8", RTX_2080, trt.__version__)
    with pytest.raises(EngineBuildError, match="TensorRT-RTX does not target this GPU"):
        check_rtx_engine(bundle, manifest, "int8", H200, trt.__version__)


def test_plan_from_another_tensorrt_rtx_version_is_refused(built: dict, tmp_path: Path) -> None:
    """A plan whose sidecar says TensorRT-RTX 1.6 (the plan itself untouched) is refused."""
    bundle, manifest, _, _ = built["attention-fusion"]
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    side = copy / "engines" / KEY / "fp16.json"
    data = json.loads(side.read_text())
    side.write_text(json.dumps({**data, "tensorrt_version": "1.6.0.50"}))
    with pytest.raises(EngineBuildError, match=r"TensorRT-RTX 1\.6\.0\.50; this machine"):
        check_rtx_engine(copy, manifest, "fp16", RTX_4090, trt.__version__)
    plan = copy / "engines" / KEY / "fp32.plan"
    plan.write_bytes(plan.read_bytes()[:-10])
    with pytest.raises(EngineBuildError, match=r"not match the sha256.*--runtime tensorrt-rtx"):
        check_rtx_engine(copy, manifest, "fp32", RTX_4090, trt.__version__)


def test_standard_tensorrt_never_takes_rtx_plans(built: dict) -> None:
    bundle, manifest, _, _ = built["attention-fusion"]
    with pytest.raises(EngineBuildError, match="has no fp32 TensorRT engine"):
        check_engine(bundle, manifest, "fp32", RTX_4090, "10.3.0.30")
    assert find_engine(bundle, manifest, "fp32") is None
    assert find_rtx_engine(bundle, manifest, "fp32") is None  # no GPU here


def test_unparseable_node_fails_the_build_naming_it(
    arch_bundles: dict[str, Path], tmp_path: Path
) -> None:
    bad = conv_graph(tmp_path / "bad.onnx", False, False, bad_op="Det")
    bundle = bundle_with(arch_bundles["unet"], tmp_path / "b", "fp32", bad)
    with pytest.raises(EngineBuildError) as info:
        build_engines(bundle, BuildOptions(runtime="tensorrt-rtx"))
    assert "node 'refused_Det' (Det)" in str(info.value)
    assert not (bundle / "engines").exists() or not any((bundle / "engines").rglob("*.plan"))
