"""The wheel a user (or the Dockerfile) installs works outside the checkout: templates and
dashboard files ship inside the package."""

from __future__ import annotations

import os
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
                            "-v", "-w", str(wheels)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    # every package listed, an SPDX license: setuptools has nothing to deprecate
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stdout[-3000:]
    # install only the package into a directory that comes first on the path; its
    # dependencies come from the interpreter running the tests
    target = tmp_path / "installed"
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import reconciler, reconciler.render.renderer as r, reconciler.service.dashboard as d, reconciler.simulator as s;"
        "assert s.FakeKubeServer().start().stop() is None;"
        "t = r.builtin_templates_dir(); assert (t / 'pipelinerun.yaml.j2').is_file(), t;"
        "print(reconciler.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.stdout.startswith(str(target))  # the wheel's copy, not the checkout
    rendered = subprocess.run(
        [sys.executable, "-m", "reconciler", "render", "oom-payment-api-2026-11-21", "--repo", str(EXAMPLES),
         "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path, check=False,
        env=env)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("apiVersion: tekton.dev/v1")
