"""`python -m reconciler --version` answers without importing the CLI's heavy dependencies,
and says exactly what the click command says (issue 11)."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from reconciler.cli import main


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


def test_other_commands_still_run_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "reconciler", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "Usage:" in out and "plan" in out
