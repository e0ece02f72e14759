"""The output guard: every command checks ALL its outputs against ALL its inputs, before any work.

One mechanism for every command of the CLI (``tests/unit/cli/test_output_guard.py`` runs
each command of the typer app through it):

- an output may not be, contain, or lie inside any input (after resolving symlinks and
  ``..``; hard links to an input file count as the input), nor overlap another output;
- the folder it will be written in must exist and be writable (probed with a real file:
  read-only mounts, ``chattr +i`` and ``/proc`` are refused at once, not after the work);
- an existing output is replaced only with ``--force``, and ``--force`` replaces only
  something of the same kind that medseg wrote: a folder carrying its kind's marker (a
  bundle's ``medseg.json``, a run's ``config.json`` / ``nnunet.json``, or the
  ``.medseg-output.json`` that medseg writes into its other folders), a file whose content
  is of the expected format. A user's dataset, DICOM series or result folder never is.

Only the checks live here (no heavy imports); :func:`guard` returns one note per output it
will replace, and the CLI prints them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from medseg.errors import ConfigError

__all__ = [
    "KINDS",
    "MARKER_NAME",
    "Input",
    "Kind",
    "Output",
    "guard",
    "interrupted_run",
    "read_marker",
    "write_marker",
]

#: The marker medseg writes into the output folders that have no manifest of their own.
MARKER_NAME = ".medseg-output.json"

#: ``replace``: created, or replaced whole (``--force``); ``update``: written into (an
#: existing one must be of the kind: a bench report, a demo folder, a bundle getting engines);
#: ``append``: a log file that is appended to.
Mode = Literal["replace", "update", "append"]


def read_marker(folder: Path) -> str | None:
    """The kind recorded in ``folder``'s :data:`MARKER_NAME`, or ``None``."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def write_marker(folder: Path, kind: str, command: str) -> None:
    """Record in ``folder`` that medseg wrote it as a ``kind`` (so ``--force`` may replace it)."""
    from medseg import __version__

    record = {"kind": kind, "command": command, "medseg-edge": __version__}
    (Path(folder) / MARKER_NAME).write_text(json.dumps(record, indent=2) + "\n")


def _json_has(folder: Path, name: str, key: str) -> bool:
    try:
        data = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and key in data


def interrupted_run(folder: Path) -> bool:
    """A training run stopped before its first checkpoint: ``config.json`` but no ``*.pt``.

    Such a run holds nothing to keep; a rerun replaces it without ``--force``.
    """
    folder = Path(folder)
    return (
        folder.is_dir()
        and _json_has(folder, "config.json", "train")
        and not (folder / "nnunet.json").exists()
        and not any(folder.glob("*.pt"))
    )


def _is_run(folder: Path) -> bool:
    return (
        _json_has(folder, "config.json", "train")
        or (folder / "nnunet.json").is_file()  # medseg import nnunet
        or (folder / "model.pt").is_file()
    )


