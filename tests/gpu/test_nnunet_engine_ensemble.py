"""An nnU-Net fold ensemble running one engine per fold on this GPU, against ONNX Runtime.

``medseg build`` writes ``fold_<k>/engines/<key>/<precision>.plan`` for every fold; the runtime
opens one engine backend per fold and averages the folds' logits as on CPU. Marked ``gpu``;
skipped with the reason where neither TensorRT (with a GPU) nor TensorRT-RTX (with an
RTX-class GPU) can run here. The per-fold builds themselves are tested without a GPU in
tests/unit/runtime/test_nnunet_deploy.py.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.build import BuildOptions, build_engines
from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.runtime import Segmenter, cuda, load_scan
from medseg.runtime.engines_rtx import ACCEPTED_CAPABILITIES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "runtime"))
from nnunet_bundle import plans_recipe, write_nnunet_bundle


def _runtimes() -> dict[str, str | None]:
    """runtime -> why it cannot run here (``None``: it can)."""
    if not cuda.gpu_available():
        return {"tensorrt": "no NVIDIA GPU", "tensorrt-rtx": "no NVIDIA GPU"}
    major, minor = cuda.gpu_info().compute_capability
    rtx = (
        "TensorRT-RTX is not installed (medseg-edge[rtx])"
        if importlib.util.find_spec("tensorrt_rtx") is None
        else None
        if f"{major}.{minor}" in ACCEPTED_CAPABILITIES
        else f"TensorRT-RTX does not target this GPU (sm{major}{minor})"
    )
    trt = None if importlib.util.find_spec("tensorrt") is not None else "TensorRT not installed"
    return {"tensorrt": trt, "tensorrt-rtx": rtx}


REASONS = _runtimes()
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("runtime", ["tensorrt", "tensorrt-rtx"])
@pytest.mark.parametrize("config", ["3d_fullres", "2d"])
def test_fold_engines_give_the_onnxruntime_ensemble(
    tmp_path: Path, runtime: str, config: str
) -> None:
    if REASONS[runtime] is not None:
        pytest.skip(REASONS[runtime])
    labels = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
    bundle = write_nnunet_bundle(tmp_path / "bundle", plans_recipe(config, labels), fp16=True)
    cohort = write_mni152_cohort(tmp_path / "cohort", cases=1, seed=2)
    scan = load_scan(sorted((Path(cohort) / "imagesTr").glob("*_0000.nii.gz"))[:1])
    options = BuildOptions(runtime=runtime)
    if runtime == "tensorrt-rtx":
        major, minor = cuda.gpu_info().compute_capability
        options = BuildOptions(runtime=runtime, compute_capabilities=(f"{major}.{minor}",))
    built = build_engines(bundle, options)
    assert sorted({e.fold for e in built}) == ["0", "1"]
    for precision, floor in (("fp32", 0.999), ("fp16", 0.99)):
        with Segmenter.from_bundle(bundle, "onnxruntime", precision) as cpu:
            ref = cpu.segment(scan.image, affine=scan.affine).labels
        with Segmenter.from_bundle(bundle, runtime, precision) as gpu:
            assert {b.name for b in gpu.runners()} == {runtime} and len(gpu.backends) == 2
            got = gpu.segment(scan.image, affine=scan.affine)
        assert (got.labels == ref).mean() >= floor
        assert list(got.timing.fold_inference_s) == ["0", "1"]  # type: ignore[attr-defined]
    shutil.rmtree(bundle / "fold_1" / "engines")
    with pytest.raises(Exception, match="fold 1: "):
        Segmenter.from_bundle(bundle, runtime)
    assert np.isfinite(got.timing.total_s)
