"""Dependency boundary: importing medseg.metrics costs numpy only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import medseg


def test_import_does_not_load_scipy_or_torch() -> None:
    code = (
        "import sys, medseg.metrics; "
        "heavy = sorted(m for m in ('scipy', 'torch', 'monai') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    src = str(Path(medseg.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src},
    )
    assert result.stdout.strip() == ""
