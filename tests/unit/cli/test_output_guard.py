"""Every command of the CLI goes through the output guard (issue 22, "a user's files destroyed").

The commands are enumerated from the typer app: a new command without an entry in
``COMMANDS`` fails :func:`test_every_command_has_guard_cases`. Each command then runs through
the guard's cases: its output is an input, lies inside one, contains one, is a symlink to one,
is a foreign folder or file given with ``--force``, or lies where nothing can be written
(``/proc``). Each must exit 2 with one line naming the option and the path, before any work,
and leave every input (and the foreign folder) byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import ConfigError
from medseg.outputs import MARKER_NAME, Input, Output, guard

runner = CliRunner()

CASES = ("is-input", "inside-input", "contains-input", "symlink-to-input", "foreign", "unwritable")


@dataclass(frozen=True)
class Place:
    """The files a case runs on: inputs under ``root/in``, a user's folder ``root/foreign``."""

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    def __getattr__(self, name: str) -> Path:
        return self.root / "in" / name


@dataclass(frozen=True)
class Command:
    """How to call one command with OUT as the output under test.

    Attributes:
        argv: the arguments, given the place and the output path.
        option: the output's option or argument, as the refusal names it.
        folder: the output is a folder (else a file).
        input: the input the overlap cases aim at (``None``: the command reads no input).
        force: the command has ``--force`` (the foreign case passes it).
        foreign: the foreign case applies (not to an appended log).
    """

    argv: Callable[[Place, str], list[str]]
    option: str
    folder: bool
    input: Callable[[Place], Path] | None
    force: bool = True
    foreign: bool = True


COMMANDS: dict[str, Command] = {
    "data check": Command(
        lambda p, o: ["data", "check", str(p.ds), "--json", o], "--json", False, lambda p: p.ds
    ),
    "data mni152": Command(lambda p, o: ["data", "mni152", o], "OUT_DIR", True, None),
    "data mni152-cohort": Command(
        lambda p, o: ["data", "mni152-cohort", o, "--cases", "2"], "OUT_DIR", True, None
    ),
    "data preview": Command(
        lambda p, o: ["data", "preview", str(p.ds), "--out", o], "--out", False, lambda p: p.ds
    ),
    "import nnunet": Command(
        lambda p, o: ["import", "nnunet", str(p.result), "--out", o],
        "--out",
        True,
        lambda p: p.result,
    ),
    "plan": Command(lambda p, o: ["plan", str(p.ds), "--out", o], "--out", False, lambda p: p.ds),
    "cv-summary": Command(
        lambda p, o: ["cv-summary", str(p.run), "--json", o], "--json", False, lambda p: p.run
    ),
    "train": Command(
        lambda p, o: ["train", str(p.ds), "--out", o, "--epochs", "1"],
        "--out",
        True,
        lambda p: p.ds,
    ),
    "export": Command(
        lambda p, o: ["export", str(p.run), "--out", o, "--data", str(p.ds)],
        "--out",
        True,
        lambda p: p.run,
    ),
    "build": Command(  # engines go into BUNDLE: its ONNX files are the inputs
        lambda p, o: ["build", str(p.bundle), "--runtime", "tensorrt-rtx", "--timing-cache", o],
        "--timing-cache",
        False,
        lambda p: p.bundle / "model.onnx",
        force=False,
        foreign=False,
    ),
    "infer": Command(
        lambda p, o: ["infer", str(p.bundle), str(p.series), "--out", o],
        "--out",
        False,
        lambda p: p.series,
    ),
    "bench": Command(
        lambda p, o: ["bench", str(p.bundle), "--data", str(p.ds), "--report", o],
        "--report",
        True,
        lambda p: p.ds,
        force=False,
    ),
    "demo": Command(
        lambda p, o: ["demo", "--out", o, "--model", str(p.run)],
        "--out",
        True,
        lambda p: p.run,
        force=False,
    ),
    "demo-bundle": Command(  # --model is read but may hold --out (models/mni152-tissue/bundle)
        lambda p, o: ["demo-bundle", "--data", str(p.ds), "--model", str(p.run), "--out", o],
        "--out",
        True,
        lambda p: p.ds,
        force=False,
    ),
    "export-triton": Command(
        lambda p, o: ["export-triton", str(p.bundle), "--out", o],
        "--out",
        True,
        lambda p: p.bundle,
    ),
    "serve": Command(
        lambda p, o: ["serve", str(p.bundle), "--log", o],
        "--log",
        False,
        lambda p: p.bundle,
        force=False,
        foreign=False,
    ),
}


