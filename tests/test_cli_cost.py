"""``status`` and ``plan`` cost what they show, and the shortcuts give the same answer (issue 11).

The shortcuts are checked here against the full computation: ``reconciler status`` builds
the rows once and hands them to the summary (which used to build them all again); a
one-shot command takes what it loaded out of the cyclic collector's passes while it runs
(``gc.freeze``) and hands it back when it ends, however it ends; ``reconciler plan`` prints
its table in chunks of lines, never the whole text at once, and prints the same bytes.
"""

from __future__ import annotations

import gc
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.assemble import load_declaration
from reconciler.record.status import ExecutionState, RunRef
from reconciler.record.writeback_git import status_yaml
from reconciler.source.gitsource import GitSource
from reconciler.views import status_view as views
from reconciler.views.plan import plan_change, plan_declaration, states_from
from reconciler.views.report import chunks, plan_text, plan_text_lines
from tests.conftest import CATALOG, WorkRepo, execution_yaml

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def recorded(name: str, phase: str, reason: str, health: str) -> bytes:
    return status_yaml(ExecutionState(name=name, phase=phase, reason=reason, message=f"{name} {phase}",
                                      sync="Synced", health=health, workflow="increase-memory-limit@1.2.0",
                                      start_time=NOW, execution_ref=RunRef("PipelineRun", "ns", f"wfe-{name}")))


# declared and recorded files → a declaration whose summary has something in every part:
# valid, invalid (never started, started), recorded but no longer declared, ignored status files
DECLARATIONS = {
    "valid only": {
        "workflows/w.yaml": CATALOG.encode(),
        "executions/a.yaml": execution_yaml("a", target="ns/Deployment/a").encode(),
    },
    "recorded and declared": {
        "workflows/w.yaml": CATALOG.encode(),
        "executions/a.yaml": execution_yaml("a", target="ns/Deployment/a").encode(),
        "executions/b.yaml": execution_yaml("b", target="ns/Deployment/b").encode(),
        "status/a.yaml": recorded("a", "Completed", "Succeeded", "Healthy"),
        "status/gone.yaml": recorded("gone", "Failed", "OOMKilled", "Degraded"),
    },
    "invalid and ignored": {
        "workflows/w.yaml": CATALOG.encode(),
        "executions/a.yaml": execution_yaml("a", target="ns/Deployment/a").encode(),
        "executions/bad.yaml": execution_yaml("bad", target="not a target").encode(),
        "executions/started.yaml": execution_yaml("started", target="ns/Deployment/s", params="{}").encode(),
        "status/started.yaml": recorded("started", "Running", "Running", "Progressing"),
        "status/junk.yaml": b"kind: NotAStatus\n",
    },
}


@pytest.mark.parametrize("files", DECLARATIONS.values(), ids=list(DECLARATIONS))
def test_summary_from_the_rows_shown_is_the_summary_computed(files: dict[str, bytes]) -> None:
    decl = load_declaration(files)
    states = states_from(decl)
    shown = views.rows(decl, states, NOW)
    given = views.summary(decl, states, repository="r", branch="main", revision="c", now=NOW, all_rows=shown)
    computed = views.summary(decl, states, repository="r", branch="main", revision="c", now=NOW)
    assert given == computed
    assert sum(given["phases"].values()) == len(shown) > 0


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    r = WorkRepo(tmp_path / "repo")
    r.commit("declare", **{
        "workflows/w.yaml": CATALOG,
        "executions/done.yaml": execution_yaml("done", target="ns/Deployment/done"),
        "executions/failed.yaml": execution_yaml("failed", target="ns/Deployment/failed"),
        "executions/new.yaml": execution_yaml("new", target="ns/Deployment/new"),
        "executions/bad.yaml": execution_yaml("bad", target="not a target"),
    })
    r.commit("status", **{
        "status/done.yaml": recorded("done", "Completed", "Succeeded", "Healthy").decode(),
        "status/failed.yaml": recorded("failed", "Failed", "OOMKilled", "Degraded").decode(),
    })
    return r


