"""The converter's modules import each other without a cycle (type-only imports included): the
component writers take their checked plan, never the Checkpoint that checks them."""

import ast
from pathlib import Path

CONVERT = Path(__file__).resolve().parent.parent / "convert"


def _package_imports(path: Path) -> set[str]:
    """Sibling modules that `path` imports (`from .x import ...`, `from . import x`), at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_convert_has_no_import_cycle():
    graph = {p.stem: _package_imports(p) for p in CONVERT.glob("*.py") if p.stem != "__init__"}
    # the walk itself must see the package's imports (a parser that saw nothing would pass vacuously)
    assert "checkpoint" in graph["omni_gguf"] and "audio_gguf" in graph["checkpoint"]
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_reports_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