def _leaf_commands(command: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """``"data check"``, ..., ``"train"``: every command the app runs (groups walked)."""
    if getattr(command, "commands", None):  # a group (typer vendors its own click)
        return [
            name
            for key, sub in sorted(command.commands.items())
            for name in _leaf_commands(sub, (*prefix, key))
        ]
    return [" ".join(prefix)]


def test_every_command_has_guard_cases() -> None:
    """A command added to the app without guard cases here fails this test."""
    commands = _leaf_commands(typer.main.get_command(app))
    assert len(commands) >= 15
    missing = sorted(set(commands) - set(COMMANDS))
    assert not missing, f"commands without output-guard cases: {missing}"
    assert not set(COMMANDS) - set(commands), "cases for commands the app no longer has"


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _place(root: Path) -> Place:
    """Inputs the guard sees before any reading: their content need not be valid."""
    place = Place(root)
    ds = place.ds
    _write(ds / "dataset.json", json.dumps({"labels": {"background": 0}, "file_ending": ".nii.gz"}))
    _write(ds / "imagesTr" / "c_0000.nii.gz", b"\x1f\x8b user image")
    _write(ds / "labelsTr" / "c.nii.gz", b"\x1f\x8b user label")
    _write(place.run / "config.json", json.dumps({"train": {}}))
    _write(place.run / "model.pt", b"weights")
    _write(place.run / "validation.json", "{}")
    _write(place.bundle / "medseg.json", "{}")
    _write(place.bundle / "model.onnx", b"onnx")
    _write(place.result / "plans.json", "{}")
    _write(place.result / "fold_0" / "checkpoint_final.pth", b"weights")
    _write(place.series / "IM0001.dcm", b"\0" * 128 + b"DICM")
    _write(root / "foreign" / "notes.txt", "a user's notes")
    _write(root / "foreign.txt", "a user's notes")
    return place


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def _output_for(case: str, cmd: Command, place: Place) -> str | None:
    """The output path of ``case`` for ``cmd`` (``None``: the case does not apply)."""
    target = cmd.input(place) if cmd.input is not None else None
    leaf = "out" if cmd.folder else "out.json"
    if case == "unwritable":
        return f"/proc/{leaf}"
    if case == "foreign":
        return str(place.root / ("foreign" if cmd.folder else "foreign.txt"))
    if target is None:
        return None
    if case == "is-input":
        return str(target)
    if case == "inside-input":
        return str(target / leaf)
    if case == "contains-input":
        return str(place.inputs)
    link = place.root / "link"
    link.symlink_to(target, target_is_directory=True)
    return str(link)


def _applies(cmd: Command, case: str) -> bool:
    if case == "foreign":
        return cmd.foreign
    return case == "unwritable" or cmd.input is not None


@pytest.mark.parametrize(
    ("name", "case"),
    [(n, c) for n in sorted(COMMANDS) for c in CASES if _applies(COMMANDS[n], c)],
)
def test_command_refuses_before_any_work(name: str, case: str, tmp_path: Path) -> None:
    cmd = COMMANDS[name]
    place = _place(tmp_path)
    out = _output_for(case, cmd, place)
    assert out is not None
    argv = cmd.argv(place, out)
    assert argv[: len(name.split())] == name.split()
    if case == "foreign" and cmd.force:
        argv.append("--force")
    before = _digest(tmp_path)
    result = runner.invoke(app, argv)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (argv, result.output, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert f"{cmd.option} {out}" in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert _digest(tmp_path) == before, f"{name} {case} changed a file"


# -- the guard's rules, directly ---------------------------------------------------------------


def test_force_replaces_only_the_same_kind(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "medseg.json").write_text("{}")
    with pytest.raises(ConfigError, match="pass --force"):
        guard([Output("--out", bundle, "bundle")])
    assert guard([Output("--out", bundle, "bundle")], force=True) == [
        f"replacing the bundle {bundle} (--force)"
    ]
    # a bundle is not a Triton repository, nor a dataset
    with pytest.raises(ConfigError, match="--force replaces only a Triton model repository"):
        guard([Output("--out", bundle, "triton-repository")], force=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / MARKER_NAME).write_text(json.dumps({"kind": "triton-repository"}))
    assert guard([Output("--out", repo, "triton-repository")], force=True)


def test_file_outputs_replace_only_their_format(tmp_path: Path) -> None:
    report = tmp_path / "summary.json"
    report.write_text("{}")
    with pytest.raises(ConfigError, match="pass --force"):
        guard([Output("--json", report, "json")])
    assert guard([Output("--json", report, "json")], force=True)
    image = tmp_path / "scan.nii.gz"
    image.write_bytes(b"\x1f\x8b...")
    with pytest.raises(ConfigError, match="--force replaces only a PNG image"):
        guard([Output("--out", image, "png")], force=True)


def test_hard_link_and_dotdot_are_the_input(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    plans = tmp_path / "ds" / "dataset.json"
    plans.write_text("{}")
    link = tmp_path / "hard.json"
    link.hardlink_to(plans)
    with pytest.raises(ConfigError, match="is the input DATASET"):
        guard([Output("--out", link, "json")], [Input("DATASET", plans)], force=True)
    dotted = tmp_path / "ds" / ".." / "ds" / "x.json"
    with pytest.raises(ConfigError, match="lies inside the input DATASET"):
        guard([Output("--out", dotted, "json")], [Input("DATASET", tmp_path / "ds")])


def test_interrupted_run_is_replaced_without_force(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {}}))
    (run / "plans.json").write_text("{}")
    notes = guard([Output("--out", run, "run")])
    assert notes == [f"replacing {run}: a run interrupted before its first checkpoint"]
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="pass --force"):
        guard([Output("--out", run, "run")])


