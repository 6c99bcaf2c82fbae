"""``reconciler validate``, ``render`` and ``schema``: the commands about the files themselves.

``validate`` checks files (and, with ``--policy``, the policy the reconciler applies);
``render`` prints the manifest one execution would become; ``schema`` prints a kind's JSON
Schema for editors.  None of them needs a cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.declare.names import DEFAULT_NAMESPACE

from ..errors import ConfigError, GitError, Problem, TemplateError
from ..safetext import safe_lines
from .common import EXIT_INVALID, EXIT_OK, checked_declaration, fail, one_shot_command, open_source, source_options

# Everything else is imported by the command that needs it (see reconciler.cli).


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github: workflow-command annotations for GitHub Actions.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also apply this policy, as the reconciler will (rule violations are errors).")
def validate(paths: tuple[Path, ...], output: str, policy: Path | None) -> None:
    """Validate execution and catalog files (default: the current directory).

    Exit 0 when valid, 1 when any file is invalid, 2 on usage or I/O errors.
    """
    from reconciler.source.workdir import validate_paths
    from reconciler.views.report import problems_github, problems_json, problems_text

    try:
        result = validate_paths(list(paths) or [Path(".")])
        if policy is not None:
            from reconciler.gate.policy import evaluate as evaluate_policy
            from reconciler.gate.policy_file import load_policy

            rules = load_policy(policy)
            wanted = {p.file for p in result.problems} | set(result.files)
            for decl in result.declarations:
                for execution in decl.executions:
                    if execution.file in wanted:
                        result.problems.extend(_policy_problems(execution, evaluate_policy(execution, rules)))
            result.problems.sort()
    except (ConfigError, OSError) as e:
        fail(str(e))
        return
    if output == "json":
        click.echo(problems_json(result.problems, result.checked))
    elif output == "github":
        text = problems_github(result.problems)
        if text:
            click.echo(text)
        click.echo(problems_text([], result.checked) if not result.problems
                   else f"{len(result.problems)} problem(s)", err=True)
    else:
        click.echo(problems_text(result.problems, result.checked))
    sys.exit(EXIT_INVALID if result.problems else EXIT_OK)


_POLICY_FIELD = {
    "image-not-allowed": ("spec", "workflowRef", "containerImage"),
    "digest-required": ("spec", "workflowRef", "containerImage"),
    "service-account-not-allowed": ("spec", "executionConfig", "serviceAccountName"),
}


def _policy_problems(execution: Any, violations: list[Any]) -> list[Problem]:
    """Violations as Problems on the line of the field they are about."""
    if not violations:
        return []
    from reconciler.declare.yamldoc import load_documents

    try:
        docs, _ = load_documents(Path(execution.file).read_bytes(), execution.file)
    except OSError:
        docs = []
    out = []
    for v in violations:
        path = _POLICY_FIELD.get(v.rule, ("spec", "targetResource"))
        line, col = docs[0].position(path) if docs else (None, None)
        out.append(Problem(execution.file, line, col, ".".join(path), f"policy:{v.rule}", v.message))
    return out


@click.command()
@click.argument("name")
@source_options
@click.option("--rev", default=None, help="Render at this revision instead of the branch tip.")
@click.option("--templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="RECONCILER_TEMPLATES", help="Directory with your own pipelinerun/job templates.")
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True,
              envvar="RECONCILER_NAMESPACE", help="Namespace the runs are created in.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@one_shot_command
def render(name: str, repo: str, branch: str, sub_path: str | None, cache_dir: Path | None,
           rev: str | None, templates: Path | None, namespace: str, output: str) -> None:
    """Print the manifest that would be applied for execution NAME."""
    from reconciler.render.renderer import Renderer

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.resolve(rev) if rev else source.fetch()
        decl = checked_declaration(source.load(commit))
        execution = decl.find(name)
        if execution is None:
            bad = next((i for i in decl.invalid if i.name == name), None)
            if bad is not None:
                click.echo(safe_lines(str(p) for p in bad.problems), err=True)
                sys.exit(EXIT_INVALID)
            fail(f"no execution named {name!r} at {commit[:12]}")
            return
        run = Renderer(templates, namespace).render_checked(execution)
    except (GitError, TemplateError, ConfigError) as e:
        fail(str(e))
        return
    click.echo(json.dumps(run.manifest, indent=2) if output == "json" else run.to_yaml(), nl=False)
    if output == "json":
        click.echo()


@click.command()
@click.option("--kind", type=click.Choice(["WorkflowExecution", "WorkflowDefinition"]),
              default="WorkflowExecution", show_default=True)
def schema(kind: str) -> None:
    """Print the JSON Schema of a document kind (for yaml-language-server and editors)."""
    from reconciler.declare.model import WorkflowDefinition, WorkflowExecution

    model = WorkflowExecution if kind == "WorkflowExecution" else WorkflowDefinition
    data = model.model_json_schema(by_alias=True)
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["$id"] = f"https://kubernaut.ai/schemas/v1alpha1/{kind}.json"
    click.echo(json.dumps(data, indent=2))
