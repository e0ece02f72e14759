"""Atomic writes: files and directories appear whole or not at all.

Every output medseg writes goes to a temporary sibling first and is renamed into place,
so a failed run leaves no half-written file or directory, and an existing output is only
replaced once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from medseg.errors import ConfigError

__all__ = [
    "Terminated",
    "atomic_dir",
    "atomic_file",
    "check_parent_exists",
    "reraise_interrupt",
    "scratch_tempdir",
    "sigterm_as_interrupt",
]


class Terminated(KeyboardInterrupt):
    """SIGTERM received (``kill``, a CI job cancelled, ``docker stop``).

    A :class:`KeyboardInterrupt`, so that it unwinds exactly like Ctrl-C: every
    :func:`atomic_dir` / :func:`atomic_file` block removes its temporary output.
    """


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}")


def reraise_interrupt(exc: BaseException) -> None:
    """Re-raise the :class:`KeyboardInterrupt` (or :class:`Terminated`) that ``exc`` wraps.

    Some libraries (``torch.export``) catch an interrupt and raise their own error from it;
    call this in an ``except Exception`` clause so that the interrupt still stops the run.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            raise cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of killing the process.

    Python's default for SIGTERM ends the process at once, so ``finally`` and ``except``
    clauses never run and a half-written temporary folder stays behind; SIGINT raises
    :class:`KeyboardInterrupt`, which cleans up. This makes SIGTERM behave like SIGINT. The
    previous handler is restored on exit. Outside the main thread (where signal handlers
    cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_parent_exists(path: Path) -> None:
    """Raise :class:`ConfigError` unless the folder that will hold ``path`` exists."""
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ConfigError(
            f"cannot write {path}: its parent folder {parent} does not exist; "
            "create it first or choose another output path"
        )


@contextlib.contextmanager
def scratch_tempdir(folder: Path) -> Iterator[Path]:
    """Within the block, Python's temporary files go to ``folder/.scratch`` (then removed).

    Libraries that make temporary files with :func:`tempfile.mkstemp` and remove them only on
    success (modelopt's INT8 quantisation writes ``/tmp/tmpXXXXXXXX.onnx``) leave them behind
    on Ctrl-C or SIGTERM; pointed into an output's temporary folder, they go with it.
    ``tempfile.tempdir`` and ``TMPDIR`` (for child processes) are restored on exit.
    """
    scratch = Path(folder) / ".scratch"
    scratch.mkdir(exist_ok=True)
    previous, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(scratch)
    os.environ["TMPDIR"] = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = previous
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: Path, scratch: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path``, on error it is removed.

    An existing ``path`` stays untouched until the new folder is complete. With ``scratch``,
    Python's temporary files of the block go inside it (:func:`scratch_tempdir`), so an
    interrupt leaves none behind in ``/tmp``.
    """
    path = Path(path)
    check_parent_exists(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual permissions
    try:
        if scratch:
            with scratch_tempdir(tmp):
                yield tmp
        else:
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        # an empty, unique folder: os.replace of a folder onto an empty one works
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=tmp.parent))
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import (setting the umask to read it is not thread-safe).
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; on success it is renamed to ``path``."""
    path = Path(path)
    check_parent_exists(path)
    # The temporary name keeps the real suffixes (".nii.gz"): writers pick the format from them.
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.absolute().parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, path)
    except OSError as exc:  # e.g. path is a folder: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
