"""Export tests use the toy dataset and toy runs of tests/conftest.py."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
