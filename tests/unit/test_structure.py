"""Structure rules of the source tree, checked on its syntax (fast: no import)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "medseg"


def _receiver(node: ast.expr) -> str:
    """The dotted text of a call's receiver (``self.session``), lower-cased."""
    return ast.unparse(node).lower()


def test_only_the_backends_run_sessions() -> None:
    # ONNX Runtime sessions and OpenVINO infer requests are run by the runners and backends
    # of medseg.runtime.backends (which check I/O names and time the call), nowhere else.
    backends = SRC / "runtime" / "backends"
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if backends in path.parents:
            continue
        text = path.read_text()
        if ".run(" not in text and "infer" not in text:  # nothing to look at: skip the parse
            continue
        for node in ast.walk(ast.parse(text, str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            attr, receiver = node.func.attr, _receiver(node.func.value)
            first = node.args[0] if node.args else None
            session_run = attr == "run" and (
                "session" in receiver or (isinstance(first, ast.Constant) and first.value is None)
            )
            openvino = attr == "create_infer_request" or (attr == "infer" and "request" in receiver)
            if session_run or openvino:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not found, "run through medseg.runtime.backends.session instead:\n" + "\n".join(found)
