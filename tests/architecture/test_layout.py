"""The layout docs/architecture.md describes: one-way dependencies between packages, small modules."""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
# a module may import from its own package and from packages of lower rank only
RANKS = {
    "edge_sdk.clock": 0,
    "edge_sdk.files": 0,
    "edge_sdk.protocol": 1,
    "edge_sdk.transport": 1,
    "edge_sdk.training": 1,
    "edge_sdk.privacy": 2,
    "edge_sdk.chain": 3,
    "edge_sdk.node": 4,
    "edge_sdk.cli": 5,
    "coordinator.models": 10,
    "coordinator.miner": 10,
    "coordinator.task": 11,
    "coordinator.tools": 12,
    "coordinator.emulator": 13,
    "coordinator.cli": 14,
}
MAX_LINES = 400


def _modules():
    for top in ("edge_sdk", "coordinator"):
        for path in sorted((REPO / top).rglob("*.py")):
            yield path, ".".join(path.relative_to(REPO).with_suffix("").parts)


def _package(module: str) -> str | None:
    return next((p for p in sorted(RANKS, key=len, reverse=True) if module == p or module.startswith(p + ".")), None)


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module.count(".") >= 1 else [f"{node.module}.{a.name}" for a in node.names]
            yield from names
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_package_has_a_rank():
    unranked = [m for _, m in _modules() if not m.endswith("__init__") and _package(m) is None]
    assert not unranked, f"modules outside the documented packages: {unranked}"


def test_dependencies_point_one_way():
    wrong = []
    for path, module in _modules():
        own = _package(module)
        for imported in _imports(path):
            target = _package(imported)
            if target is None or target == own or own is None:
                continue
            if RANKS[target] >= RANKS[own]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_sdk_never_imports_the_coordinator():
    wrong = [
        m for path, m in _modules() if m.startswith("edge_sdk") for i in _imports(path) if i.startswith("coordinator")
    ]
    assert not wrong


def test_modules_stay_small():
    big = {m: n for path, m in _modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
