"""``import medseg.calibration`` stays cheap: onnx, onnxruntime, modelopt and torch load
only when a conversion runs (as in tests/unit/test_dependencies.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[3] / "src")


def test_import_pulls_no_heavy_stack() -> None:
    code = (
        "import sys, json, medseg.calibration\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & {"torch", "onnx", "onnxruntime", "modelopt", "monai", "scipy"}
