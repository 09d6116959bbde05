"""Rules for the test code itself, checked on its source: what tests and benchmarks share lives in
`tests/support/` (no test module imports another), and no test sleeps a fixed time and then
asserts: it waits for the event (`tests.support.waiting.eventually`), or says why it sleeps."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")])
SLEEPS = {"sleep", "wait_for_timeout"}  # time.sleep, asyncio.sleep, Playwright's page.wait_for_timeout


def foreign_imports(source: str) -> list[str]:
    """Imports of test code from outside `tests.support` (and relative imports), as written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.ImportFrom) and _is_test_code(node.module or ""):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _is_test_code(a.name)]
    return found


def _is_test_code(module: str) -> bool:
    return (module == "tests" or module.startswith("tests.")) and not module.startswith("tests.support")


def sleeps_before_asserts(source: str) -> list[str]:
    """Fixed sleeps without a comment on their line that are followed directly by an `assert`,
    and polling loops (a loop whose body ends in a sleep) followed directly by an `assert`."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for stmt, after in itertools.pairwise(block):
                if not isinstance(after, ast.Assert):
                    continue
                sleep = stmt if _is_sleep(stmt) else _loop_ending_in_sleep(stmt)
                if sleep is not None and "#" not in lines[sleep.lineno - 1]:
                    kind = "a fixed sleep" if sleep is stmt else "a polling loop"
                    found.append(f"line {sleep.lineno}: {kind} before the assert on line {after.lineno}")
    return found


def _is_sleep(stmt: ast.stmt) -> bool:
    value = stmt.value if isinstance(stmt, ast.Expr) else None
    if isinstance(value, ast.Await):
        value = value.value
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) in SLEEPS


def _loop_ending_in_sleep(stmt: ast.stmt) -> ast.stmt | None:
    if isinstance(stmt, ast.For | ast.AsyncFor | ast.While) and _is_sleep(stmt.body[-1]):
        return stmt.body[-1]
    return None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_test_code_imports_shared_code_only_from_tests_support(path: Path) -> None:
    found = foreign_imports(path.read_text())
    assert found == [], f"{path.relative_to(ROOT)} imports test code; move it to tests/support/: {found}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_fixed_sleep_before_an_assert(path: Path) -> None:
    found = sleeps_before_asserts(path.read_text())
    assert found == [], (
        f"{path.relative_to(ROOT)}: wait for the event instead (tests.support.waiting.eventually), "
        f"or say on the sleep's line why it must sleep: {found}"
    )


def test_the_rules_catch_what_they_are_for() -> None:
    assert foreign_imports("from tests.collab.test_workers import open_client") != []
    assert foreign_imports("import tests.procs") != []
    assert foreign_imports("from .test_nbio import IMPORTED") != []
    assert foreign_imports("from tests.support.yclient import open_client\nimport tests.support") == []
    slept = "async def t():\n    await asyncio.sleep(0.5)\n    assert done\n"
    assert sleeps_before_asserts(slept) != []
    assert sleeps_before_asserts(slept.replace("(0.5)", "(0.5)  # nothing may arrive meanwhile")) == []
    polled = "def t():\n    for _ in range(9):\n        if done():\n            break\n        sleep(0.1)\n"
    assert sleeps_before_asserts(polled + "    assert done()\n") != []
    assert sleeps_before_asserts("def t(page):\n    page.wait_for_timeout(300)\n    assert x\n") != []
    assert sleeps_before_asserts("def t():\n    time.sleep(1)\n    check()\n") == []
