"""Issue 22: the library functions that write outputs go through the one output guard
(:func:`medseg.outputs.guard`), so a notebook user gets the CLI's protection: an output may
not be, contain or lie in an input, and ``force`` replaces only what medseg wrote.

Every case is refused before any work (the inputs need not even be valid), and the user's
files are left as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medseg.errors import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "models" / "mni152-tissue"
NOT_OURS = "--force|replaces only|not a"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _user_folder(root: Path) -> Path:
    """A folder of the user's (no medseg marker): notes, and a scan."""
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    (root / "scan.nii.gz").write_bytes(b"\x1f\x8b\x08\x00not really")
    return root


def _refused(call: Callable[[], Any], match: str, *untouched: Path) -> None:
    before = [_digest(p) for p in untouched]
    with pytest.raises(ConfigError, match=match):
        call()
    assert [_digest(p) for p in untouched] == before


def test_export_bundle(tmp_path: Path) -> None:
    from medseg.export.options import ExportOptions
    from medseg.export.pipeline import export_bundle

    run = _user_folder(tmp_path / "run")
    data = _user_folder(tmp_path / "ds")
    options = ExportOptions(data=data)
    _refused(lambda: export_bundle(run, run, options, print, force=True), "is the input", run)
    _refused(lambda: export_bundle(run, data, options, print, force=True), "is the input", data)
    other = _user_folder(tmp_path / "other")
    _refused(lambda: export_bundle(run, other, ExportOptions(), print, force=True), NOT_OURS, other)


def test_export_nnunet_and_window_bundle(tmp_path: Path) -> None:
    from medseg.demo.window_bundle import export_window_bundle
    from medseg.export.nnunet_export import NnunetExportOptions, export_nnunet

    run = _user_folder(tmp_path / "run")
    _refused(
        lambda: export_nnunet(run, run / "bundle", NnunetExportOptions(), force=True),
        "lies inside the input",
        run,
    )
    data = _user_folder(tmp_path / "ds")
    _refused(lambda: export_window_bundle(run, data, data, print, force=True), "is the input", data)


def test_export_triton(tmp_path: Path) -> None:
    from medseg.deploy import export_triton

    bundle = DEMO / "bundle"
    _refused(lambda: export_triton(bundle, bundle, force=True), "is the input", bundle)
    _refused(lambda: export_triton(bundle, DEMO, force=True), "contains the input", bundle)
    other = _user_folder(tmp_path / "other")
    _refused(lambda: export_triton(bundle, other, force=True), NOT_OURS, other)


def test_import_nnunet(tmp_path: Path) -> None:
    from medseg.importers.nnunet import import_nnunet

    result = _user_folder(tmp_path / "Dataset001" / "nnUNetTrainer__nnUNetPlans__2d")
    (result / "fold_0").mkdir()
    (result / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    for out in (result, result / "fold_0", result.parent):
        _refused(lambda out=out: import_nnunet(result, out, force=True), "the input", result)


def test_train_run_dir(tmp_path: Path) -> None:
    from medseg.train.rundir import check_run_dir

    data = _user_folder(tmp_path / "ds")
    _refused(lambda: check_run_dir(data / "run", data, False, True), "lies inside", data)
    # --force used to empty any non-empty folder: now only a run
    other = _user_folder(tmp_path / "other")
    _refused(lambda: check_run_dir(other, data, False, True), NOT_OURS, other)
    _refused(lambda: check_run_dir(other, data, True, False), "not a run", other)


def test_datasets(tmp_path: Path) -> None:
    from medseg.data.mni152 import write_mni152
    from medseg.data.mni152_cohort import write_mni152_cohort

    other = _user_folder(tmp_path / "other")
    _refused(lambda: write_mni152(other, force=True), NOT_OURS, other)
    _refused(lambda: write_mni152_cohort(other, cases=1, force=True), NOT_OURS, other)
    _refused(lambda: write_mni152(other), "exists", other)


def test_bench_report(tmp_path: Path) -> None:
    from medseg.bench.pipeline import bench_pipeline
    from medseg.bench.report import write_report
    from medseg.bench.runner import BenchOptions

    data = _user_folder(tmp_path / "ds")
    _refused(
        lambda: bench_pipeline(DEMO / "bundle", data, BenchOptions(), report=data / "report"),
        "lies inside the input",
        data,
    )
    other = _user_folder(tmp_path / "other")
    _refused(lambda: write_report(None, other), "not a bench report", other)  # type: ignore[arg-type]
