"""The layout's rules, read from the code's imports (ast, nothing is imported or run).

Layers, bottom to top; a module may import its own package, or a package of a lower
layer, never one beside it or above it (docs/architecture.md, "Layout"):

    maas/                         command line, supervisor, local broker
    api/  processors/             processes
    ledger/  memes/               pure domains
    core/                         shared base: settings, topics, ids, clock, logs, blobs
    schemas/                      event contracts

The domains are pure: they read no clock, open no socket, talk to no Kafka and no HTTP,
so the same code runs live, in replay and in tests. Of the base they may use only what
is pure too (``core.ids``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("schemas",),
    ("core",),
    ("ledger", "memes"),
    ("api", "processors"),
    ("maas",),
)
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
DOMAINS = ("ledger", "memes")
PURE_BASE = frozenset({"core.ids"})
# I/O, Kafka, HTTP, processes and the clock: what makes code depend on the world.
IMPURE_MODULES = frozenset(
    {
        "aiohttp",
        "aiokafka",
        "asyncio",
        "boto3",
        "confluent_kafka",
        "datetime",
        "fastapi",
        "faust",
        "http",
        "httpx",
        "requests",
        "rocksdict",
        "socket",
        "starlette",
        "subprocess",
        "time",
        "urllib",
        "uvicorn",
    }
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> Iterator[Import]:
    """Every import of the file, module-level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # "from pkg import mod" imports pkg.mod when that is a module of ours.
                sub = f"{node.module}.{alias.name}"
                target = sub if _is_module(sub) else node.module
                yield Import(module, target, node.lineno)


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _sources() -> list[Path]:
    return sorted(p for package in LAYER_OF for p in (REPO / package).rglob("*.py"))


IMPORTS = [imp for path in _sources() for imp in _imports(path, _module_name(path))]
OURS = [imp for imp in IMPORTS if imp.target.split(".")[0] in LAYER_OF]


def test_the_layout_is_read_whole() -> None:
    assert {imp.module.split(".")[0] for imp in IMPORTS} == set(LAYER_OF)


def test_imports_only_point_down() -> None:
    wrong = []
    for imp in OURS:
        own, other = imp.module.split(".")[0], imp.target.split(".")[0]
        if own != other and LAYER_OF[other] >= LAYER_OF[own]:
            wrong.append(str(imp))
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_circles() -> None:
    graph: dict[str, set[str]] = {}
    for imp in OURS:
        if imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("domain", DOMAINS)
def test_domains_do_no_io_and_read_no_clock(domain: str) -> None:
    wrong = []
    for imp in IMPORTS:
        if imp.module.split(".")[0] != domain:
            continue
        top = imp.target.split(".")[0]
        if top in IMPURE_MODULES or (top == "core" and imp.target not in PURE_BASE):
            wrong.append(str(imp))
    assert not wrong, f"{domain}/ must stay pure:\n" + "\n".join(wrong)


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    """The checks above pass because the code is right, not because they see nothing."""
    source = tmp_path / "probe.py"
    source.write_text("import time\nfrom api import deps\n")
    found = {imp.target for imp in _imports(source, "probe")}
    assert found == {"time", "api.deps"}
