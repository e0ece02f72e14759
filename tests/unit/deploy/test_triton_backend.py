"""``TritonBackend``: ``medseg infer --server URL --model <raw-logits model>`` runs the runtime's
``Segmenter`` here with the network on the server.

The pytriton wheel's ``tritonserver`` has only the Python backend, so it cannot load the
repository's ``onnxruntime_onnx`` models; the server side here is ``tritonclient.http``'s API
with ONNX Runtime behind it, running the repository's own ``model.onnx`` and answering the
metadata and config requests from its ``config.pbtxt``.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.deploy import export_triton
from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner

DEMO_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"
MODEL = "mni152-tissue-attention-fusion-fp32-onnx"
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
runner = CliRunner()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton(DEMO_BUNDLE, out)
    return out


class FakeServer:
    """``tritonclient.http`` and ``tritonclient.utils`` over ONNX Runtime on a repository."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.calls: list[int] = []
        self.max_batch: int | None = None  # override of the config's max_batch_size
        self.parameters: dict[str, str] = {}  # overrides of the config's parameters
        self.classes: int | None = None  # override of the output's class count

    def _config(self, model: str) -> dict[str, Any]:
        """max_batch_size, parameters, and (name, dims) of the input and the output."""
        text = (self.repository / model / "config.pbtxt").read_text()
        batch = re.search(r"max_batch_size: (\d+)", text)
        params = dict(re.findall(r'key: "([^"]+)"\s+value: \{\s+string_value: "([^"]*)"', text))
        tensors = re.findall(r'name: "([^"]+)"\s+data_type: TYPE_FP32\s+dims: \[ ([^\]]+) \]', text)
        assert batch is not None and len(tensors) == 2, text
        io = [(name, [int(d) for d in dims.split(",")]) for name, dims in tensors]
        return {"batch": int(batch.group(1)), "params": params, "io": io}

    def module(self) -> tuple[types.ModuleType, types.ModuleType]:
        server = self

        class InferenceServerException(Exception):
            def status(self) -> str:
                return "400"

            def message(self) -> str:
                return str(self)

        class InferInput:
            def __init__(self, name: str, shape: list[int], dtype: str) -> None:
                assert dtype == "FP32"
                self.name, self.shape = name, shape

            def set_data_from_numpy(self, array: np.ndarray) -> None:
                assert list(array.shape) == self.shape and array.dtype == np.float32
                self.array = array

        class InferRequestedOutput:
            def __init__(self, name: str) -> None:
                self.name = name

        class Result:
            def __init__(self, outputs: dict[str, np.ndarray]) -> None:
                self.outputs = outputs

            def as_numpy(self, name: str) -> np.ndarray | None:
                return self.outputs.get(name)

        class InferenceServerClient:
            def __init__(self, url: str, **timeouts: float) -> None:
                self.url = url
                self.runners: dict[str, OnnxRuntimeRunner] = {}

            def get_model_config(self, model: str) -> dict[str, Any]:
                config = server._config(model)
                params = {**config["params"], **server.parameters}
                return {
                    "max_batch_size": server.max_batch or config["batch"],
                    "parameters": {k: {"string_value": v} for k, v in params.items()},
                }

            def get_model_metadata(self, model: str) -> dict[str, Any]:
                (in_name, in_dims), (out_name, out_dims) = server._config(model)["io"]
                if server.classes is not None:
                    out_dims = [server.classes, *out_dims[1:]]
                return {
                    "inputs": [{"name": in_name, "datatype": "FP32", "shape": [-1, *in_dims]}],
                    "outputs": [{"name": out_name, "datatype": "FP32", "shape": [-1, *out_dims]}],
                }

            def infer(self, model: str, inputs: list[Any], outputs: list[Any]) -> Result:
                limit = server.max_batch or server._config(model)["batch"]
                if len(inputs[0].array) > limit:
                    raise InferenceServerException(f"batch {len(inputs[0].array)} > {limit}")
                path = server.repository / model / "1" / "model.onnx"
                run = self.runners.setdefault(model, OnnxRuntimeRunner(path))
                server.calls.append(len(inputs[0].array))
                found = run.infer({i.name: i.array for i in inputs}, [o.name for o in outputs])
                return Result(found)

            def close(self) -> None:
                pass

        http = types.ModuleType("tritonclient.http")
        http.InferInput = InferInput  # type: ignore[attr-defined]
        http.InferRequestedOutput = InferRequestedOutput  # type: ignore[attr-defined]
        http.InferenceServerClient = InferenceServerClient  # type: ignore[attr-defined]
        utils = types.ModuleType("tritonclient.utils")
        utils.InferenceServerException = InferenceServerException  # type: ignore[attr-defined]
        return http, utils


@pytest.fixture
def server(repository: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer(repository)
    http, utils = fake.module()
    package = types.ModuleType("tritonclient")
    package.http, package.utils = http, utils  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tritonclient", package)
    monkeypatch.setitem(sys.modules, "tritonclient.http", http)
    monkeypatch.setitem(sys.modules, "tritonclient.utils", utils)
    return fake


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    nib = pytest.importorskip("nibabel")
    from medseg.runtime import Segmenter

    volume = np.random.default_rng(1).normal(100.0, 30.0, (197, 233, 3)).astype(np.float32)
    volume[:20] = 0.0  # some background
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), str(path))
    with Segmenter.from_bundle(DEMO_BUNDLE, "onnxruntime", "fp32", threads=1) as segmenter:
        expected = segmenter.segment(volume, affine=AFFINE).labels
    return path, expected


def _infer(repository: Path, scan: Path, out: Path, *extra: str) -> Any:
    args = ["infer", str(repository), str(scan), "--out", str(out)]
    return runner.invoke(app, [*args, "--server", "http://127.0.0.1:8000", *extra])


@pytest.mark.slow
def test_infer_server_with_a_network_model_segments_like_the_runtime(
    repository: Path, server: FakeServer, scan: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    nib = pytest.importorskip("nibabel")
    server.max_batch = 3  # below the segmenter's batch (the manifest's opt, 8): split
    out = tmp_path / "mask.nii.gz"
    result = _infer(repository, scan[0], out, "--model", MODEL)
    assert result.exit_code == 0, result.output
    assert f"network model {MODEL}" in result.output
    assert server.calls and max(server.calls) <= 3
    mask = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(mask.dataobj), scan[1])
    np.testing.assert_array_equal(mask.affine, AFFINE)


def test_the_served_model_is_checked_against_the_manifest(
    repository: Path, server: FakeServer, scan: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    server.parameters = {"medseg_manifest_sha256": "0" * 64}
    result = _infer(repository, scan[0], tmp_path / "a.nii.gz", "--model", MODEL)
    assert result.exit_code == 2 and "was exported from another bundle than" in result.output
    server.parameters, server.classes = {}, 3
    result = _infer(repository, scan[0], tmp_path / "b.nii.gz", "--model", MODEL)
    assert result.exit_code == 2
    assert "the model outputs 3 classes but medseg.json classes lists 4" in result.output
    assert not server.calls and not any(tmp_path.iterdir())
