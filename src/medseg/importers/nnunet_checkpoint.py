"""Safe loading of the checkpoints ``nnUNetTrainer.save_checkpoint`` writes.

A real checkpoint holds, besides tensors, numpy scalars (``logging`` lists the epochs'
``mean_fg_dice`` / ``ema_fg_dice`` as numpy floats, ``_best_ema`` is one): pickled as
``numpy._core.multiarray.scalar(dtype, bytes)`` with a ``numpy.dtype`` built from the concrete
dtype class (``numpy.dtypes.Float32DType``, ...). ``torch.load(weights_only=True)`` refuses
those globals. :func:`load_nnunet_checkpoint` lists the globals a checkpoint needs first
(``torch.serialization.get_unsafe_globals_in_checkpoint``), refuses any other than
:data:`NUMPY_GLOBALS` in one line naming it, and loads with ``weights_only=True`` and exactly
those allowed (``torch.serialization.safe_globals``). Never ``weights_only=False``.

Trainer names: :func:`is_nnunet_trainer` tells whether nnU-Net itself ships a trainer of that
name (read from the installed nnunetv2's source, nothing imported).
"""

from __future__ import annotations

import functools
import pickle
import re
from pathlib import Path
from typing import Any

from medseg.errors import DatasetError

__all__ = ["NUMPY_GLOBALS", "is_nnunet_trainer", "load_nnunet_checkpoint", "nnunet_trainer_names"]

#: The globals nnU-Net's checkpoints need beyond torch's weights-only set, by pickled name:
#: numpy float scalars (float32 in nnunetv2 2.8's ``logging`` and ``_best_ema``; float64 where
#: a mean of Python floats is logged). Integer or other numpy types are not written by it.
NUMPY_GLOBALS = (
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Float64DType",
)


# torch's two refusals: an unlisted GLOBAL, or a BUILD of an unlisted class (a numpy dtype class
# is only built, never named by get_unsafe_globals_in_checkpoint)
_GLOBAL_RE = re.compile(r"(?:Unsupported global: GLOBAL |but got <class ')([\w.]+)")


def _numpy_objects() -> dict[str, Any]:
    import numpy as np

    return {
        "numpy._core.multiarray.scalar": np._core.multiarray.scalar,  # type: ignore[attr-defined]
        "numpy.dtype": np.dtype,
        "numpy.dtypes.Float32DType": np.dtypes.Float32DType,
        "numpy.dtypes.Float64DType": np.dtypes.Float64DType,
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """Load an nnU-Net checkpoint with ``weights_only=True`` and the numpy globals allowed.

    Args:
        path: ``fold_<k>/checkpoint_final.pth`` (or ``checkpoint_best.pth``, ...).

    Returns:
        The checkpoint dict (``network_weights``, ``trainer_name``, ``init_args``, ...).

    Raises:
        DatasetError: unreadable file, a global other than :data:`NUMPY_GLOBALS` (named), or
            no ``network_weights``.
    """
    import torch

    path = Path(path)
    allowed = _numpy_objects()
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError):
        needed = []  # not torch's zip format (legacy pickle): torch.load below names the global
    refused = [g for g in needed if g not in allowed]
    try:
        if refused:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {refused[0]}")
        with torch.serialization.safe_globals(list(allowed.values())):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        named = _GLOBAL_RE.search(str(exc))
        if named:
            raise DatasetError(
                f"{path}: the checkpoint needs the global {named[1]!r}, which a weights-only "
                f"load refuses (allowed besides tensors: nnU-Net's numpy scalars "
                f"{', '.join(NUMPY_GLOBALS)})"
            ) from None
        why = _first_line(exc)
        if why.startswith("Weights only load failed"):
            why = "not a file torch.save wrote"
        raise DatasetError(f"{path}: not a loadable nnU-Net checkpoint ({why})") from None
    if not isinstance(data, dict) or "network_weights" not in data:
        raise DatasetError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    return data


@functools.cache
def nnunet_trainer_names() -> frozenset[str]:
    """Class names defined in the installed nnunetv2's trainer package (source scan)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("nnunetv2")
    except ImportError:
        return frozenset()
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(next(iter(spec.submodule_search_locations))) / "training" / "nnUNetTrainer"
    names: set[str] = set()
    pattern = re.compile(r"^class\s+(\w+)\s*[(:]", re.MULTILINE)
    for source in root.rglob("*.py"):
        try:
            names.update(pattern.findall(source.read_text(errors="replace")))
        except OSError:
            continue
    return frozenset(names)


def is_nnunet_trainer(name: str) -> bool:
    """True when the installed nnU-Net ships a trainer class called ``name``."""
    return name in nnunet_trainer_names()
