"""Triton ``config.pbtxt`` files: Triton's ``ModelConfig`` protobuf, written as text format.

Only the fields medseg sets are modelled (see Triton's ``model_config.proto``): name, platform
(or backend, for the Python backend), max batch size, inputs and outputs (optional inputs
included), dynamic batching, the instance group and string parameters. Comments (``#``) at
the top say where the model came from; Triton ignores them, and ``ModelConfig`` has no
description field, so the facts a server needs also go into ``parameters``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ModelConfigText", "TensorConfig", "quote"]


def quote(text: str) -> str:
    """A protobuf text-format string literal.

    ``"`` and ``\\`` are backslash-escaped; other non-printable or non-ASCII bytes become
    octal ``\\ooo`` escapes of their UTF-8 encoding, which protobuf's C++ parser (Triton's) and
    the Python ``text_format`` module both read back to the same string.
    """
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class TensorConfig:
    """One ``ModelInput`` / ``ModelOutput``: name, Triton data type and dims (no batch dim).

    ``optional`` (inputs only): a request may leave the input out.
    """

    name: str
    dims: tuple[int, ...]
    data_type: str = "TYPE_FP32"
    optional: bool = False

    def render(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        optional = "\n    optional: true" if self.optional else ""
        return (
            f"  {{\n    name: {quote(self.name)}\n    data_type: {self.data_type}\n"
            f"    dims: [ {dims} ]{optional}\n  }}"
        )


@dataclass(frozen=True)
class ModelConfigText:
    """What medseg writes into a ``config.pbtxt``.

    Attributes:
        name: the model name (the folder name in the repository).
        platform: ``"onnxruntime_onnx"`` or ``"tensorrt_plan"``; ``""`` with ``backend``.
        max_batch_size: the largest batch Triton forms; dims then exclude the batch axis.
            0: no batching (dims are the whole tensor).
        inputs, outputs: the tensors.
        preferred_batch_size: batch sizes the dynamic batcher aims for; empty: no
            ``dynamic_batching`` block.
        max_queue_delay_us: how long the dynamic batcher may wait to fill a batch.
        instance_kind: ``"KIND_GPU"`` or ``"KIND_CPU"``; ``instance_count`` copies.
        parameters: string parameters (``key: value``), for the client and for operators.
        comments: ``#`` lines written above the config.
        backend: a backend name (``"python"``) instead of a ``platform``.
    """

    name: str
    platform: str
    max_batch_size: int
    inputs: Sequence[TensorConfig]
    outputs: Sequence[TensorConfig]
    preferred_batch_size: Sequence[int]
    max_queue_delay_us: int
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1
    parameters: dict[str, str] = field(default_factory=dict)
    comments: Sequence[str] = ()
    backend: str = ""

    def render(self) -> str:
        """The ``config.pbtxt`` text."""
        lines = [f"# {c}".rstrip() for c in self.comments]
        lines.append(f"name: {quote(self.name)}")
        if self.backend:
            lines.append(f"backend: {quote(self.backend)}")
        if self.platform:
            lines.append(f"platform: {quote(self.platform)}")
        lines += [
            f"max_batch_size: {self.max_batch_size}",
            "input [\n" + ",\n".join(t.render() for t in self.inputs) + "\n]",
            "output [\n" + ",\n".join(t.render() for t in self.outputs) + "\n]",
        ]
        if self.preferred_batch_size:
            preferred = ", ".join(str(b) for b in self.preferred_batch_size)
            lines.append(
                "dynamic_batching {\n"
                f"  preferred_batch_size: [ {preferred} ]\n"
                f"  max_queue_delay_microseconds: {self.max_queue_delay_us}\n"
                "}"
            )
        lines.append(
            "instance_group [\n"
            f"  {{\n    kind: {self.instance_kind}\n    count: {self.instance_count}\n  }}\n]"
        )
        for key, value in self.parameters.items():
            entry = f"  key: {quote(key)}\n  value: {{ string_value: {quote(value)} }}"
            lines.append(f"parameters {{\n{entry}\n}}")
        return "\n".join(lines) + "\n"
