"""A command imports what it runs (issue 11).

``reconciler --version`` — the installed console script as much as ``python -m reconciler`` —
answers without importing the CLI's heavy dependencies, and says exactly what the click
command says; ``--help`` and the offline commands (``validate``, ``plan``, ``status``,
``schema``) do not import the Kubernetes client, Jinja or the service's web stack.  What a
process imported is read from the interpreter itself (``PYTHONPROFILEIMPORTTIME`` names
every module on stderr), never from timings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare import names
from reconciler.render import renderer as render
from tests.conftest import CATALOG, WorkRepo, execution_yaml

HEAVY = ("kubernetes", "git", "jinja2", "starlette", "uvicorn", "pydantic", "apscheduler", "prometheus_client",
         "reconciler.cli", "reconciler.simulator")


def console_script() -> str:
    """The ``reconciler`` script pip generated next to the interpreter running the tests."""
    found = shutil.which("reconciler", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("no `reconciler` console script next to the interpreter (not pip-installed)")
    return found


def run_imports(argv: list[str], cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``argv``; return the process and the set of top-level and ``reconciler.*`` modules it imported."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    imported = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            module = line.rsplit("|", 1)[1].strip()
            imported.add(module)
            imported.add(module.split(".", 1)[0])
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done, imported


def test_version_is_the_same_line_as_the_click_command() -> None:
    fast = subprocess.run([sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True,
                          check=True)
    assert fast.stdout == CliRunner().invoke(main, ["--version"]).output
    assert fast.stdout.startswith("reconciler, version ")


def test_version_imports_none_of_the_heavy_modules() -> None:
    probe = ("import runpy, sys; sys.argv = ['reconciler', '--version']; "
             "runpy.run_module('reconciler', run_name='__main__'); "
             "print(sorted(m for m in ('kubernetes', 'git', 'jinja2', 'starlette', 'pydantic', 'reconciler.cli') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_the_console_script_takes_the_same_fast_path() -> None:
    done, imported = run_imports([console_script(), "--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == CliRunner().invoke(main, ["--version"]).output
    assert "reconciler.__main__" in imported  # the probe sees imports at all: the check below means something
    assert sorted(imported & set(HEAVY)) == []


def test_other_commands_still_run_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "reconciler", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "Usage:" in out and "plan" in out


def test_console_script_help_lists_every_command_without_heavy_imports() -> None:
    done, imported = run_imports([console_script(), "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: reconciler [OPTIONS] COMMAND [ARGS]...")
    for command in ("validate", "render", "plan", "status", "get", "wait", "diff", "sync", "run", "doctor", "new"):
        assert f"  {command} " in done.stdout
    assert "reconciler.cli" in imported
    assert sorted(imported & set(HEAVY) - {"reconciler.cli"}) == []


def test_default_namespace_in_help_is_the_renderers() -> None:
    assert names.DEFAULT_NAMESPACE == render.DEFAULT_NAMESPACE
    out = CliRunner().invoke(main, ["plan", "--help"]).output
    assert f"[default: {render.DEFAULT_NAMESPACE}]" in out


def declare(tmp_path: Path, *, chain: bool) -> WorkRepo:
    repo = WorkRepo(tmp_path / "repo")
    repo.commit("declare", **{
        "workflows/increase-memory-limit.yaml": CATALOG,
        "executions/first.yaml": execution_yaml("first", target="payments/Deployment/a"),
        "executions/second.yaml": execution_yaml("second", target="payments/Deployment/b",
                                                 extra="  after: [first]\n" if chain else ""),
    })
    return repo


@pytest.fixture
def declared_repo(tmp_path: Path) -> WorkRepo:
    return declare(tmp_path, chain=False)


# command → (exit code, what its output shows, modules it must not import). An offline plan or
# status needs Git and the models, never the cluster client, the renderer or the service.
OFFLINE = [
    (["validate", "."], 0, "3 file(s) valid",
     ("kubernetes", "git", "jinja2", "starlette", "uvicorn", "apscheduler", "reconciler.run.cluster")),
    (["plan", "--repo", "."], 0, "+ create",
     ("kubernetes", "jinja2", "starlette", "uvicorn", "apscheduler", "reconciler.run.cluster", "reconciler.service.cycle")),
    (["status", "--repo", "."], 0, "Pending",
     ("kubernetes", "jinja2", "starlette", "uvicorn", "apscheduler", "reconciler.run.cluster", "reconciler.service.cycle")),
    (["schema"], 0, "WorkflowExecution", ("kubernetes", "git", "jinja2", "starlette", "uvicorn")),
]


@pytest.mark.parametrize(("args", "code", "shows", "absent"), OFFLINE, ids=[case[0][0] for case in OFFLINE])
def test_an_offline_command_imports_only_what_it_runs(declared_repo: WorkRepo, tmp_path: Path, args: list[str],
                                                      code: int, shows: str, absent: tuple[str, ...]) -> None:
    argv = [console_script(), *args]
    if args[0] in ("plan", "status"):
        argv += ["--cache-dir", str(tmp_path / "cache")]
    done, imported = run_imports(argv, cwd=declared_repo.path)
    assert done.returncode == code, done.stderr
    assert shows in done.stdout
    assert "reconciler.cli" in imported
    assert sorted(imported & set(absent)) == []


def test_a_plan_with_a_chain_still_says_who_waits(tmp_path: Path) -> None:
    """The chain verdict (imported only when a dependent is planned) is still applied."""
    repo = declare(tmp_path, chain=True)
    out = CliRunner().invoke(main, ["plan", "--repo", str(repo.path), "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 0, out.output
    lines = {line.split()[2]: line for line in out.output.splitlines() if line.startswith(("+", "…", "~"))}
    assert lines["first"].startswith("+ create")
    assert lines["second"].startswith("… wait")
    assert "Chains (who waits on whom):" in out.output
