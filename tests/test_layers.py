"""The package's shape holds: stage boundaries, one adapter per external system, a pure
core, rooms of a livable size (issue 15).

The import rules themselves are import-linter contracts (``[tool.importlinter]`` in
pyproject.toml); the first test runs them, so the README's test command checks them as CI
does.  What an import graph cannot see is checked here from the source (``ast``, nothing
imported): which module *starts* git, and which modules read the clock or do I/O.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reconciler"
STAGES = ("declare", "source", "render", "gate", "observe", "record", "run", "views", "service", "tools")
GIT_ADAPTER = PACKAGE / "source" / "gitcmd.py"
# the decision modules: data in, data out (the "pure core" contract in pyproject.toml lists the same)
PURE = sorted([*(PACKAGE / "declare").glob("*.py"), *(PACKAGE / "observe").glob("*.py"),
               PACKAGE / "gate" / "policy.py", PACKAGE / "gate" / "windows.py", PACKAGE / "record" / "status.py",
               PACKAGE / "record" / "transitions.py", PACKAGE / "run" / "lifecycle.py",
               PACKAGE / "run" / "chains.py", PACKAGE / "views" / "plan.py"])
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
    assert "KEPT" in done.stdout and "Stages are layered" in done.stdout


def _starts_git(tree: ast.AST) -> list[int]:
    """Lines with a list or tuple literal that begins with "git": an argv for git."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value == "git":
                lines.append(node.lineno)
    return sorted(lines)


def test_only_the_git_adapter_starts_git() -> None:
    # an argv ["git", ...] anywhere but gitcmd is git started behind the adapter's back
    # (import-linter sees `import git`, not a subprocess running the binary)
    found = {_rel(p): _starts_git(ast.parse(p.read_text(), str(p))) for p in _modules() if p != GIT_ADAPTER}
    assert {path: lines for path, lines in found.items() if lines} == {}
    assert _starts_git(ast.parse(GIT_ADAPTER.read_text())), "the adapter itself starts git"


HTTP_CLIENT = PACKAGE / "service" / "outbound.py"
_HTTP_CLIENT_MODULES = {"urllib.request", "urllib.error", "http.client", "httpx", "requests", "aiohttp"}


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_only_the_outbound_client_sends_http() -> None:
    # import-linter squashes the standard library to top-level names (urllib, http), so
    # urllib.parse (quoting, in forges and webhook) and urllib.request are told apart here;
    # the Kubernetes client's own transport is kube's (the kubernetes contract)
    found = {_rel(p): sorted(_imported(ast.parse(p.read_text())) & _HTTP_CLIENT_MODULES)
             for p in _modules() if p != HTTP_CLIENT and "simulator" not in p.parts}
    assert {path: names for path, names in found.items() if names} == {}
    assert _imported(ast.parse(HTTP_CLIENT.read_text())) & _HTTP_CLIENT_MODULES, "the client itself sends HTTP"


_CLOCK_AND_IO = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "sleep"),
    ("threading", "Thread"), ("os", "environ"), ("os", "getenv"),
}
_IO_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "open", "unlink", "mkdir"}


def _impure_uses(tree: ast.AST) -> list[str]:
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else \
                node.value.attr if isinstance(node.value, ast.Attribute) else ""
            if (owner, node.attr) in _CLOCK_AND_IO:
                uses.append(f"{node.lineno}: {owner}.{node.attr}")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in _IO_METHODS:
                uses.append(f"{node.lineno}: .{node.func.attr}()")  # a file's method (breaker.open is data)
            elif isinstance(node.func, ast.Name) and node.func.id in {"open", "input"}:
                uses.append(f"{node.lineno}: {node.func.id}()")
    return sorted(uses, key=lambda use: int(use.split(":")[0]))


@pytest.mark.parametrize("path", PURE, ids=_rel)
def test_the_pure_core_reads_no_clock_and_does_no_io(path: Path) -> None:
    # "now" is an argument of every decision (tests pass it), files arrive as bytes
    assert _impure_uses(ast.parse(path.read_text(), str(path))) == []


@pytest.mark.parametrize("source, expected", [
    ("datetime.now(timezone.utc)", ["1: datetime.now"]),
    ("import time\nt = time.monotonic()", ["2: time.monotonic"]),
    ("Path('x').read_text()", ["1: .read_text()"]),
    ("with open('x') as f: pass", ["1: open()"]),
    ("os.environ.get('HOME')", ["1: os.environ"]),
    ("def f(now): return now - started", []),
    ("if breaker.open: pass", []),
])
def test_the_purity_check_sees_what_it_looks_for(source: str, expected: list[str]) -> None:
    assert _impure_uses(ast.parse(source)) == expected


def test_the_git_check_sees_an_argv() -> None:
    assert _starts_git(ast.parse('subprocess.run(["git", "log"])\nx = ("git", "-C")')) == [1, 2]
    assert _starts_git(ast.parse('subprocess.run(["gpg", "git"])\nname = "git"')) == []


def test_every_module_is_a_livable_size() -> None:
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in _modules()}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_says_what_it_owns_and_may_import(stage: str) -> None:
    init = PACKAGE / stage / "__init__.py"
    tree = ast.parse(init.read_text())
    doc = ast.get_docstring(tree) or ""
    assert "Owns" in doc and "May import" in doc, doc
    assert len(tree.body) == 1, "a stage's __init__ is its docstring only: no re-exports"


def test_every_module_opens_with_a_docstring() -> None:
    missing = [_rel(p) for p in _modules()
               if p.name != "__init__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_no_module_imports_itself_back() -> None:
    # every import counts: module level, inside functions and under TYPE_CHECKING (a cycle
    # only for the type checker still ties two modules together); import-linter's layers
    # stop cycles between stages, this stops them inside a stage too.  The loops are found
    # by the same search that finds dependency loops between executions.
    import grimp  # installed with import-linter

    from reconciler.declare.assemble import _cycles

    graph = grimp.build_graph("reconciler")
    ours = {m for m in graph.modules if m.startswith("reconciler")}
    imports = {m: sorted(graph.find_modules_directly_imported_by(m) & ours) for m in sorted(ours)}
    assert _cycles(imports) == []
