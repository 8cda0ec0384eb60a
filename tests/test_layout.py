"""The package's shape (shared/STYLE.md 12): no import cycle among megalang's modules, counting imports inside
functions, the torch-free store at the bottom, and no module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "megalang"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, source: str | None = None) -> set[str]:
    """The megalang modules `name` imports anywhere in its file (module level or inside functions); `source`
    stands in for the file's text."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8") if source is None else source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {m for m in found if m in MODULES and m not in (name, "megalang")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_three_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_function_local_imports_are_counted():
    inside = "def f():\n    if True:\n        from megalang.train import trainer\n        import megalang.cli.app\n"
    assert imports_of("megalang.store.files", inside) == {"megalang.train.trainer", "megalang.cli.app"}
    assert imports_of("megalang.store.files", "def f():\n    pass\n") == set()


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_store_is_the_bottom_layer():
    """store/ imports no torch and nothing of megalang above it (errors and the version only)."""
    for name, path in MODULES.items():
        if not name.startswith("megalang.store"):
            continue
        allowed = {m for m in imports_of(name) if m.startswith("megalang.store") or m == "megalang.errors"}
        assert imports_of(name) == allowed, f"{name} imports {sorted(imports_of(name) - allowed)}"
        nodes = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, (ast.Import, ast.ImportFrom))]
        imported = {alias.name.split(".")[0] for node in nodes for alias in node.names}
        imported |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
        banned = imported & {"torch", "numpy", "transformers"}
        assert not banned, f"{name} imports {sorted(banned)}"


LAYERS = {  # docs/architecture.md: a module may import its own layer and those below
    1: ("store", "errors", "jsonl"),
    2: ("data", "model", "parallel", "monitor", "config", "safe_load", "torch_compat"),
    4: ("cli",),
    5: ("__main__",),
}


def layer_of(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    return next((n for n, tops in LAYERS.items() if top in tops), 3)  # 3: train, evaluate, plan, export, …


def test_layer_of_reads_the_table():
    assert [layer_of(m) for m in ("megalang.store.files", "megalang.data.pipeline", "megalang.train.trainer",
                                  "megalang.cli.app")] == [1, 2, 3, 4]


def test_lower_layers_never_import_higher_ones():
    upward = [f"{name} → {dep}" for name in sorted(MODULES) for dep in sorted(imports_of(name))
              if layer_of(dep) > layer_of(name)]
    assert upward == [], "imports against the layers (docs/architecture.md): " + "; ".join(upward)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]}: {lines} lines; split it by concern (limit {MAX_LINES})"
