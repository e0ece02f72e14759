"""The manifest schema (pydantic through medseg.schema): each wrong key is named by its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["input"]["height"].update(min="1"), "input.height.min must be an integer"),
        (lambda d: d["input"].update(channels=True), "input.channels must be an integer, got bool"),
        (lambda d: d["input"].pop("name"), "missing key input.name"),
        (lambda d: d["input"].update(colour=1), "unknown key input.colour"),
        (lambda d: d.update(extra=1), "unknown key extra"),
        (lambda d: d["preprocessing"].update(modality="PET"), "preprocessing.modality must be"),
        (lambda d: d["classes"].update(x="a"), "classes.x must be an integer, got str 'a'"),
        (lambda d: d["precisions"]["fp32"].update(size_bytes=1.5), "fp32.size_bytes must be"),
        (lambda d: d["precisions"]["fp32"].update(file="x.onnx"), "precisions.fp32.file is"),
        (lambda d: d.update(orientation="XYZ"), "orientation 'XYZ' must be null or axis codes"),
        (lambda d: d.update(calibration=3), "calibration must be an object, got int 3"),
        (lambda d: d["input"]["width"].update(opt=0), "input.width: shape range"),
    ],
)
def test_a_wrong_key_is_named_by_its_path(
    edit: Any, expected: str, demo_bundle: Path, tmp_path: Path
) -> None:
    raw = json.loads((demo_bundle / "medseg.json").read_text())
    data = copy.deepcopy(raw)
    edit(data)
    (tmp_path / "medseg.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Manifest.load(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'medseg.json'}: ") and expected in message
    assert "\n" not in message


def test_a_saved_manifest_is_strict_json_and_reloads_equal(
    demo_bundle: Path, tmp_path: Path
) -> None:
    manifest = Manifest.load(demo_bundle)
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest
    assert not list(tmp_path.glob("*.tmp*"))