def status_json(repo: WorkRepo, tmp_path: Path, *filters: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["status", *filters, "-o", "json", "--repo", str(repo.path),
                                       "--cache-dir", str(tmp_path / "cache")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(("filters", "shown"), [
    ((), ["bad", "done", "failed", "new"]),
    (("--phase", "Failed"), ["bad", "failed"]),
    (("--health", "Healthy"), ["done"]),
    (("--phase", "Skipped"), []),
])
def test_a_filtered_status_still_summarises_every_execution(repo: WorkRepo, tmp_path: Path,
                                                            filters: tuple[str, ...], shown: list[str]) -> None:
    """The rows are built once for both: the filter narrows the table, never the summary."""
    everything = status_json(repo, tmp_path)
    filtered = status_json(repo, tmp_path, *filters)
    assert [r["name"] for r in filtered["executions"]] == shown  # type: ignore[attr-defined]
    for data in (everything, filtered):
        data["summary"].pop("generatedAt")  # type: ignore[attr-defined]
    assert filtered["summary"] == everything["summary"]
    assert everything["summary"]["phases"] == {  # type: ignore[index]
        "Pending": 1, "Running": 0, "Completed": 1, "Failed": 2, "Skipped": 0}


@pytest.mark.parametrize(("args", "code"), [
    (["plan"], 1),  # bad.yaml is invalid: exit 1
    (["plan", "-o", "json"], 1),
    (["status"], 0),
    (["get", "done"], 0),
    (["get", "nothing-by-this-name"], 2),
    (["render", "done"], 0),
    (["plan", "--path", "elsewhere"], 2),  # fails before anything is loaded
])
def test_a_one_shot_command_hands_the_heap_back_to_the_collector(repo: WorkRepo, tmp_path: Path,
                                                                 args: list[str], code: int) -> None:
    assert gc.get_freeze_count() == 0
    result = CliRunner().invoke(main, [*args, "--repo", str(repo.path), "--cache-dir", str(tmp_path / "c")],
                                catch_exceptions=False)
    assert result.exit_code == code, result.output
    assert gc.get_freeze_count() == 0  # however it ended, nothing stays out of the collector's sight
    assert gc.isenabled()


@pytest.mark.parametrize("size", [1, 2, 3, 4096])
@pytest.mark.parametrize("lines", [["only"], ["a", "b"], ["a", "", "c", "d", "e"], ["x"] * 7])
def test_chunks_print_exactly_the_joined_text(lines: list[str], size: int) -> None:
    """Echoing each chunk as a line (what `reconciler plan` does) prints "\\n".join(lines) + "\\n"."""
    printed = "".join(f"{chunk}\n" for chunk in chunks(lines, size))
    assert printed == "\n".join(lines) + "\n"
    assert all(chunk.count("\n") < size for chunk in chunks(lines, size))


def test_plan_text_is_its_lines_and_the_cli_prints_it_whole(repo: WorkRepo, tmp_path: Path) -> None:
    decl_files = {"workflows/w.yaml": CATALOG.encode(),
                  **{f"executions/e{i}.yaml": execution_yaml(f"e{i}", target=f"ns/Deployment/t{i % 3}").encode()
                     for i in range(7)},
                  "executions/bad.yaml": execution_yaml("bad", target="nope").encode()}
    for plan in (plan_declaration(load_declaration(decl_files), "c" * 40),
                 plan_change(load_declaration({}), load_declaration(decl_files), base_revision="b" * 40,
                             revision="c" * 40)):
        lines = list(plan_text_lines(plan))
        assert plan_text(plan) == "\n".join(lines)
        assert any("CHANGE" in line for line in lines) == bool(plan.base_revision)
        assert {line.split()[0] for line in lines[2:10]} >= {"+", "~"}  # created, and skipped: the same target
    result = CliRunner().invoke(main, ["plan", "--repo", str(repo.path), "--cache-dir", str(tmp_path / "c")],
                                catch_exceptions=False)
    head = repo.git("rev-parse", "HEAD")
    source = GitSource(str(repo.path), cache_dir=tmp_path / "c")
    expected = plan_text(plan_declaration(source.load(head), head))
    assert result.stdout == expected + "\n"
