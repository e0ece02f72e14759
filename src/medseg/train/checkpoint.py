"""Checkpoints: weights plus the record that rebuilds the model and its preprocessing.

A run directory holds ``model.pt`` (best weights: ``{"state_dict", "model", "meta"}``,
loadable with ``torch.load(weights_only=True)``), ``last.pt`` (for ``--resume``: weights,
optimiser and scheduler state), ``config.json`` (human-readable: architecture, width,
classes, preprocessing recipe, dataset fingerprint, split, seed, training options, best
validation Dice), ``metrics.jsonl`` (one line per epoch) and ``training_curve.png``.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file
from medseg.errors import ConfigError

__all__ = ["LoadedCheckpoint", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "model.pt"
LAST_NAME = "last.pt"
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with the run's record.

    Attributes:
        model: the ``torch.nn.Module`` with its weights loaded, on CPU, eval mode.
        record: the model record (arch, variant, in_channels, num_classes, config).
        meta: classes, recipe, dataset fingerprint, split, seed, ... (see ``config.json``).
        path: the checkpoint file.
    """

    model: Any
    record: dict[str, Any]
    meta: dict[str, Any]
    path: Path


def save_checkpoint(path: Path, model: Any, meta: dict[str, Any], **extra: Any) -> None:
    """Write ``{"state_dict", "model", "meta", **extra}`` atomically with ``torch.save``."""
    from medseg.deps import require
    from medseg.models import model_record

    torch = require("torch", "saving checkpoints")

    payload = {"state_dict": model.state_dict(), "model": model_record(model), "meta": meta}
    payload.update(extra)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def resolve_checkpoint(path: Path) -> Path:
    """``RUN_DIR`` or a ``.pt`` file -> the checkpoint file; ConfigError if there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(
            f"no checkpoint at {path}: pass a run directory holding {CHECKPOINT_NAME} "
            "(written by medseg train) or the .pt file itself"
        )
    return path


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Load a run directory's ``model.pt`` (or a given ``.pt`` file) and rebuild the model.

    Raises:
        ConfigError: missing file, corrupt or truncated file, not a medseg checkpoint,
            unknown architecture, or weights that do not fit the recorded architecture.
    """
    from medseg.deps import require
    from medseg.models import create_model_from_config

    torch = require("torch", "loading checkpoints")

    path = resolve_checkpoint(path)
    try:
        # weights_only=True: a checkpoint holds tensors and plain data only; nothing else is
        # ever unpickled (PyTorch's own error text advises weights_only=False: never relay it)
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} is not a readable checkpoint: not a PyTorch file holding only tensors and "
            "plain data (the model.pt that medseg train writes)"
        ) from exc
    except (
        RuntimeError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        IndexError,
        ValueError,
        KeyError,
    ) as exc:  # a text or random file fails deep in the unpickler (e.g. "pop from empty list")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (IndexError, ValueError, KeyError)):
            reason = f"not a PyTorch file ({type(exc).__name__} in the unpickler)"
        raise ConfigError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}"
        ) from exc
    if not isinstance(payload, dict) or not {"state_dict", "model", "meta"} <= payload.keys():
        raise ConfigError(
            f"{path} is not a medseg checkpoint: expected keys state_dict, model, meta"
        )
    model = create_model_from_config(payload["model"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"{path}: the weights do not fit the recorded architecture "
            f"{payload['model'].get('arch')!r}: {first}"
        ) from exc
    model.eval()
    return LoadedCheckpoint(model, dict(payload["model"]), dict(payload["meta"]), path)


def write_run_config(run_dir: Path, content: dict[str, Any]) -> None:
    """Write the human-readable ``config.json`` of a run, atomically."""
    with atomic_file(run_dir / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
