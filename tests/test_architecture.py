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
