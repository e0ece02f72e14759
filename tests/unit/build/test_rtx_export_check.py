"""``medseg-export ... --check-tensorrt``: TensorRT-RTX builds every exported ONNX file (in
memory, no GPU) before the bundle is written; a refused node fails with the node named."""

from __future__ import annotations

from pathlib import Path

import pytest
from rtx_testutils import bundle_with, conv_graph
from typer.testing import CliRunner

from medseg.build import check_onnx_builds
from medseg.bundle.manifest import Manifest
from medseg.cli.app import app
from medseg.errors import EngineBuildError

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")
pytest.importorskip("torch")

runner = CliRunner()


@pytest.mark.slow
def test_export_with_check_tensorrt_builds_every_precision(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    args = ["export", str(toy_runs["unet"]), "--out", str(out), "--fp16", "--batch", "1:4:8"]
    result = runner.invoke(app, [*args, "--data", str(toy_data), "--check-tensorrt"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "TensorRT-RTX builds model.onnx" in text and "TensorRT-RTX builds model.fp16.onnx" in text
    )
    assert "conv (fp16 " in text
    assert (out / "medseg.json").is_file() and not (out / "engines").exists()  # nothing kept


def test_check_onnx_builds_names_the_refused_node(
    arch_bundles: dict[str, Path], tmp_path: Path
) -> None:
    bad = conv_graph(tmp_path / "bad.onnx", False, False, bad_op="Det")
    bundle = bundle_with(arch_bundles["unet"], tmp_path / "b", "fp16", bad)
    lines: list[str] = []
    with pytest.raises(EngineBuildError, match=r"node 'refused_Det' \(Det\)"):
        check_onnx_builds(bundle, Manifest.load(bundle), lambda event: lines.append(event.message))
    assert any("builds model.onnx" in line for line in lines)  # fp32 passed before fp16 failed
