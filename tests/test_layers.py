"""The import graph between the app's files: no circles, imports point down the layers.

Layers, bottom first (a file may import its own layer and the ones below):

  0 base       config's helpers (settings, log format, security headers, ...)
  1 accounts   the user model, allauth adapter
  2 recorder   audit's recorder (`audit/log.py`, `audit/models.py`): every action records in
               its own transaction, and the recorder imports nothing above its own model
  3 notebooks  models, access, actions, sharing, the document schema, the update log
  4 collab     the real-time engine
  5 kernels    the kernel bridge
  6 top        pages (views, urls, admin, audit's activity pages), process entry points
               (`config/asgi.py`, `config/urls.py`, `config/health.py`, management commands),
               bench/ and scripts/

`python tests/test_layers.py` prints the counts (circles, imports back up, function-level
imports across apps, largest modules).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("accounts", "audit", "collab", "config", "kernels", "notebooks")
SCANNED = (*APPS, "bench", "scripts")

# The imports allowed to run back up a layer, with the reason (also in docs/architecture.md).
ALLOWED_UP: dict[tuple[str, str], str] = {}

TOP_FILES = {
    "config/asgi.py",
    "config/urls.py",
    "config/health.py",
    "config/views.py",
    "audit/activity.py",
    "audit/present.py",
    "audit/views.py",
    "kernels/pages.py",
    "kernels/views.py",
    "accounts/views.py",
    "accounts/forms.py",
    "accounts/adapter.py",  # allauth loads it by name from settings; it builds links as sharing does
}
RECORDER_FILES = {"audit/__init__.py", "audit/apps.py", "audit/log.py", "audit/models.py"}
LAYER_NAMES = ["base", "accounts", "recorder", "notebooks", "collab", "kernels", "top"]


def layer_of(path: str) -> int:
    """The layer of a repository-relative file path."""
    parts = path.split("/")
    name = parts[-1]
    if (
        path in TOP_FILES
        or parts[0] in ("bench", "scripts")
        or "management" in parts
        or "views" in parts
        or name in ("urls.py", "admin.py", "routing.py")
    ):
        return 6
    if path in RECORDER_FILES:
        return 2
    return {"config": 0, "accounts": 1, "audit": 6, "notebooks": 3, "collab": 4, "kernels": 5}[parts[0]]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool
    commented: bool


def project_files() -> list[str]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in rel and "sandbox_entry" not in rel:
                files.append(rel)
    return files


def module_file(module: str, known: set[str]) -> str | None:
    """The file a dotted module name lives in, if it is one of ours."""
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in known:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, source: str, known: set[str]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        module = node.module or ""
        if node.level:
            package = source.rsplit("/", node.level)[0].replace("/", ".")
            module = f"{package}.{module}" if module else package
        # `from pkg import mod` imports the module pkg/mod.py when there is one.
        names = [f"{module}.{alias.name}" for alias in node.names] + [module]
    found = set()
    for name in names:
        target = module_file(name, known)
        if target is not None and target != source:
            found.add(target)
    # `from pkg.mod import x` also names pkg.mod; drop the package when a module matched.
    if isinstance(node, ast.ImportFrom) and len(found) > 1:
        found.discard(module_file(node.module or "", known) or "")
    return found


def _has_comment(lines: list[str], lineno: int) -> bool:
    here = lines[lineno - 1]
    before = lines[lineno - 2].strip() if lineno >= 2 else ""
    return "#" in here or before.startswith("#")


def edges_of(source: str, known: set[str]) -> list[Edge]:
    text = (ROOT / source).read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=source)
    found: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in sorted(_targets(child, source, known)):
                    commented = _has_comment(lines, child.lineno)
                    found.append(Edge(source, target, child.lineno, in_function, commented))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> list[Edge]:
    files = project_files()
    known = set(files)
    return [edge for source in files for edge in edges_of(source, known)]


def circles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one file (Tarjan)."""
    succ: dict[str, set[str]] = {}
    for edge in edges:
        succ.setdefault(edge.source, set()).add(edge.target)
        succ.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(succ[node]):
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for node in sorted(succ):
        if node not in index:
            strong(node)
    return groups


def upward(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if layer_of(e.target) > layer_of(e.source)]


def app_of(path: str) -> str:
    return path.split("/")[0]


def hidden_cross_app(edges: list[Edge]) -> list[Edge]:
    """Imports inside functions from one app into another (bench/ and scripts/ are no apps:
    they import models only after `django.setup()`)."""
    return [
        e
        for e in edges
        if e.in_function and app_of(e.source) in APPS and app_of(e.source) != app_of(e.target)
    ]


def largest_modules(count: int = 5) -> list[tuple[int, str]]:
    sizes = []
    for path in project_files():
        if app_of(path) in APPS:
            sizes.append((len((ROOT / path).read_text().splitlines()), path))
    return sorted(sizes, reverse=True)[:count]


def _show(edge: Edge) -> str:
    where = "in a function" if edge.in_function else "at the top"
    return f"{edge.source}:{edge.line} -> {edge.target} ({where})"


# --- the tests ---------------------------------------------------------------------------


def test_the_layer_table_knows_every_file():
    for path in project_files():
        assert 0 <= layer_of(path) < len(LAYER_NAMES), path


def test_no_import_circle_between_files():
    assert circles(graph()) == []


def test_at_most_one_import_runs_back_up_a_layer_and_it_is_named():
    ups = upward(graph())
    unexplained = [_show(e) for e in ups if (e.source, e.target) not in ALLOWED_UP]
    assert unexplained == []
    assert len({(e.source, e.target) for e in ups}) <= 1


def test_every_function_level_import_across_apps_says_why():
    hidden = hidden_cross_app(graph())
    silent = [_show(e) for e in hidden if not e.commented]
    assert silent == []


def test_the_checks_see_a_circle_an_upward_import_and_a_silent_hidden_import(tmp_path):
    """The helpers themselves: a made-up graph with each fault is caught."""
    a = Edge("collab/a.py", "collab/b.py", 1, False, False)
    b = Edge("collab/b.py", "collab/a.py", 1, True, False)
    assert circles([a, b]) == [["collab/a.py", "collab/b.py"]]
    up = Edge("notebooks/actions.py", "collab/fanout.py", 3, False, False)
    assert upward([up]) == [up]
    hidden = Edge("accounts/signals.py", "notebooks/sharing.py", 9, True, False)
    assert hidden_cross_app([hidden, b]) == [hidden]


def summary() -> str:
    edges = graph()
    ups = upward(edges)
    hidden = hidden_cross_app(edges)
    lines = [f"files: {len(project_files())}, imports between them: {len(edges)}"]
    found = circles(edges)
    lines.append(f"circles: {len(found)}")
    lines += [f"  {' <-> '.join(group)}" for group in found]
    lines.append(f"imports back up a layer: {len(ups)}")
    lines += [
        f"  {_show(e)} [{LAYER_NAMES[layer_of(e.source)]} -> {LAYER_NAMES[layer_of(e.target)]}]" for e in ups
    ]
    silent = [e for e in hidden if not e.commented]
    lines.append(f"function-level imports across apps: {len(hidden)} ({len(silent)} without a comment)")
    lines += [f"  {_show(e)}{'' if e.commented else '  [no comment]'}" for e in hidden]
    lines.append("largest modules:")
    lines += [f"  {size:5d} {path}" for size, path in largest_modules()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
