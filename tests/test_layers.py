"""The shape of the package (issue #15): what import-linter cannot see.

The layers themselves are an import-linter contract (``nox -s lint``); these tests keep
the rules that are about text, not imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aisix_async"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|PRAGMA|BEGIN|COMMIT|SAVEPOINT)\b")


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String literals that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_sql_is_written_only_in_the_campaigns_sql_module() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {text[:60]!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "sql.py" and "emulator" not in path.parts
        for line, text in _code_strings(path)
        if SQL.search(text)
    ]
    assert found == []


def test_no_module_reads_another_objects_private_members() -> None:
    # ``self._x`` and ``cls._x`` are an object's own; ``other._x`` is reaching in.
    reaching = re.compile(r"(?<![\w.])(?!self\b|cls\b)([a-z_][a-z0-9_]*)\._[a-z][a-z0-9_]*")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "emulator" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        # A class's own methods may use another instance of it (``journal._load()`` in
        # ``Journal.open``): names of the file's classes, in snake case, are its own.
        own = {
            re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            for name in re.findall(r"^class (\w+)", text, re.M)
        }
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if code.lstrip().startswith(("from ", "import ")) or '"' in code or "'" in code:
                continue
            if "``" in code:  # a docstring naming a module
                continue
            for match in reaching.finditer(code):
                if match.group(1) not in ("os", "sys", *own):
                    found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert found == []
