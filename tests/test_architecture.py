"""The package's shape: no import cycles, imports point down the layers of
docs/architecture.md, and that page lists exactly the package's modules."""

from __future__ import annotations

import re
from pathlib import Path

import imports_graph as g

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    rows = re.findall(r"^\| `(dept[\w.]*)` \| (\d) \|", ARCHITECTURE.read_text(), flags=re.M)
    return {name: int(layer) for name, layer in rows}


def test_no_import_cycle_inside_the_package():
    assert g.cycles(g.graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert g.cycles(edges) == [["a", "b", "c"]]


def test_function_level_imports_count(tmp_path, monkeypatch):
    (tmp_path / "dept").mkdir()
    (tmp_path / "dept" / "__init__.py").write_text("")
    (tmp_path / "dept" / "low.py").write_text("def f():\n    from .high import x\n")
    (tmp_path / "dept" / "high.py").write_text("from . import low\n")
    monkeypatch.setattr(g, "PACKAGE_DIR", tmp_path / "dept")
    assert g.cycles(g.graph()) == [["dept.high", "dept.low"]]


def test_architecture_page_lists_exactly_the_modules():
    assert sorted(documented_layers()) == sorted(g.modules())


def test_imports_point_to_the_same_or_a_lower_layer():
    layers = documented_layers()
    upward = [f"{a} (layer {layers[a]}) imports {b} (layer {layers[b]})"
              for a, targets in g.graph().items() for b in targets if layers[b] > layers[a]]
    assert upward == []


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dept"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def long_functions(root: Path, limit: int) -> list[str]:
    """'file:line name (n lines)' of every function or method longer than `limit` lines."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []


def test_the_long_function_finder_finds_one(tmp_path):
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body}")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == [f"m.py:6 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_module_is_longer_than_400_lines():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > MAX_FILE_LINES} == {}
