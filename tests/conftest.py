"""Fixtures shared across the suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mni_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded MNI152 tissue dataset, written once per test session (read-only use)."""
    from medseg.data.mni152 import write_mni152

    return write_mni152(tmp_path_factory.mktemp("mni") / "mni152")
