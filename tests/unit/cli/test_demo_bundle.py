"""``medseg demo-bundle`` (what ``make demo-bundle`` runs): a CLI command, refusing bad folders
before any export work. The export itself is the windowed export (tests/unit/export)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medseg.cli.app import app

runner = CliRunner()


def test_demo_bundle_is_a_command() -> None:
    result = runner.invoke(app, ["demo-bundle", "--help"])
    assert result.exit_code == 0, result.output
    assert "--data" in result.output and "--out" in result.output


def test_demo_bundle_refuses_a_missing_dataset_naming_the_option(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = runner.invoke(
        app, ["demo-bundle", "--data", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "--data" in result.output and "no such dataset folder" in result.output
    assert not out.exists()


def test_demo_bundle_refuses_a_missing_model_naming_the_option(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "bundle"
    data.mkdir()
    args = ["demo-bundle", "--data", str(data), "--model", str(tmp_path / "m"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--model" in result.output and "no such run folder" in result.output
    assert not out.exists()
