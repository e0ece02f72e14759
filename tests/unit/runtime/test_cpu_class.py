"""CPU classes (avx2, avx512-vnni, amx...) from /proc/cpuinfo flags, the accuracy a bundle
records per class, and what ``auto`` does on a CPU whose class the bundle never measured."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medseg.bundle import Manifest
from medseg.runtime import create_backend
from medseg.runtime.accuracy_class import class_note, cpu_choice, measured_classes
from medseg.runtime.cpu import CPUINFO, CpuFeatures, _from_cpuinfo, cpu_class_of, cpu_features
from medseg.runtime.volume import segment_windowed
from medseg.transforms.preprocessing import Recipe


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"}, "amx"),
        ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "avx512-vnni"),
        ({"avx2", "avx_vnni"}, "avx-vnni"),
        ({"avx2", "avx512f"}, "avx512"),  # AVX-512 without VNNI: saturating u8 x s8 too
        ({"avx2", "fma"}, "avx2"),
        ({"sse4_2"}, "sse"),
    ],
)
def test_cpu_class_of_flags(flags: set[str], expected: str) -> None:
    assert cpu_class_of(frozenset(flags)) == expected


def test_this_machines_class_is_read_from_cpuinfo() -> None:
    text = "processor : 0\nflags : fpu avx avx2 fma avx512f avx512_vnni avx512_bf16\n"
    features = CpuFeatures(_from_cpuinfo(text), str(CPUINFO))
    assert features.to_dict() == {
        "bf16": "avx512_bf16",
        "int8": "avx512_vnni",
        "cpu_class": "avx512-vnni",
        "source": str(CPUINFO),
    }
    assert CpuFeatures(frozenset({"BF16"}), "openvino OPTIMIZATION_CAPABILITIES").cpu_class == (
        "unknown"
    )
    if CPUINFO.is_file():  # the real file of this machine
        flags = next(
            set(line.split(":", 1)[1].split())
            for line in CPUINFO.read_text().splitlines()
            if line.startswith("flags")
        )
        assert cpu_features().cpu_class == cpu_class_of(frozenset(flags))


def _with_classes(manifest: Manifest, **by_backend: Any) -> Manifest:
    """The manifest with ``backend_accuracy.<backend>.int8`` recorded on other classes."""
    data = manifest.to_dict()
    for backend, record in by_backend.items():
        data["backend_accuracy"][backend]["int8"].update(record)
    return Manifest.from_dict(data)


def test_auto_falls_back_where_the_class_was_never_measured(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle, ignore=shutil.ignore_patterns("cache"))
    here = cpu_features().cpu_class
    other = "amx" if here != "amx" else "avx2"
    manifest = Manifest.load(bundle)
    assert {r["cpu_class"] for b in manifest.backend_accuracy.values() for r in b.values()} == {
        here
    }  # the export recorded this machine's class with every record
    assert cpu_choice(manifest, "onnxruntime", "int8", here, ("onnxruntime",)).note is None
    elsewhere = _with_classes(
        manifest,
        onnxruntime={"cpu_class": other},
        openvino={"cpu_class": other, "by_cpu_class": {"sse": {}}},
    )
    assert measured_classes(elsewhere, "openvino", "int8") == (other, "sse")
    note = class_note(elsewhere, "onnxruntime", "int8", here)
    assert note is not None and here in note and other in note
    assert class_note(elsewhere, "onnxruntime", "fp32", here) is None  # class-independent
    choice = cpu_choice(elsewhere, "onnxruntime", "int8", here, ("onnxruntime", "openvino"))
    assert (choice.backend, choice.precision) == ("onnxruntime", "fp32")
    assert choice.note is not None and "running fp32" in choice.note
    # measured here on the other backend, within budget: auto moves there, keeping int8
    other_ok = _with_classes(
        elsewhere, openvino={"cpu_class": here, "within_budget": True, "by_cpu_class": {}}
    )
    choice = cpu_choice(other_ok, "onnxruntime", "int8", here, ("onnxruntime", "openvino"))
    assert (choice.backend, choice.precision) == ("openvino", "int8")
    # measured here but over the budget: not run by auto
    over = _with_classes(manifest, onnxruntime={"within_budget": False})
    assert cpu_choice(over, "onnxruntime", "int8", here, ("onnxruntime",)).precision == "fp32"
    # the real runner: auto runs the FP32 file and says why in one line
    elsewhere.save(bundle)
    runner = create_backend(bundle, Manifest.load(bundle), "auto", "int8", threads=1)
    assert Path(runner.loader.path).name == "model.onnx"  # type: ignore[attr-defined]
    assert runner.selection_note is not None and "running fp32" in runner.selection_note
    assert "\n" not in runner.selection_note
    explicit = create_backend(bundle, Manifest.load(bundle), "onnxruntime", "int8", threads=1)
    assert explicit.selection_note is not None and here in explicit.selection_note


def test_windowed_slices_get_the_labels_of_a_whole_run() -> None:
    """Export validation runs only a slice-level split's slices: same labels there."""
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 1, (1, 40, 36, 9)).astype(np.float32)
    recipe = Recipe(size_policy="window", patch_size=(32, 32), target_spacing=None)

    def net(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([batch, -batch, 0.2 * batch], axis=1)

    whole = segment_windowed(volume, None, recipe, net, 4, 3).labels
    some = segment_windowed(volume, None, recipe, net, 4, 3, slices=[7, 2, 5]).labels
    axis = recipe.slice_axis
    picked = np.take(whole, [2, 5, 7], axis=axis)
    np.testing.assert_array_equal(np.take(some, [2, 5, 7], axis=axis), picked)
    assert not np.take(some, [0, 1, 3], axis=axis).any()