def _sniff(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _is_json(path: Path) -> bool:
    try:
        if path.stat().st_size > 256 * 2**20:
            return False
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def _is_nifti(path: Path) -> bool:
    head = _sniff(path, 4)
    return head[:2] == b"\x1f\x8b" or head in (
        (348).to_bytes(4, "little"),
        (348).to_bytes(4, "big"),
        (540).to_bytes(4, "little"),
        (540).to_bytes(4, "big"),
    )


@dataclass(frozen=True)
class Kind:
    """One kind of output: a folder or a file, and how an existing one is recognised.

    Attributes:
        name: what it is called in messages ("bundle", "bench report").
        folder: a folder (else a file).
        recognise: whether an existing path is one medseg wrote as this kind.
        hint: what recognition looks for, for messages.
    """

    name: str
    folder: bool
    recognise: Callable[[Path], bool]
    hint: str


def _marked(kind: str, *legacy: str) -> Callable[[Path], bool]:
    """Carries the marker of ``kind``, or all of ``legacy`` (outputs of older versions)."""

    def recognise(folder: Path) -> bool:
        if read_marker(folder) == kind:
            return True
        return bool(legacy) and all((folder / name).exists() for name in legacy)

    return recognise


def _is_embedded_dataset(folder: Path) -> bool:
    """A dataset of ``medseg data mni152`` / ``mni152-cohort`` written before the marker."""
    try:
        name = json.loads((folder / "dataset.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return False
    return name in ("MNI152-tissue", "MNI152-cohort")


def _holds_only_outputs(folder: Path) -> bool:
    """Every entry of ``folder`` is a folder medseg wrote (``make bench-gate`` fills
    ``demo-output/`` with a dataset and a bench report before ``make demo`` runs there)."""
    entries = list(folder.iterdir())
    return bool(entries) and all(
        entry.is_dir()
        and any(k.recognise(entry) for name, k in KINDS.items() if k.folder and name != "demo")
        for entry in entries
    )


#: Every kind of output a command writes.
KINDS: dict[str, Kind] = {
    "bundle": Kind("bundle", True, lambda p: (p / "medseg.json").is_file(), "medseg.json"),
    "engines": Kind(
        "bundle's engines folder",
        True,
        lambda p: (p.parent / "medseg.json").is_file(),
        "medseg.json in the folder above",
    ),
    "run": Kind("run", True, _is_run, "config.json of medseg train or nnunet.json"),
    "dataset": Kind(
        "dataset",
        True,
        lambda p: _marked("dataset")(p) or _is_embedded_dataset(p),
        MARKER_NAME,
    ),
    "triton-repository": Kind(
        "Triton model repository",
        True,
        _marked("triton-repository", "README.md", "client_example.py"),
        MARKER_NAME,
    ),
    "bench-report": Kind(
        "bench report", True, _marked("bench-report", "results.json", "report.md"), MARKER_NAME
    ),
    "demo": Kind(
        "demo folder",
        True,
        lambda p: _marked("demo", "demo_summary.json")(p) or _holds_only_outputs(p),
        f"{MARKER_NAME}, or only folders medseg wrote",
    ),
    "json": Kind("JSON file", False, _is_json, "JSON content"),
    "png": Kind("PNG image", False, lambda p: _sniff(p, 8) == b"\x89PNG\r\n\x1a\n", "PNG"),
    "nifti": Kind("NIfTI file", False, _is_nifti, "a NIfTI header"),
    "dicom": Kind("DICOM file", False, lambda p: _sniff(p, 132)[128:] == b"DICM", "DICM"),
    "log": Kind("log file", False, lambda p: p.is_file(), "a regular file"),
    "cache": Kind("cache file", False, lambda p: p.is_file(), "a regular file"),
}


@dataclass(frozen=True)
class Output:
    """One output of a command.

    Attributes:
        option: the option or argument as the user typed it (``--out``, ``OUT_DIR``).
        path: the path given (``None``: the option is unset, nothing to check).
        kind: a key of :data:`KINDS`.
        mode: ``replace``, ``update`` or ``append`` (see :data:`Mode`).
    """

    option: str
    path: Path | None
    kind: str
    mode: Mode = "replace"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; known: {sorted(KINDS)}")


@dataclass(frozen=True)
class Input:
    """One input of a command: the option (or argument) and the path given (``None``: unset)."""

    option: str
    path: Path | None


def _path(item: Output | Input) -> Path:
    """The path of an entry :func:`guard` kept (its path is set)."""
    return Path(cast(Path, item.path))


def _resolved(item: Output | Input) -> Path:
    return Path(os.path.abspath(_path(item))).resolve()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _relation(out: Path, src: Path) -> str | None:
    if out == src or _same_file(out, src):
        return "is"
    if src in out.parents:
        return "lies inside"
    if out in src.parents:
        return "contains"
    return None


def _check_overlaps(outputs: list[Output], inputs: list[Input]) -> None:
    for o in outputs:
        target = _resolved(o)
        for i in inputs:
            relation = _relation(target, _resolved(i))
            if relation is not None:
                raise ConfigError(
                    f"{o.option} {o.path} {relation} the input {i.option} {i.path}: medseg never "
                    f"writes into or over an input, --force or not; choose another {o.option}"
                )
    for n, a in enumerate(outputs):
        for b in outputs[n + 1 :]:
            relation = _relation(_resolved(a), _resolved(b))
            if relation is not None:
                raise ConfigError(
                    f"{a.option} {a.path} {relation} the output {b.option} {b.path}: give "
                    "outputs that do not overlap"
                )


def _probe_writable(folder: Path, o: Output) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".medseg-probe-", dir=folder)
    except OSError as exc:
        raise ConfigError(
            f"{o.option} {o.path}: cannot write in {folder} ({exc.strerror or exc}); "
            "choose a writable folder"
        ) from None
    os.close(fd)
    os.unlink(name)


def _check_existing(o: Output, force: bool) -> str | None:
    """Refuse what may not be replaced; the note for what will be replaced."""
    kind = KINDS[o.kind]
    path = _path(o)
    if not path.exists() and not path.is_symlink():
        return None
    what = "folder" if kind.folder else "file"
    if not path.exists():
        raise ConfigError(
            f"{o.option} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
            "remove the link or choose another path"
        )
    if not kind.folder and not path.is_dir() and not path.is_file() and o.mode != "append":
        raise ConfigError(
            f"{o.option} {path} is not a regular file (a device, pipe or socket); expected a "
            f"{kind.name} path"
        )
    if kind.folder and not path.is_dir():
        raise ConfigError(f"{o.option} {path} exists and is not a folder; expected a {kind.name}")
    if not kind.folder and path.is_dir():
        raise ConfigError(f"{o.option} {path} is a folder; expected a {kind.name} path")
    if kind.folder and not any(path.iterdir()):
        return None
    ours = kind.recognise(path) or (not kind.folder and path.stat().st_size == 0)
    if o.mode == "append":
        return None
    if o.mode == "update":
        if not ours:
            raise ConfigError(
                f"{o.option} {path} exists and is not a {kind.name} written by medseg (no "
                f"{kind.hint}): medseg writes only into its own {what}s; choose a new or empty "
                f"{what}"
            )
        return None
    if o.kind == "run" and interrupted_run(path):
        return f"replacing {path}: a run interrupted before its first checkpoint"
    if not ours:
        by = " written by medseg" if kind.folder else ""
        never = f"it is not a {kind.name}{by} (no {kind.hint})"
        if not force:
            raise ConfigError(
                f"{o.option} {path} exists and {never}; --force would not replace it either: "
                f"choose another {o.option}"
            )
        raise ConfigError(
            f"{o.option} {path}: --force replaces only a {kind.name}{by}, and "
            f"{never}; choose another {o.option} or remove it yourself"
        )
    if not force:
        raise ConfigError(f"{o.option} {path} exists (a {kind.name}); pass --force to replace it")
    return f"replacing the {kind.name} {path} (--force)"


def guard(
    outputs: Iterable[Output | None],
    inputs: Iterable[Input | None] = (),
    *,
    force: bool = False,
) -> list[str]:
    """Check every output of a command against its inputs and the file system, before any work.

    Args:
        outputs: what the command writes (entries or paths that are ``None`` are skipped).
        inputs: what it reads (likewise); inputs need not exist.
        force: the command's ``--force``.

    Returns:
        One line per existing output that will be replaced, for the CLI to print.

    Raises:
        ConfigError: one line naming the option and path: an output that is, contains or lies
            inside an input or another output; whose folder is missing or not writable; that
            exists without ``force``; or that ``force`` may not replace (another kind).
    """
    outs = [o for o in outputs if o is not None and o.path is not None]
    ins = [i for i in inputs if i is not None and i.path is not None]
    _check_overlaps(outs, ins)
    notes: list[str] = []
    for o in outs:
        path = _path(o)
        parent = Path(os.path.abspath(path)).parent
        if not parent.is_dir():
            raise ConfigError(
                f"{o.option} {path}: its parent folder {parent} does not exist; create it "
                "first or choose another path"
            )
        note = _check_existing(o, force)
        if note is not None:
            notes.append(note)
        writes_inside = KINDS[o.kind].folder and o.mode == "update" and path.is_dir()
        _probe_writable(path if writes_inside else parent, o)
    return notes
