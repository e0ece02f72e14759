"""``medseg export-triton``: the committed demo bundle as a Triton model repository.

Every ``config.pbtxt`` is parsed back with a small protobuf text-format parser written here
and checked against the manifest. Where ``tritonclient`` is installed, the configs are also
parsed with Triton's own schema (``model_config_pb2.ModelConfig``); it is not in the dev
environment because its ``[grpc]`` extra pins ``protobuf<7``, which the ONNX stack there
is past.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.bundle.engines import EngineSidecar
from medseg.bundle.entries import MANIFEST_NAME, DimRange, file_sha256
from medseg.bundle.manifest import Manifest
from medseg.cli.app import app
from medseg.deploy import ONNX_PLATFORM, PLAN_PLATFORM, export_triton
from medseg.errors import ConfigError, EngineBuildError

DEMO_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"
SLUG = "mni152-tissue-attention-fusion"
runner = CliRunner()

# -- a small parser of protobuf text format (what config.pbtxt is) ----------------------------
_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?)*\s*("(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+)')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or not match.group(1):
            assert not text[pos:].strip(), f"cannot tokenise {text[pos : pos + 40]!r}"
            break
        out.append(match.group(1))
        pos = match.end()
    return out


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return token[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1").decode()
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return token  # an enum name


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """``{field: [values]}``; messages are nested dicts, every field a list (repeated or not)."""
    tokens = _tokens(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        return message("}") if token == "{" else _scalar(token)

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal pos
        fields: dict[str, list[Any]] = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            items = fields.setdefault(name, [])
            if tokens[pos] == "[":
                pos += 1
                while tokens[pos] != "]":
                    items.append(value())
                    if tokens[pos] == ",":
                        pos += 1
                pos += 1
            else:
                items.append(value())
        pos += 1  # the closing brace
        return fields

    return message(None)


def _one(fields: dict[str, list[Any]], name: str) -> Any:
    (value,) = fields[name]
    return value


def _params(config: dict[str, list[Any]]) -> dict[str, str]:
    return {
        _one(p, "key"): _one(_one(p, "value"), "string_value") for p in config.get("parameters", [])
    }


def _dims(spec: Any, channels: int) -> list[int]:
    return [channels, spec.height.min, spec.width.min]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton(DEMO_BUNDLE, out)
    return out


def _copy_bundle(dst: Path) -> Path:
    return Path(shutil.copytree(DEMO_BUNDLE, dst, ignore=shutil.ignore_patterns("engines")))


def _fake_engine(bundle: Path, key: str, precision: str, batch: tuple[int, int, int]) -> Path:
    """A plan file (random bytes) and a valid sidecar, as ``medseg build`` writes them."""
    manifest = Manifest.load(bundle)
    plan = bundle / "engines" / key / f"{precision}.plan"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(np.random.default_rng(0).bytes(4096))
    spec = manifest.input
    EngineSidecar(
        tensorrt_version="10.3.0.30",
        gpu_name="Orin",
        compute_capability="8.7",
        device_key=key,
        precision=precision,
        flags={
            "opt_level": 3,
            "workspace_bytes": None,
            "version_compatible": False,
            "hardware_compat": "none",
            "dla_core": None,
            "timing_cache": None,
            "strongly_typed": True,
        },
        source_onnx=manifest.precisions[precision].file,
        source_onnx_sha256=manifest.precisions[precision].sha256,
        engine_sha256=file_sha256(plan),
        profile={
            "batch": dict(zip(("min", "opt", "max"), batch, strict=True)),
            "height": {"min": spec.height.min, "opt": spec.height.opt, "max": spec.height.max},
            "width": {"min": spec.width.min, "opt": spec.width.opt, "max": spec.width.max},
        },
        build_seconds=1.0,
        created="2026-01-01T00:00:00",
        medseg_version="0.1.0",
    ).save(plan.with_suffix(".json"))
    return plan


# -- the repository ----------------------------------------------------------------------------
def test_demo_bundle_configs_agree_with_the_manifest(repository: Path) -> None:
    manifest = Manifest.load(DEMO_BUNDLE)
    spec = manifest.input
    manifest_sha = file_sha256(DEMO_BUNDLE / MANIFEST_NAME)
    names = sorted(p.name for p in repository.iterdir() if p.is_dir())
    assert f"medseg-{SLUG}-segment" in names  # the end-to-end segmenter (test_segment_model.py)
    names = [n for n in names if not n.endswith("-segment")]
    assert names == sorted(f"{SLUG}-{p}-onnx" for p in manifest.precisions)
    for name in names:
        precision = name.split("-")[-2]
        config = parse_pbtxt((repository / name / "config.pbtxt").read_text())
        assert _one(config, "name") == name
        assert _one(config, "platform") == ONNX_PLATFORM
        assert _one(config, "max_batch_size") == spec.batch.max == 32
        (inp,), (out,) = config["input"], config["output"]
        assert (_one(inp, "name"), _one(inp, "data_type")) == (spec.name, "TYPE_FP32")
        assert inp["dims"] == _dims(spec, spec.channels) == [1, 224, 256]
        assert (_one(out, "name"), _one(out, "data_type")) == (manifest.output_name, "TYPE_FP32")
        assert out["dims"] == _dims(spec, manifest.num_classes) == [4, 224, 256]
        batching = _one(config, "dynamic_batching")
        assert batching["preferred_batch_size"] == [spec.batch.opt]
        assert _one(batching, "max_queue_delay_microseconds") == 100
        group = _one(config, "instance_group")
        assert (_one(group, "kind"), _one(group, "count")) == ("KIND_GPU", 1)
        params = _params(config)
        assert params["medseg_manifest_sha256"] == manifest_sha
        assert params["medseg_precision"] == precision
        recipe = json.loads(params["medseg_preprocessing"])
        assert recipe == manifest.preprocessing.to_dict()
        model = repository / name / "1" / "model.onnx"
        assert file_sha256(model) == params["medseg_model_sha256"]
        assert file_sha256(model) == manifest.precisions[precision].sha256
        assert file_sha256(repository / name / "1" / MANIFEST_NAME) == manifest_sha
    readme = (repository / "README.md").read_text()
    assert "preprocessing contract" in readme and "tritonserver --model-repository" in readme
    assert "0.5-99.5 percentiles" in readme


def _model_config_pb2() -> Any:
    """Triton's ModelConfig schema from an installed tritonclient, or None.

    The file is loaded by path: ``tritonclient.grpc/__init__`` would import grpcio.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    if module_spec is None or module_spec.loader is None or not path.is_file():
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _parse_with_schema(path: Path) -> Any:
    pb2 = _model_config_pb2()
    if pb2 is None:
        pytest.skip("tritonclient is not installed: Triton's ModelConfig schema is not here")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def test_configs_parse_with_tritons_own_schema(repository: Path, tmp_path: Path) -> None:
    for path in repository.glob("*-onnx/config.pbtxt"):
        config = _parse_with_schema(path)
        assert config.name == path.parent.name
        assert list(config.input[0].dims) == [1, 224, 256]
        assert config.parameters["medseg_precision"].string_value in ("fp32", "fp16", "int8")
    bundle = _copy_bundle(tmp_path / "bundle")
    _fake_engine(bundle, "orin-sm87", "int8", (1, 8, 32))
    (plan,) = [m for m in export_triton(bundle, tmp_path / "repo") if m.platform == PLAN_PLATFORM]
    config = _parse_with_schema(plan.path / "config.pbtxt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 32)
    assert config.parameters["medseg_tensorrt_version"].string_value == "10.3.0.30"
    segment = _parse_with_schema(repository / f"medseg-{SLUG}-segment" / "config.pbtxt")
    assert (segment.backend, segment.max_batch_size) == ("python", 0)
    assert [(i.name, list(i.dims), i.optional) for i in segment.input] == [
        ("volume", [-1, -1, -1, -1], True),
        ("affine", [4, 4], True),
        ("nifti", [-1], True),
    ]
    assert [(o.name, list(o.dims)) for o in segment.output] == [("labels", [-1, -1, -1])]
    assert segment.parameters["medseg_max_voxels"].string_value == str(64 * 2**20)


def test_a_built_engine_becomes_a_tensorrt_plan_model(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path / "bundle")
    plan = _fake_engine(bundle, "orin-sm87", "fp16", (1, 4, 16))
    models = export_triton(bundle, tmp_path / "repo")
    (trt,) = [m for m in models if m.platform == PLAN_PLATFORM]
    assert trt.name == f"{SLUG}-fp16-trt-orin-sm87"
    assert (trt.device_key, trt.tensorrt_version, trt.max_batch_size) == (
        "orin-sm87",
        "10.3.0.30",
        16,
    )
    assert (trt.path / "1" / "model.plan").read_bytes() == plan.read_bytes()
    config = parse_pbtxt((trt.path / "config.pbtxt").read_text())
    assert _one(config, "platform") == "tensorrt_plan"
    assert _one(config, "max_batch_size") == 16
    assert _one(config, "dynamic_batching")["preferred_batch_size"] == [4]
    params = _params(config)
    assert params["medseg_tensorrt_version"] == "10.3.0.30"
    assert params["medseg_gpu"] == "Orin (sm87)"
    assert "runs only on Orin (sm87) with TensorRT 10.3.0.30" in params["medseg_engine_note"]
    # the ONNX models stay at the bundle's own range
    assert [m.max_batch_size for m in models if m.platform == ONNX_PLATFORM] == [32, 32, 32]
    with pytest.raises(ConfigError, match=r"orin-sm87/fp16\.plan.*choose 1 to 16"):
        export_triton(bundle, tmp_path / "repo2", max_batch=24)


def test_dynamic_height_and_width_become_minus_one(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path / "bundle")
    manifest = Manifest.load(bundle)
    spec = dataclasses.replace(
        manifest.input, height=DimRange(16, 224, 896), width=DimRange(16, 256, 1024)
    )
    # a dynamic input is a whole-slice (pad) bundle's; a window recipe needs a static patch
    pad = dataclasses.replace(
        manifest.preprocessing,
        size_policy="pad",
        patch_size=None,
        target_spacing=None,
        mirror_axes=(),
    )
    dataclasses.replace(manifest, input=spec, preprocessing=pad).save(bundle)
    (model, *_) = export_triton(bundle, tmp_path / "repo", max_queue_delay_us=0)
    config = parse_pbtxt((model.path / "config.pbtxt").read_text())
    assert _one(config, "input")["dims"] == [1, -1, -1]
    assert _one(config, "output")["dims"] == [4, -1, -1]
    assert _one(_one(config, "dynamic_batching"), "max_queue_delay_microseconds") == 0
    with pytest.raises(ConfigError, match="max-queue-delay-us must be >= 0"):
        export_triton(bundle, tmp_path / "repo2", max_queue_delay_us=-1)


def test_a_tampered_or_orphan_engine_is_refused(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path / "bundle")
    plan = _fake_engine(bundle, "orin-sm87", "int8", (1, 8, 32))
    plan.write_bytes(b"truncated")
    with pytest.raises(EngineBuildError, match=r"int8\.plan does not match the sha256"):
        export_triton(bundle, tmp_path / "repo")
    plan.with_suffix(".json").unlink()
    with pytest.raises(EngineBuildError, match=r"int8\.plan has no sidecar int8\.json"):
        export_triton(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


# -- the command line --------------------------------------------------------------------------
def test_cli_writes_the_repository_and_prints_what_to_run(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = runner.invoke(
        app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out), "--max-batch", "16"]
    )
    assert result.exit_code == 0, result.output
    for precision in ("fp32", "fp16", "int8"):
        assert f"{SLUG}-{precision}-onnx" in result.output
    assert "tritonserver --model-repository" in result.output
    assert "scan.nii.gz --out mask.nii.gz --server http://localhost:8000 --model" in result.output
    assert not (out / "client_example.py").exists()  # medseg infer --server replaces it
    config = parse_pbtxt((out / f"{SLUG}-fp32-onnx" / "config.pbtxt").read_text())
    assert _one(config, "max_batch_size") == 16


def test_cli_max_batch_out_of_range_names_the_range(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = runner.invoke(
        app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out), "--max-batch", "33"]
    )
    assert result.exit_code == 2
    assert "--max-batch 33" in result.output and "choose 1 to 32" in result.output
    assert not out.exists()


def test_cli_refuses_a_non_empty_out_without_force(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out)])
    assert result.exit_code == 2
    assert "--force would not replace it" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # --force replaces only a repository medseg wrote (issue 22), not the user's folder
    forced = runner.invoke(app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out), "--force"])
    assert forced.exit_code == 2 and "--force replaces only a Triton model repository" in (
        forced.output
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert runner.invoke(app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out)]).exit_code == 0
    (out / "keep.txt").write_text("mine")
    forced = runner.invoke(app, ["export-triton", str(DEMO_BUNDLE), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "keep.txt").exists() and (out / "README.md").is_file()


def test_cli_tampered_onnx_names_the_file(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path / "bundle")
    data = bytearray((bundle / "model.fp16.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.fp16.onnx").write_bytes(bytes(data))
    out = tmp_path / "repo"
    result = runner.invoke(app, ["export-triton", str(bundle), "--out", str(out)])
    assert result.exit_code == 2
    assert "model.fp16.onnx does not match the sha256" in " ".join(result.output.split())
    assert not out.exists()
