"""The package's structure, read from the source with :mod:`ast` (nothing is imported).

Import graph: a node is a module of ``src/medseg`` (``pkg/__init__.py`` is the node ``pkg``;
``__main__.py`` files are entry points nobody imports and are left out). An edge is an import
**at module level**: a top-level ``import`` / ``from ... import``, also inside a top-level
``if`` / ``try`` (but not inside ``if TYPE_CHECKING:``, which never runs). Imports inside
functions and methods (the lazy imports that keep ``import medseg.runtime`` free of torch)
are not counted. ``from medseg.a import b`` is an edge to the module ``medseg.a.b`` when that
is a module, else to ``medseg.a``.

Checked here: no cycle between medseg's subpackages (``medseg.data``, ``medseg.plan``, ...),
no cycle between the modules of one folder (module level; a second test counts the imports
inside functions too, because the circles issue 25 removed were all lazy ones), no file of
``src`` over 450 lines, ``rich`` imported only by ``medseg.cli``, and the recipe kind tested
(``size_policy ==``, ``isinstance(..., NnunetRecipe)``) only by the runtime pipelines and the
recipe modules; no ONNX Runtime session or OpenVINO request run outside
``medseg.runtime.backends``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "medseg"
MAX_LINES = 450
#: Files over MAX_LINES whose split is another branch's work (issue 25); remove once merged.
PENDING_SPLIT: dict[str, str] = {}


def _module_name(path: Path) -> str | None:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__main__":
        return None
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if name is not None:
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> Iterator[str]:
    """The modules one import statement names: ``from medseg.a import b`` is ``medseg.a.b``
    when that is a module, else ``medseg.a``; relative imports are skipped."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif node.module and node.level == 0:
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            yield sub if sub in modules else node.module


def _module_level_imports(body: list[ast.stmt]) -> Iterator[str]:
    """Dotted names imported at module level (see the module docstring)."""
    modules = _modules()
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _imported(node, modules)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level_imports(node.body)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)
            yield from _module_level_imports(node.orelse)
            yield from _module_level_imports(node.finalbody)


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@cache
def _edges() -> dict[str, frozenset[str]]:
    modules = _modules()
    edges = {}
    for name, path in modules.items():
        tree = _tree(path)
        targets = {t for t in _module_level_imports(tree.body) if t in modules and t != name}
        edges[name] = frozenset(targets)
    return edges


def _all_imports(tree: ast.Module) -> Iterator[str]:
    """Dotted names imported anywhere in a module (functions included), except under
    ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    modules = _modules()
    for node in ast.walk(tree):
        if id(node) not in skipped and isinstance(node, ast.Import | ast.ImportFrom):
            yield from _imported(node, modules)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _describe(cycle: list[str], edges: dict[str, set[str]], why: dict[tuple[str, str], str]) -> str:
    arrows = [f"{a} -> {b} ({why[a, b]})" for a in cycle for b in sorted(edges[a]) if b in cycle]
    return "; ".join(arrows)


def test_no_import_cycle_between_subpackages() -> None:
    graph: dict[str, set[str]] = {}
    why: dict[tuple[str, str], str] = {}
    for module, targets in _edges().items():
        graph.setdefault(_subpackage(module), set())
        for target in targets:
            a, b = _subpackage(module), _subpackage(target)
            if a != b:
                graph[a].add(b)
                why.setdefault((a, b), f"{module} imports {target}")
    cycles = _cycles(graph)
    assert not cycles, "package import cycles: " + " | ".join(
        _describe(c, graph, why) for c in cycles
    )


def _folder_cycles(edges: dict[str, frozenset[str]]) -> str:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    why: dict[tuple[str, str], str] = {}
    for module, targets in edges.items():
        if modules[module].name == "__init__.py":
            continue  # a package's __init__ re-exports its modules: not a peer of them
        folder = module.rsplit(".", 1)[0]
        graph.setdefault(module, set())
        for target in targets:
            if modules[target].name != "__init__.py" and target.rsplit(".", 1)[0] == folder:
                graph[module].add(target)
                why[module, target] = "imports it"
    return " | ".join(_describe(c, graph, why) for c in _cycles(graph))


def test_no_import_cycle_inside_a_folder() -> None:
    """Module-level imports only (see the module docstring)."""
    cycles = _folder_cycles(_edges())
    assert not cycles, f"in-folder import cycles (module level): {cycles}"


def test_no_import_cycle_inside_a_folder_counting_lazy_imports() -> None:
    """Imports inside functions count too: two modules of one folder that need each other
    (even lazily, ``from medseg.x.b import f  # b imports this module``) are one module or
    share a third."""
    modules = _modules()
    edges = {
        name: frozenset(t for t in _all_imports(_tree(path)) if t in modules and t != name)
        for name, path in modules.items()
    }
    cycles = _folder_cycles(edges)
    assert not cycles, f"in-folder import cycles (counting imports inside functions): {cycles}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checks above can fail: a two-module circle and a three-module one are found."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_cycles(edges)) == [["a", "b"], ["c", "d", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_source_file_over_450_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(SRC)) not in PENDING_SPLIT
    }
    assert not long, f"files over {MAX_LINES} lines (split them into cohesive modules): {long}"


def test_rich_is_imported_only_by_the_cli() -> None:
    """Library returns, CLI renders: ``rich`` (at any level) only under ``medseg/cli``."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "cli"):
            continue
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "rich" or n.startswith("rich.") for n in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, f"rich imported outside medseg/cli: {offenders}"


#: Where the recipe's kind may be tested: the runtime pipelines and the recipe modules.
_KIND_OWNERS = (
    PACKAGE / "runtime" / "pipelines",
    PACKAGE / "transforms" / "preprocessing.py",
    PACKAGE / "transforms" / "nnunet_recipe.py",
)
_KIND_TEST = re.compile(r"size_policy\s*==|isinstance\([^)]*\bNnunetRecipe\b")


@cache
def _kind_tests() -> tuple[str, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path == owner or path.is_relative_to(owner) for owner in _KIND_OWNERS):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _KIND_TEST.search(line.split("#", 1)[0]):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    return tuple(found)


def test_the_recipe_kind_is_asked_not_tested_outside_the_pipelines() -> None:
    """CLI, bench, deploy, export ask the recipe (``pipeline_kind``), never test its type."""
    assert not _kind_tests(), "recipe kind tested outside the pipelines: " + "; ".join(
        _kind_tests()
    )
    assert _KIND_TEST.search('if recipe.size_policy == "window":')
    assert _KIND_TEST.search("isinstance(recipe, (Recipe, NnunetRecipe))")


def _receiver(node: ast.expr) -> str:
    """The dotted text of a call's receiver (``self.session``), lower-cased."""
    return ast.unparse(node).lower()


def test_only_the_backends_run_sessions() -> None:
    # ONNX Runtime sessions and OpenVINO infer requests are run by the runners and backends
    # of medseg.runtime.backends (which check I/O names and time the call), nowhere else.
    medseg = SRC / "medseg"
    backends = medseg / "runtime" / "backends"
    found = []
    for path in sorted(medseg.rglob("*.py")):
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
                found.append(f"{path.relative_to(medseg)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not found, "run through medseg.runtime.backends.session instead:\n" + "\n".join(found)
