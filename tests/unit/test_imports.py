"""The import graph of ``s3relay``: no cycles (type-only imports count too),
and the pure modules stay pure.

Read from the source with ``ast``, so an import under ``TYPE_CHECKING`` or
inside a function is an edge like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "s3relay"

#: Modules that must import nothing from ``twisted.internet`` (or the
#: relay's Twisted shells): formats, parsers, decisions.
PURE = (
    "s3relay.s3",
    "s3relay.access",
    "s3relay.body.plan",
    "s3relay.body.chunked",
    "s3relay.body.digests",
    "s3relay.body.multidelete",
    "s3relay.http.headers",
    "s3relay.http.limits",
    "s3relay.http.target",
    "s3relay.upstream.forward",
    "s3relay.upstream.routes",
    "s3relay.upstream.settings",
    "s3relay.upstream.transforms",
    "s3relay.crypt.keys",
    "s3relay.crypt.layout",
    "s3relay.crypt.listings",
    "s3relay.crypt.rules",
    "s3relay.crypt.segments",
    "s3relay.crypt.settings",
    "s3relay.crypt.writing",
    "s3relay.credentials.spec",
    "s3relay.credentials.answers",
    "s3relay.credentials.breaker",
    "s3relay.credentials.base",
    "s3relay.credentials.static",
    "s3relay.ops.keylog",
    "s3relay.listen.tls",
    "s3relay.workers.config",
    "s3relay.config",
    "s3relay.ini",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``s3relay`` modules ``name`` imports, wherever the import stands."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: imports(name, path.read_text(), path.name == "__init__.py", known)
        for name, path in found.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_type_only_and_deferred_imports_are_edges() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import c\n"
        "if TYPE_CHECKING:\n    from .b import X\n"
        "def f():\n    from s3relay.d.e import Y\n"
    )
    known = {"s3relay.p.a", "s3relay.p.b", "s3relay.p.c", "s3relay.d.e"}
    assert imports("s3relay.p.a", source, False, known) == {
        "s3relay.p.b", "s3relay.p.c", "s3relay.d.e"
    }


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_import_no_twisted_runtime(pure: str) -> None:
    edges = graph()
    for name, path in modules().items():
        if name != pure and not name.startswith(pure + "."):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("twisted.internet"), (name, node.module)
                assert not node.module.startswith("twisted.web"), (name, node.module)
        impure = {m for m in edges[name] if not any(m == p or m.startswith(p + ".") for p in PURE)}
        assert not impure, f"{name} imports {sorted(impure)}, which are not pure"


def test_every_subpackage_is_packaged() -> None:
    """setup.cfg names packages one by one: a new subpackage left out of it
    installs from a checkout but is missing from the wheel and the .deb."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(PACKAGE.parent / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    found = {
        ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        for init in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
