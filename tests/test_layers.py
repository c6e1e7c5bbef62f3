"""The package follows the data: stages in order, no import cycles, no upward imports.

Read from the source (every `import` statement, including the deferred ones inside functions and
under `TYPE_CHECKING`), so a cycle held together by a late import is still a cycle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"

# Lowest first. A module may import modules of its own layer or of layers below it.
LAYERS: list[tuple[str, ...]] = [
    # harness.config reads the `backend:` section with the models the backend registry names
    # (each kind's config module, pydantic only): they sit below it, beside the shared records.
    ("harness", "harness.errors", "harness.locations", "harness.records"),
    (
        "harness.backends.settings",
        "harness.backends.hosted.config",
        "harness.backends.local.config",
        "harness.backends.openai.config",
        "harness.backends.together.config",
        "harness.backends.registry",
    ),
    ("harness.config",),
    ("harness.scoring",),  # metrics from predictions, on top of the records
    ("harness.data",),
    ("harness.backends",),
    ("harness.tracking",),
    ("harness.sweep",),
    ("harness.report",),
    ("harness.handoff",),
    ("harness.cli", "harness.__main__"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The harness modules `path` imports (a `from pkg import name` of a submodule counts)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("harness"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
            module = node.module or ""
            submodules = {f"{module}.{a.name}" for a in node.names} & known
            found.update(submodules or {module})
    return found & known


def _layer(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "harness" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in _modules() if _layer(m) < 0]
    assert unplaced == [], f"add these modules to LAYERS: {unplaced}"


def test_no_upward_imports() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its entry point is not an edge back into the package.
    graph = {
        module: {t for t in targets if not (t.startswith(module + ".") and _is_package(module))}
        for module, targets in _graph().items()
    }
    cycles = _cycles(graph)
    assert cycles == [], f"import cycles: {cycles}"


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").is_file()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_stay_small(module: str) -> None:
    lines = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= 420, f"{module} has {lines} lines; split it by concern"


def test_the_top_level_stays_small() -> None:
    """A new engineer reads the top level first: packages by stage and the shared vocabulary,
    at most 14 entries (a new module belongs in a package)."""
    entries = [p.name for p in ROOT.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 14, sorted(entries)