def test_update_mode_writes_only_into_its_own_kind(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    assert guard([Output("--report", report, "bench-report", "update")]) == []
    (report / "user.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bench report written by medseg"):
        guard([Output("--report", report, "bench-report", "update")])
    (report / MARKER_NAME).write_text(json.dumps({"kind": "bench-report"}))
    assert guard([Output("--report", report, "bench-report", "update")]) == []


def test_a_rerun_replaces_an_interrupted_run_and_resume_says_why(tmp_path: Path) -> None:
    """Issue 22 item 26: a run stopped before its first checkpoint blocks nothing."""
    from medseg.train.loop import check_run_dir

    dataset = tmp_path / "ds"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"arch": "unet"}}))
    (run / "plans.json").write_text("{}")
    check_run_dir(run, dataset, resume=False, force=False)  # no --force needed
    with pytest.raises(ConfigError, match="interrupted before its first checkpoint; run again"):
        check_run_dir(run, dataset, resume=True, force=False)


def test_scratch_tempdir_keeps_library_temporary_files_inside_the_output(tmp_path: Path) -> None:
    """Issue 22 item 25: modelopt's mkstemp files go with the bundle's temporary folder."""
    import os
    import tempfile

    from medseg.atomic import atomic_dir

    system_tmp = tempfile.gettempdir()
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt), atomic_dir(out, scratch=True) as tmp:
        fd, name = tempfile.mkstemp(suffix=".onnx")  # as modelopt's INT8 step does
        os.close(fd)
        assert Path(name).parent == tmp / ".scratch"
        assert os.environ["TMPDIR"] == str(tmp / ".scratch")
        raise KeyboardInterrupt
    assert not Path(name).exists() and list(tmp_path.iterdir()) == []
    assert tempfile.gettempdir() == system_tmp
    with atomic_dir(out, scratch=True) as tmp:
        (tmp / "model.onnx").write_bytes(b"onnx")
        os.close(tempfile.mkstemp()[0])  # left behind by a library: goes with the scratch
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_devices_and_broken_links_are_not_replaced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        guard([Output("--json", Path("/dev/null"), "json")], force=True)
    broken = tmp_path / "link.json"
    broken.symlink_to(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"link to .*missing\.json, which does not exist"):
        guard([Output("--json", broken, "json")], force=True)


def test_demo_runs_in_a_folder_of_medseg_outputs_only(tmp_path: Path) -> None:
    """``make bench-gate`` leaves a dataset and a report in demo-output/ before ``make demo``."""
    demo = tmp_path / "demo-output"
    (demo / "ci-mni152").mkdir(parents=True)
    (demo / "ci-mni152" / MARKER_NAME).write_text(json.dumps({"kind": "dataset"}))
    (demo / "ci-bench").mkdir()
    (demo / "ci-bench" / MARKER_NAME).write_text(json.dumps({"kind": "bench-report"}))
    assert guard([Output("--out", demo, "demo", "update")]) == []
    (demo / "thesis.docx").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo folder written by medseg"):
        guard([Output("--out", demo, "demo", "update")])
