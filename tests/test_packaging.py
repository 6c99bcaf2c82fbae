"""The wheel a user (or the Dockerfile) installs works outside the checkout: templates and
dashboard files ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, PROJECT


def test_installed_wheel_renders_and_serves(tmp_path: Path) -> None:
    source = tmp_path / "src"  # build from a copy: nothing is written into the checkout
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "test-artifacts", "__pycache__", ".*_cache", "tests", "bench"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    probe = (
        "import reconciler, reconciler.render as r, reconciler.dashboard as d;"
        "assert 'site-packages' in reconciler.__file__, reconciler.__file__;"
        "t = r.builtin_templates_dir(); assert (t / 'pipelinerun.yaml.j2').is_file(), t;"
        "print(t)"
    )
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert "site-packages" in out.stdout
    rendered = subprocess.run(
        [str(python), "-m", "reconciler", "render", "oom-payment-api-2026-11-21", "--repo", str(EXAMPLES),
         "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("apiVersion: tekton.dev/v1")
