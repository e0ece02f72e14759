"""The TensorRT support that runs without TensorRT or a GPU: device keys, sizes, build options,
engine sidecars, the engine checks (on real files), ``medseg build`` refusing cleanly here,
and a scan of the sources for TensorRT APIs that 10.x deprecated and 11.x removed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.build import BuildOptions, parse_size
from medseg.bundle.engines import EngineSidecar, engine_path, sidecar_path
from medseg.bundle.entries import ONNX_FILES, SCHEMA_VERSION, file_sha256
from medseg.bundle.manifest import Manifest
from medseg.cli.app import app
from medseg.errors import ConfigError, EngineBuildError, MissingDependencyError
from medseg.runtime.cuda import GpuInfo, device_key, gpu_available
from medseg.runtime.engines import check_engine, find_engine, tensorrt_module
from medseg.transforms.preprocessing import Recipe

SRC = Path(__file__).resolve().parents[3] / "src"
HAS_TRT = any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_lean"))
no_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed on this machine")
runner = CliRunner()

H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, "12.6", "12.6")
ORIN = GpuInfo("Orin", (8, 7), 32 << 30, "12.6", "12.6", integrated=True)
A6000 = GpuInfo("NVIDIA RTX A6000", (8, 6), 48 << 30, "12.6", "12.6")
T4 = GpuInfo("Tesla T4", (7, 5), 16 << 30, "12.6", "12.6")
TRT = "10.3.0.30"


# -- a hand-written bundle: real manifest and files, stand-in ONNX bytes ----------------------
def _write_bundle(root: Path, precisions: tuple[str, ...] = ("fp32", "fp16")) -> Manifest:
    root.mkdir(parents=True)
    entries = {}
    for precision in precisions:
        onnx = root / ONNX_FILES[precision]
        onnx.write_bytes(f"stand-in {precision} model".encode())
        entries[precision] = {
            "file": onnx.name,
            "sha256": file_sha256(onnx),
            "size_bytes": onnx.stat().st_size,
            "parity": {},
            "accuracy": {},
            "details": {},
        }
    ranges = {"batch": (1, 4, 8), "height": (32, 32, 32), "width": (48, 48, 48)}
    manifest = Manifest.from_dict(
        {
            "schema_version": SCHEMA_VERSION,
            "model": {"arch": "attention-fusion"},
            "classes": {"background": 0, "disc": 1, "ring": 2},
            "input": {
                "name": "image",
                "channels": 1,
                **{k: dict(zip(("min", "opt", "max"), v, strict=True)) for k, v in ranges.items()},
                "layout": "NCHW",
                "dtype": "float32",
            },
            "output_name": "logits",
            "preprocessing": Recipe(modality="MR", slice_axis=2, size_policy="pad").to_dict(),
            "precisions": entries,
            "calibration": None,
            "source": {},
            "tool_versions": {},
            "created": "2025-01-01T00:00:00+00:00",
        }
    )
    manifest.save(root)
    return manifest


def _sidecar(manifest: Manifest, precision: str, gpu: GpuInfo, **changes: object) -> EngineSidecar:
    flags = BuildOptions().flags()
    flags.update(changes.pop("flags", {}))
    fields = {
        "tensorrt_version": TRT,
        "gpu_name": gpu.name,
        "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        "device_key": device_key(gpu),
        "precision": precision,
        "flags": flags,
        "source_onnx": ONNX_FILES[precision],
        "source_onnx_sha256": manifest.precisions[precision].sha256,
        "engine_sha256": "",
        "profile": {"batch": {"min": 1, "opt": 4, "max": 8}},
        "build_seconds": 12.5,
        "created": "2025-01-01T00:00:00+00:00",
        "medseg_version": "0.1.0",
    }
    fields.update(changes)
    return EngineSidecar(**fields)


def _write_engine(
    bundle: Path, manifest: Manifest, precision: str, gpu: GpuInfo, **changes: object
) -> Path:
    """A stand-in plan file (bytes) and a sidecar saying it was built on ``gpu``."""
    plan = engine_path(bundle, device_key(gpu), precision)
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(b"stand-in serialized engine " + precision.encode())
    changes.setdefault("engine_sha256", file_sha256(plan))
    _sidecar(manifest, precision, gpu, **changes).save(sidecar_path(plan))
    return plan


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "bundle"
    return root, _write_bundle(root)


def _refusal(bundle: Path, manifest: Manifest, gpu: GpuInfo, trt: str = TRT) -> str:
    with pytest.raises(EngineBuildError) as info:
        check_engine(bundle, manifest, "fp16", gpu, trt)
    message = str(info.value)
    assert "\n" not in message and f"medseg build {bundle} --precision fp16" in message
    return message


# -- device keys, sizes, options -------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cc", "key"),
    [
        ("NVIDIA H100 80GB HBM3", (9, 0), "nvidia-h100-80gb-hbm3-sm90"),
        ("Orin", (8, 7), "orin-sm87"),
        ("NVIDIA GeForce RTX 4090", (8, 9), "nvidia-geforce-rtx-4090-sm89"),
        ("  Tesla T4 ", (7, 5), "tesla-t4-sm75"),
        ("NVIDIA RTX A6000 (ES) -- rev.2", (8, 6), "nvidia-rtx-a6000-es-rev-2-sm86"),
        ("NVIDIA Thor", (11, 0), "nvidia-thor-sm110"),
    ],
)
def test_device_key(name: str, cc: tuple[int, int], key: str) -> None:
    assert device_key(GpuInfo(name, cc, 1, "12.6", "12.6")) == key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 << 30),
        ("512MiB", 512 << 20),
        ("1G", 1 << 30),
        ("1073741824", 1 << 30),
        ("1.5 GiB", 3 << 29),
        ("2GB", 2 * 10**9),
        ("64k", 64 << 10),
        ("100B", 100),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "4XB", "-1G", "GiB", "1e9", "four gigs"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="KiB") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"precisions": ("fp8",)}, "'fp8'"),
        ({"precisions": ()}, "'all' or a comma list"),
        ({"precisions": ("fp16", "fp16")}, "without repeats"),
        ({"precisions": ("all", "int8")}, "cannot be combined"),
        ({"opt_level": 6}, "--opt-level 6 must be an integer from 0 to 5"),
        ({"opt_level": -1}, "--opt-level -1"),
        ({"hardware_compat": "turing"}, "'turing' must be one of none, ampere+"),
        ({"dla_core": -1}, "--dla-core -1 must be >= 0"),
        ({"dla_core": 0, "hardware_compat": "ampere+"}, "exclude each other"),
        ({"workspace_bytes": 0}, "--workspace 0"),
    ],
)
def test_build_options_refuse_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        BuildOptions(**kwargs)
    assert fragment in str(info.value)


def test_build_options_resolve_precisions(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    assert BuildOptions().resolve(manifest, root) == ["fp32", "fp16"]
    assert BuildOptions(precisions=("fp16", "fp32")).resolve(manifest, root) == ["fp32", "fp16"]
    with pytest.raises(ConfigError, match="has no int8 model"):
        BuildOptions(precisions=("int8",)).resolve(manifest, root)
    flags = BuildOptions(timing_cache=Path("/tmp/x.cache"), version_compatible=True).flags()
    assert flags["timing_cache"] == "/tmp/x.cache" and flags["strongly_typed"] is True


# -- sidecars --------------------------------------------------------------------------------
def test_sidecar_round_trip(bundle: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, manifest = bundle
    sidecar = _sidecar(manifest, "fp16", ORIN, engine_sha256="ab" * 32)
    path = sidecar.save(tmp_path / "fp16.json")
    assert EngineSidecar.load(path) == sidecar
    assert json.loads(path.read_text())["schema_version"] == 2
    assert sidecar.capability == (8, 7)


def test_sidecar_schema_1_still_reads(bundle: tuple[Path, Manifest], tmp_path: Path) -> None:
    """Sidecars written before the network report (schema 1) load as standard TensorRT ones."""
    sidecar = _sidecar(bundle[1], "fp16", ORIN, engine_sha256="ab" * 32)
    data = sidecar.to_dict()
    for key in ("runtime", "compute_capabilities", "network"):
        data.pop(key)
    path = tmp_path / "fp16.json"
    path.write_text(json.dumps({**data, "schema_version": 1}))
    assert EngineSidecar.load(path) == sidecar


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.pop("engine_sha256"), "missing key engine_sha256"),
        (
            lambda d: d.update(build_seconds="fast"),
            "build_seconds must be a number",
        ),
        (lambda d: d.update(compute_capability="sm87"), "compute_capability 'sm87'"),
        (lambda d: d["flags"].pop("version_compatible"), "flags lack 'version_compatible'"),
        (lambda d: d["flags"].update(hardware_compat="any"), "hardware_compat 'any'"),
        (lambda d: d.update(schema_version=7), "schema_version 7"),
    ],
)
def test_sidecar_bad_key_is_named(
    bundle: tuple[Path, Manifest], tmp_path: Path, edit: object, fragment: str
) -> None:
    data = _sidecar(bundle[1], "fp16", ORIN).to_dict()
    edit(data)  # type: ignore[operator]
    path = tmp_path / "fp16.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        EngineSidecar.load(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_sidecar_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "fp16.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read engine sidecar"):
        EngineSidecar.load(path)


# -- check_engine on real files --------------------------------------------------------------
def test_engine_built_here_is_accepted(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN)
    assert check_engine(root, manifest, "fp16", ORIN, TRT) == plan
    assert check_engine(root, manifest, "fp16", ORIN, "10.3.0") == plan  # no build number


def test_missing_engine_says_how_to_build_it(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    message = _refusal(root, manifest, ORIN)
    assert "no fp16 TensorRT engine for this GPU (Orin, sm87)" in message
    with pytest.raises(ConfigError, match="has no int8 model"):
        check_engine(root, manifest, "int8", ORIN, TRT)


def test_engine_of_another_gpu_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", H100)
    message = _refusal(root, manifest, ORIN)
    assert str(plan) in message
    assert "built for NVIDIA H100 80GB HBM3 (sm90); this machine has Orin (sm87)" in message


def test_same_model_name_other_capability_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN, compute_capability="7.2")
    assert "built for Orin (sm72)" in _refusal(root, manifest, ORIN)
    assert plan.is_file()


def test_other_tensorrt_version_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    _write_engine(root, manifest, "fp16", ORIN, flags={"opt_level": 5})
    message = _refusal(root, manifest, ORIN, trt="10.4.0.26")
    assert "built with TensorRT 10.3.0.30; this machine has TensorRT 10.4.0.26" in message
    assert message.endswith("`medseg build " + str(root) + " --precision fp16 --opt-level 5`")


def test_version_compatible_engine_runs_on_later_tensorrt_only(
    bundle: tuple[Path, Manifest],
) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN, flags={"version_compatible": True})
    assert check_engine(root, manifest, "fp16", ORIN, "10.7.0.23") == plan
    assert check_engine(root, manifest, "fp16", ORIN, "11.0.0.114") == plan
    message = _refusal(root, manifest, ORIN, trt="10.1.0.27")
    assert "version-compatible with TensorRT 10.3.0.30" in message
    assert "--version-compatible" in message


def test_version_compatible_engine_runs_on_the_next_major_at_most(
    bundle: tuple[Path, Manifest],
) -> None:
    root, manifest = bundle
    _write_engine(root, manifest, "fp16", ORIN, flags={"version_compatible": True})
    assert "the next major (11.x)" in _refusal(root, manifest, ORIN, trt="12.0.0.1")


def test_lean_runtime_runs_version_compatible_engines_only(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN)
    with pytest.raises(EngineBuildError, match="lean runtime") as info:
        check_engine(root, manifest, "fp16", ORIN, TRT, lean=True)
    assert "--version-compatible" in str(info.value)
    _write_engine(root, manifest, "fp16", ORIN, flags={"version_compatible": True})
    assert check_engine(root, manifest, "fp16", ORIN, TRT, lean=True) == plan


def test_hardware_compatible_engine_is_refused_on_jetson(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    _write_engine(root, manifest, "fp16", ORIN, flags={"hardware_compat": "ampere+"})
    assert "does not support on Jetson" in _refusal(root, manifest, ORIN)


def test_stale_engine_after_reexport_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    _write_engine(root, manifest, "fp16", ORIN, source_onnx_sha256="0" * 64)
    message = _refusal(root, manifest, ORIN)
    assert "is stale" in message and "model.fp16.onnx" in message and "re-exported" in message


def test_tampered_or_truncated_engine_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN)
    plan.write_bytes(plan.read_bytes()[:10])
    assert "truncated or tampered" in _refusal(root, manifest, ORIN)


def test_engine_without_or_with_broken_sidecar_is_refused(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN)
    side = sidecar_path(plan)
    side.write_text("{}")
    assert "missing key schema_version" in _refusal(root, manifest, ORIN)
    side.unlink()
    assert "has no sidecar fp16.json" in _refusal(root, manifest, ORIN)


def test_hardware_compatible_engine_runs_on_other_ampere_gpus(
    bundle: tuple[Path, Manifest],
) -> None:
    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", H100, flags={"hardware_compat": "ampere+"})
    assert check_engine(root, manifest, "fp16", A6000, TRT) == plan
    assert "Ampere or newer GPUs (sm >= 80); this machine has Tesla T4 (sm75)" in _refusal(
        root, manifest, T4
    )


def test_own_engine_is_preferred_and_its_error_reported_first(
    bundle: tuple[Path, Manifest],
) -> None:
    root, manifest = bundle
    _write_engine(root, manifest, "fp16", H100, flags={"hardware_compat": "ampere+"})
    own = _write_engine(root, manifest, "fp16", A6000)
    assert check_engine(root, manifest, "fp16", A6000, TRT) == own
    own.write_bytes(b"corrupt")
    other = engine_path(root, device_key(H100), "fp16")
    assert check_engine(root, manifest, "fp16", A6000, TRT) == other  # portable one still fits


def test_find_engine_never_raises_without_gpu_or_tensorrt(bundle: tuple[Path, Manifest]) -> None:
    root, manifest = bundle
    assert find_engine(root, manifest, "fp16") is None  # no engines at all
    _write_engine(root, manifest, "fp16", ORIN)
    if gpu_available() and HAS_TRT:
        pytest.skip("this machine has a GPU and TensorRT: auto-selection depends on its GPU")
    assert find_engine(root, manifest, "fp16") is None
    assert find_engine(root / "missing", manifest, "fp16") is None


def test_gpu_available_is_a_plain_bool() -> None:
    assert isinstance(gpu_available(), bool)


@no_trt
def test_tensorrt_module_says_how_to_get_it() -> None:
    with pytest.raises(MissingDependencyError) as info:
        tensorrt_module()
    message = str(info.value)
    assert message.startswith("TensorRT is not installed")
    assert "JetPack" in message and "pip install 'medseg-edge[trt]'" in message


@no_trt
def test_backend_load_without_tensorrt_is_one_clear_error(bundle: tuple[Path, Manifest]) -> None:
    from medseg.runtime.backends.tensorrt import TensorRTBackend

    root, manifest = bundle
    plan = _write_engine(root, manifest, "fp16", ORIN)
    backend = TensorRTBackend(plan, manifest.input, manifest.output_name, manifest.num_classes)
    assert backend.describe() == f"tensorrt ({plan})"
    with pytest.raises(MissingDependencyError, match="TensorRT is not installed"):
        backend.load()
    assert not backend.is_loaded


def test_tensorrt_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, medseg.build, medseg.runtime.backends.tensorrt, medseg.runtime.engines, "
        "medseg.runtime.cuda, medseg.cli.build\n"
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & {"tensorrt", "tensorrt_lean", "cuda", "torch", "onnx", "onnxruntime"}


# -- medseg build ----------------------------------------------------------------------------
def _build(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["build", *map(str, args)])
    return result.exit_code, result.output


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@no_trt
def test_build_without_tensorrt_exits_2_and_writes_nothing(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    cache = tmp_path / "trt.cache"
    before = _listing(bundle)
    code, output = _build(bundle, "--precision", "fp16,int8", "--timing-cache", cache)
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed"), output
    assert "JetPack ships TensorRT" in output and "pip install 'medseg-edge" in output
    assert _listing(bundle) == before and not (bundle / "engines").exists()
    assert not cache.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--opt-level", "9"], "--opt-level 9 must be an integer from 0 to 5"),
        (["--hardware-compat", "turing"], "--hardware-compat 'turing'"),
        (["--workspace", "4XB"], "--workspace '4XB': unknown unit 'XB'"),
        (["--precision", "fp8"], "--precision 'fp8'"),
        (["--precision", "int8"], "has no int8 model"),
        (["--dla-core", "-1"], "--dla-core -1 must be >= 0"),
    ],
)
def test_build_bad_options_exit_2(
    bundle: tuple[Path, Manifest], args: list[str], fragment: str
) -> None:
    root, _ = bundle
    code, output = _build(root, *args)
    assert code == 2, output
    assert fragment in " ".join(output.split()), output
    assert not (root / "engines").exists()


def test_build_of_a_folder_that_is_no_bundle_exits_2(tmp_path: Path) -> None:
    code, output = _build(tmp_path)
    assert code == 2 and "is not a bundle" in output


# -- no deprecated or removed TensorRT API anywhere in the sources ----------------------------
DEPRECATED = (
    "execute_async_v2",
    "get_binding_index",
    "binding_is_input",
    "IInt8Calibrator",
    "IInt8EntropyCalibrator",
    "BuilderFlag.FP16",
    "BuilderFlag.INT8",
    "max_workspace_size",
    "STRICT_TYPES",
)


def test_sources_use_no_deprecated_tensorrt_api() -> None:
    pattern = re.compile("|".join(re.escape(name) for name in DEPRECATED))
    this = Path(__file__).resolve()
    hits = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.resolve() != this
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "deprecated TensorRT API in src/medseg:\n" + "\n".join(hits)
