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
        "import medseg.metrics",
        "import medseg.cli.app",
        "import sys; sys.argv = ['medseg', '--help']\n"
        "from medseg.cli.app import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
    ],
)
def test_light_imports_pull_no_heavy_stack(code: str) -> None:
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), f"{code!r} imported {sorted(loaded & set(HEAVY))}"


def test_preprocessing_is_numpy_only() -> None:
    """The runtime applies the recipe on the scanner side with numpy alone."""
    loaded = _modules_after("import medseg.data.preprocessing, medseg.data.slicing")
    assert not loaded & {*HEAVY, "nibabel", "scipy", "matplotlib", "pydicom"}
