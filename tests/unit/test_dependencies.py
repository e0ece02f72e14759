"""The dependency boundary: the light parts never import the heavy stacks.

Like Polygraphy's tests/mod/test_dependencies.py: run in a fresh interpreter, import,
and look at sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = ("torch", "onnx", "onnxruntime", "modelopt", "monai", "tensorrt")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    "code",
    [
        "import medseg",
        "import medseg.data",
        "import medseg.transforms.nnunet_preprocess, medseg.transforms.resample",
        "import medseg.plan.planner, medseg.plan.cases, medseg.metrics.slices",
        "import medseg.metrics",
        "import medseg.cli.app",
        "import medseg.runtime",
        "import medseg.runtime.backends.onnxruntime, medseg.runtime.backends.tensorrt",
        "import medseg.runtime.io.dicom, medseg.runtime.io.dicom_seg, medseg.runtime.engines",
        "import medseg.runtime.cuda, medseg.bundle, medseg.bundle.engines",
        "import sys; sys.argv = ['medseg', '--help']\n"
        "from medseg.cli.app import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
    ],
)
def test_light_imports_pull_no_heavy_stack(code: str) -> None:
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), f"{code!r} imported {sorted(loaded & set(HEAVY))}"


def test_preprocessing_is_numpy_only() -> None:
    """The runtime applies the recipe on the scanner side with numpy alone."""
    loaded = _modules_after("import medseg.transforms.preprocessing, medseg.data.slicing")
    assert not loaded & {*HEAVY, "nibabel", "scipy", "matplotlib", "pydicom"}


#: What the scanner side must never load, even while running a model (DESIGN.md).
TRAINING_SIDE = ("torch", "onnx", "modelopt", "monai", "onnxsim", "onnxscript")


def test_segmenting_a_volume_loads_no_training_side_package() -> None:
    """Run the runtime for real (ONNX Runtime on the demo bundle) and look at sys.modules."""
    pytest.importorskip("onnxruntime")
    bundle = Path(__file__).resolve().parents[2] / "models" / "mni152-tissue" / "bundle"
    code = (
        "import numpy as np\n"
        "from medseg.runtime import Segmenter\n"
        f"s = Segmenter.from_bundle({str(bundle)!r}, backend='onnxruntime', threads=1)\n"
        "image = np.random.default_rng(0).random((197, 233, 2))\n"
        "labels = s.segment(image, spacing=(1.0, 1.0, 1.0)).labels\n"
        "assert labels.shape == (197, 233, 2)"
    )
    loaded = _modules_after(code)
    assert "onnxruntime" in loaded
    assert not loaded & set(TRAINING_SIDE), sorted(loaded & set(TRAINING_SIDE))
