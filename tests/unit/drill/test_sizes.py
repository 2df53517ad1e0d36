"""No function in ``drill/`` grows past 60 lines (decorator to last line): the drill loop stays
in phases and a pure stop rule (``drill.runner.Drill``, ``drill.watch``), not one long procedure."""

from __future__ import annotations

import ast
from pathlib import Path

import drill

MAX_LINES = 60
DRILL = Path(drill.__file__).parent


def function_sizes(source: str) -> dict[str, int]:
    """Lines of every function and method in ``source``, nested ones included, by qualified name."""
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                sizes[name] = (child.end_lineno or child.lineno) - first + 1
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def test_the_measure_counts_from_the_decorator_and_into_classes() -> None:
    source = "class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n        return 1\n"
    assert function_sizes(source) == {"A.f": 5, "A.f.g": 2}, "f: its decorator (line 2) to line 6"


def test_no_function_in_drill_exceeds_60_lines() -> None:
    modules = sorted(DRILL.rglob("*.py"))
    assert len(modules) > 10, "the drill package was not found"
    too_long = {
        f"{path.relative_to(DRILL.parent)}:{name}": lines
        for path in modules
        for name, lines in function_sizes(path.read_text()).items()
        if lines > MAX_LINES
    }
    assert not too_long, f"split these by their own sections (at most {MAX_LINES} lines): {too_long}"
