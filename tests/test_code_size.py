"""Issue 17 Must-show: no file in medrec/ or apps/ over 450 lines, no function over 50 lines.

Measured with `ast` (a function's span runs from its `def` or first decorator to its last line,
docstring included), so the check is the same on every machine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 50


def python_files() -> list[Path]:
    return sorted(p for d in ("medrec", "apps") for p in (ROOT / d).rglob("*.py"))


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of each function longer than MAX_FUNCTION_LINES."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    if child.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                        out.append((name, first, child.end_lineno - first + 1))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def test_the_checker_measures_what_it_claims():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def line + 50 = 51 lines
    source = f"class A:\n    @staticmethod\n    def ok():\n        pass\n\ndef long():\n{body}\n"
    assert long_functions(source) == [("long", 6, MAX_FUNCTION_LINES + 1)]
    assert long_functions(f"def fits():\n{body[: body.rindex(chr(10))]}\n") == []
    assert python_files() and all(p.suffix == ".py" for p in python_files())


def test_no_file_over_450_lines_and_no_function_over_50():
    problems = []
    for path in python_files():
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        n = len(source.splitlines())
        if n > MAX_FILE_LINES:
            problems.append(f"{rel}: {n} lines (max {MAX_FILE_LINES})")
        problems += [f"{rel}:{line} {name}: {length} lines (max {MAX_FUNCTION_LINES})"
                     for name, line, length in long_functions(source)]
    assert not problems, "\n".join(problems)
