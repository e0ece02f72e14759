"""The fuzz pass of issue 22: every bad command line of :mod:`fuzz_cases` is refused.

Each case must exit 2 with one message (one ``error:`` line, or click's usage error for a
value of the wrong type), show no traceback, write nothing (the output folder stays empty)
and leave every input as it was (size, mtime and sha256 of every file under the inputs).
Cases run in this process through typer's test runner; one that runs past 300 s fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_cases import CASES, Case
from fuzz_workspace import build_workspace
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
runner = CliRunner()
#: A case that runs longer than this hangs (it should have been refused at once).
CASE_LIMIT_S = int(os.environ.get("MEDSEG_FUZZ_CASE_LIMIT_S", "300"))
#: OpenVINO's model cache inside a bundle: its own cache, written by design when it loads.
_CACHE_PART = "cache"
_USAGE_MARKERS = ("Invalid value", "No such option", "Missing argument", "Missing option", "Usage:")


class _Hang(BaseException):
    """Raised by the alarm: the case did not return within :data:`CASE_LIMIT_S`."""


@pytest.fixture(scope="session")
def fuzz_workspace(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # the heavy imports first, outside any case's time limit (an alarm inside a half-done
    # import would leave the module broken for every later case)
    import medseg.models
    import medseg.train  # noqa: F401

    return build_workspace(tmp_path_factory.mktemp("fuzz"), toy_data)


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: (size, mtime_ns, sha256 of files below 64 KB).

    A write changes a file's mtime; the small files (JSON, headers) are also hashed."""
    state: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != _CACHE_PART]
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 16 else ""
            state[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
        state[str(Path(dirpath).relative_to(root)) + "/"] = (0, 0, "")
    return state


def _argv(case: Case, paths: dict[str, Path], out: Path) -> list[str]:
    values = {name: str(path) for name, path in paths.items()}
    values["OUT"] = str(out)
    return [re.sub(r"\{([^{}]+)\}", lambda m: values[m.group(1)], arg) for arg in case.args]


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang()


def _params() -> list[object]:
    return [
        pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.slow else [])
        for case in CASES
    ]


def run_case(case: Case, paths: dict[str, Path]) -> tuple[int, str, list[str]]:
    """Run one case; its exit code, output and the problems found (empty: refused cleanly)."""
    root = paths["DS"].parent.parent
    out = root / "out"
    before = _snapshot(root)
    env = {"OMP_NUM_THREADS": "1", "MEDSEG_DEBUG": ""}
    from medseg.cli.app import app

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CASE_LIMIT_S)
    try:
        result = runner.invoke(app, _argv(case, paths, out), env=env)
    except _Hang:
        result = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if result is None:
        _clean(out)
        return -1, "", [f"did not finish within {CASE_LIMIT_S} s"]
    output = result.output
    problems = []
    if "Traceback" in output or (
        result.exception is not None and not isinstance(result.exception, SystemExit)
    ):
        problems.append(f"traceback ({type(result.exception).__name__}: {result.exception})")
    if result.exit_code == 0:
        problems.append("exit 0 on bad input")
    elif result.exit_code != 2:
        problems.append(f"exit code {result.exit_code}, expected 2")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    usage = any(marker in output for marker in _USAGE_MARKERS)
    if result.exit_code == 2 and len(errors) != 1 and not usage:
        problems.append(f"{len(errors)} error lines")
    after = _snapshot(root)
    touched = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if touched:
        problems.append(f"touched or wrote {touched[:5]}")
    _clean(out)
    return result.exit_code, output, problems


def _clean(out: Path) -> None:
    """Empty the output folder for the next case, whatever this one left."""
    for leftover in list(out.iterdir()):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_in_one_line(case: Case, fuzz_workspace: dict[str, Path]) -> None:
    code, output, problems = run_case(case, fuzz_workspace)
    report = os.environ.get("MEDSEG_FUZZ_REPORT")  # one JSON line per case, for the counts
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": case.id, "exit": code, "problems": problems}) + "\n")
    assert not problems, f"{case.args}: {'; '.join(problems)}\n{output[-2000:]}"


def test_the_case_list_covers_every_command() -> None:
    """Every command of the typer app (enumerated, so a new one cannot be skipped) has cases."""
    import typer.main

    from medseg.cli.app import app

    def names(command: object, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from names(sub, (*prefix, name))
        else:
            yield prefix

    commands = set(names(typer.main.get_command(app), ()))
    covered = {c.args[: len(k)] for c in CASES for k in commands if c.args[: len(k)] == k}
    assert commands - covered == set(), f"commands without fuzz cases: {commands - covered}"
    assert len(CASES) >= 300
