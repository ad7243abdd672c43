"""The package's shape, checked from its source: no import cycles, the layers import only downwards, and no
module grows past 400 lines (docs/architecture.md states the rules; this file enforces them).

Imports are read with ``ast`` from every module of ``vsp_assert/`` and ``plugins/`` (installed as
``vsp_assert.plugins``), wherever they sit: at module level, inside functions (lazy) and under
``if TYPE_CHECKING:``. A lazy or type-only import still ties the two modules together for the reader and for the
next refactor. ``from package import name`` resolves to the module the package's ``__init__`` takes ``name``
from, so the public facade (``from vsp_assert import Scratchpad``) counts as an import of
``vsp_assert.checks.fluent`` and cannot hide a layer violation. Nothing is imported to run these checks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"vsp_assert": ROOT / "vsp_assert", "vsp_assert.plugins": ROOT / "plugins"}
LINE_LIMIT = 400

# Which layer may not import which: a module under the key must not import anything under the values.
# The errors and the file writer are the floor; the engine (and the adapters, which are engine plug-ins) sits on
# them; the checks read the engine; concept building reads the engine only; the renderers format what the engine
# and the checks produced; the pytest plugin and the CLI sit on top.
_ABOVE_ENGINE = ("vsp_assert.checks", "vsp_assert.render", "vsp_assert.pytest_plugin", "vsp_assert.cli",
                 "vsp_assert.explore")
FORBIDDEN = {
    "vsp_assert.errors": ("vsp_assert.engine", "vsp_assert.plugins", "vsp_assert.concepts", "vsp_assert.shapes",
                          "vsp_assert.testing", *_ABOVE_ENGINE),
    "vsp_assert.files": ("vsp_assert.engine", "vsp_assert.plugins", "vsp_assert.concepts", "vsp_assert.shapes",
                         "vsp_assert.testing", *_ABOVE_ENGINE),
    "vsp_assert.engine": _ABOVE_ENGINE,
    "vsp_assert.plugins": _ABOVE_ENGINE,
    "vsp_assert.concepts": _ABOVE_ENGINE,
    "vsp_assert.checks": ("vsp_assert.render", "vsp_assert.pytest_plugin", "vsp_assert.cli", "vsp_assert.explore"),
    "vsp_assert.render": ("vsp_assert.pytest_plugin", "vsp_assert.cli", "vsp_assert.explore"),
    # the explorer sits beside the CLI (which starts it), above the engine, the checks and the renderers
    "vsp_assert.explore": ("vsp_assert.pytest_plugin", "vsp_assert.cli"),
}

# Modules over LINE_LIMIT lines when this check was written, with their size then. An entry may only shrink:
# the test fails when a listed module grows past its figure, and when it is back under the limit (delete the
# entry then). Do not add to this list; split the module instead.
OVER_LIMIT_ALLOWED: dict[str, int] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted (resolved through package re-exports)
    line: int
    where: str  # "path:line" for messages


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _known(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (``vsp_assert.engine.sae.SAE`` → the module)."""
    while dotted:
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def _raw_imports(name: str) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import statement anywhere in the module."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name, node.lineno


def _exports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` takes from our modules: ``{"Scratchpad": "vsp_assert.checks.fluent"}``."""
    out = {}
    for module, imported, _ in _raw_imports(package):
        target = _known(module)
        if imported is not None and target is not None and target != package:
            out[imported] = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else target
    return out


EXPORTS = {name: _exports(name) for name in MODULES if _is_package(name)}


def _resolve(module: str, imported: str | None) -> str | None:
    if imported is not None and f"{module}.{imported}" in MODULES:
        return f"{module}.{imported}"  # a submodule: from vsp_assert.engine import sae
    target = _known(module)
    if target is not None and imported is not None and target == module and _is_package(target):
        return EXPORTS[target].get(imported, target)  # a re-export: from vsp_assert import Scratchpad
    return target


def _imports() -> list[Import]:
    found = []
    for name, path in MODULES.items():
        for module, imported, line in _raw_imports(name):
            target = _resolve(module, imported)
            # a module's own ancestors are imported by Python before it anyway; they are not an edge
            if target is None or target == name or name.startswith(target + "."):
                continue
            found.append(Import(name, target, line, f"{path.relative_to(ROOT)}:{line}"))
    return found


IMPORTS = _imports()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_package_and_its_lazy_imports() -> None:
    assert {"vsp_assert.engine.trace", "vsp_assert.checks.fluent", "vsp_assert.cli", "vsp_assert.plugins.llava"} \
        <= set(MODULES)
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("vsp_assert", "vsp_assert.checks.fluent") in edges  # a TYPE_CHECKING import in the facade
    assert ("vsp_assert.cli.run", "vsp_assert.checks.fluent") in edges  # lazy, through the facade's re-export
    assert ("vsp_assert.cli", "vsp_assert.cli.run") in edges  # lazy, inside build_parser


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        edges[imp.source].add(imp.target)
    cycles = _cycles(edges)
    where = {(i.source, i.target): i.where for i in IMPORTS}
    lines = []
    for cycle in cycles:
        members = set(cycle)
        lines.append(" <-> ".join(cycle) + ": " + ", ".join(
            f"{s} → {t} ({where[s, t]})" for s in cycle for t in sorted(edges[s] & members)))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_layers_import_only_downwards() -> None:
    violations = [
        f"{imp.where}: {imp.source} imports {imp.target} ({layer} must not import {banned})"
        for imp in IMPORTS
        for layer, forbidden in FORBIDDEN.items() if _in(imp.source, layer)
        for banned in forbidden if _in(imp.target, banned)
    ]
    assert not violations, "layer violations (see docs/architecture.md):\n" + "\n".join(violations)


def test_no_module_over_the_line_limit() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    problems = [f"{n}: {sizes[n]} lines (limit {LINE_LIMIT}; split it)" for n in sorted(sizes)
                if sizes[n] > LINE_LIMIT and n not in OVER_LIMIT_ALLOWED]
    for name, allowed in sorted(OVER_LIMIT_ALLOWED.items()):
        if name not in sizes:
            problems.append(f"{name}: in OVER_LIMIT_ALLOWED but no longer exists (delete the entry)")
        elif sizes[name] > allowed:
            problems.append(f"{name}: {sizes[name]} lines, grown past its allowed {allowed} (split it)")
        elif sizes[name] <= LINE_LIMIT:
            problems.append(f"{name}: {sizes[name]} lines, now within the limit (delete its allow-list entry)")
    assert not problems, "\n".join(problems)


def test_architecture_doc_names_only_paths_that_exist() -> None:
    """Every `folder/module.py` path docs/architecture.md names (relative to the repository, the package or
    docs/) exists, so the map of the code stays true when modules move."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = {m.rstrip("/") for m in re.findall(r"`([\w*./]+/[\w*./]*)`", text)}
    named |= set(re.findall(r"\b((?:engine|checks|render|pytest_plugin|cli|concepts|shapes|testing)/[\w*]+\.py)",
                            text))
    assert len(named) > 30
    bases = (ROOT, ROOT / "vsp_assert", ROOT / "docs")
    missing = sorted(p for p in named if not any(next(base.glob(p), None) for base in bases))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
