"""Golden CLI output: what an operator reads must not change by accident.

Commit ids and ages differ on every run; they are replaced by placeholders before
comparing. Regenerate with ``UPDATE_GOLDEN=1 python -m pytest tests/test_cli_golden.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import EXAMPLES, WorkRepo

GOLDEN = Path(__file__).parent / "golden" / "cli"


def normalise(text: str) -> str:
    text = re.sub(r"\b[0-9a-f]{40}\b", "<sha>", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "<sha12>", text)
    text = re.sub(r"(?m)^(\S+ @ main) \(<sha12>\)", r"\1 (<sha12>)", text)
    text = re.sub(r"  \d+[smhd]  ", "  <age>  ", text)
    return re.sub(r"/\S*/repo\b", "<repo>", text)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> WorkRepo:
    root = tmp_path_factory.mktemp("golden")
    repo = WorkRepo(root / "repo")
    shutil.copytree(EXAMPLES, repo.path, dirs_exist_ok=True)
    fixed = {"GIT_AUTHOR_DATE": "2026-11-22T08:00:00Z", "GIT_COMMITTER_DATE": "2026-11-22T08:00:00Z"}
    saved = {k: os.environ.get(k) for k in fixed}
    os.environ.update(fixed)  # a fixed commit time: the same commit every run
    try:
        repo.commit("the example repository")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return repo


CASES = {
    "plan.txt": ["plan"],
    "plan.md": ["plan", "-o", "markdown"],
    "status.txt": ["status"],
    "get-completed.txt": ["get", "oom-payment-api-2026-11-14"],
    "validate.txt": ["validate"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_output_matches_golden(name: str, examples: WorkRepo, tmp_path: Path) -> None:
    args = CASES[name]
    if args[0] == "validate":
        full = [*args, str(examples.path)]
    else:
        full = [*args, "--repo", str(examples.path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, full, catch_exceptions=False)
    out = normalise(result.stdout)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()
