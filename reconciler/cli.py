"""The ``reconciler`` command line: validate, render, plan, schema.

Thin by design: each command gathers options, calls the pure core or an adapter, and
prints one of the report formats.  Exit codes are part of the contract so CI jobs can
gate on them: 0 = fine, 1 = the input is invalid (or the plan shows violations),
2 = usage, I/O, Git or template error.

Every human-readable line goes out through :mod:`reconciler.safetext` (the report
builders, and :func:`_echo` for the lines composed here): repository-controlled text can
neither drive the terminal nor issue a GitHub Actions workflow command.  Nothing is
printed through ``rich``, so ``[markup]`` in a name is shown as it is.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from . import __version__, gitcmd, logs
from .errors import ConfigError, GitError, Problem, ReconcilerError, TemplateError
from .names import DEFAULT_NAMESPACE, parse_duration
from .safetext import safe_block, safe_line, safe_lines

# Everything else is imported by the command that needs it: the Kubernetes client, Git, Jinja,
# pydantic and the service's web stack cost ~0.5 s to import, and ``validate`` or an offline
# ``plan`` needs only some of them (``--help`` none).  tests/test_startup_cost.py holds each
# command to what it uses.
if TYPE_CHECKING:
    from .cluster import Cluster
    from .config_model import Config
    from .cycle import CycleResult
    from .declared import Declaration
    from .gate import Gate
    from .gitsource import GitSource

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def _echo(message: str, *, err: bool = False) -> None:
    """Print a message composed here from untrusted parts (names, errors, status fields).

    Its own line breaks are kept; each line is cleaned and guarded (see ``safetext``)."""
    click.echo(safe_block(message), err=err)


def _fail(message: str) -> None:
    _echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _loaded(decl: Declaration) -> Declaration:
    """A declaration a one-shot command (decorated with :func:`_one_shot`) keeps until it exits.

    What the load built (hundreds of thousands of objects at 10 000 executions) stays alive,
    and holds no garbage cycles; left in the cyclic collector's generations, each full pass
    the plan or the table built on top triggers walks all of it again (~0.2 s a pass at
    10 000 — the time cProfile charged to ``names.run_name`` and the report).  ``gc.freeze``
    moves it out of those passes: the output is the same, reference counting still frees
    whatever is dropped, only the sweep is skipped."""
    gc.freeze()
    return decl


def _one_shot(func: F) -> F:
    """A command that may call :func:`_loaded`: when it returns or exits, what was frozen goes
    back to the collector, so a process running several commands (tests with ``CliRunner``)
    is not left with a heap the collector never looks at.

    The collector is off while the command runs: the load pauses it anyway, and turning it
    back on at the load's end made the very next allocation walk everything the load built
    (generation 0 held all of it: ~0.8 s at 50 000) just before :func:`_loaded` froze it.
    What the command builds after that is acyclic (plan entries, rows, text) and freed by
    reference counting; the collector is back on when the command ends."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.unfreeze()
            if enabled:
                gc.enable()

    return cast(F, command)


def source_options(func: F) -> F:
    """--repo/--branch/--path/--cache-dir: which repository, branch and sub-path to read."""
    options = [
        click.option("--repo", default=".", show_default=True, envvar="RECONCILER_REPO",
                     help="Git URL or local path of the watched repository. A local path inside "
                          "a repository also selects that sub-path."),
        click.option("--branch", default="main", show_default=True, envvar="RECONCILER_BRANCH",
                     help="Tracked branch: the only branch whose executions run."),
        click.option("--path", "sub_path", default=None, envvar="RECONCILER_PATH",
                     help="Sub-path of the repository holding executions/ and workflows/."),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     envvar="RECONCILER_CACHE_DIR", help="Where fetched repositories are cached."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_source(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None) -> GitSource:
    """A local directory inside a work tree means: that repository, that sub-path."""
    from .gitsource import GitSource

    local = Path(repo).expanduser()
    if "://" not in repo and local.is_dir():
        try:
            top = gitcmd.run(
                ["rev-parse", "--show-toplevel"], cwd=local, text=True, check=True,
            ).stdout.strip()
        except (subprocess.CalledProcessError, OSError):
            top = ""
        if top and Path(top).resolve() != local.resolve():
            rel = local.resolve().relative_to(Path(top).resolve()).as_posix()
            if sub_path is None:
                sub_path = rel
            repo = top
    return GitSource(repo, branch=branch, path=sub_path or "", cache_dir=cache_dir)


def kube_options(func: F) -> F:
    """--kubeconfig/--context: which cluster (default: in-cluster, KUBECONFIG, ~/.kube/config)."""
    func = click.option("--context", default=None, envvar="RECONCILER_KUBE_CONTEXT",
                        help="kubeconfig context to use.")(func)
    func = click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False),
                        help="kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).")(func)
    return func


def _cluster(kubeconfig: str | None, context: str | None, namespace: str, *, offline_ok: bool) -> tuple[Cluster, str]:
    from .cluster import KubeCluster, OfflineCluster
    from .kube import KubeClient, load_api_client

    try:
        api = load_api_client(context=context, kubeconfig=kubeconfig)
    except ConfigError as e:
        if not offline_ok:
            raise
        return OfflineCluster(namespace), f"no cluster configured ({e}); planning against an empty cluster"
    return KubeCluster(KubeClient(api), namespace), ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="RECONCILER_LOG_FORMAT",
              show_default=True, help="json: one object per line, for log shippers.")
def main(verbose: int, log_format: str) -> None:
    """GitOps reconciler for kubernaut remediation runs (Tekton PipelineRuns and Jobs)."""
    logs.setup(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING, log_format)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github: workflow-command annotations for GitHub Actions.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also apply this policy, as the reconciler will (rule violations are errors).")
def validate(paths: tuple[Path, ...], output: str, policy: Path | None) -> None:
    """Validate execution and catalog files (default: the current directory).

    Exit 0 when valid, 1 when any file is invalid, 2 on usage or I/O errors.
    """
    from .report import problems_github, problems_json, problems_text
    from .workdir import validate_paths

    try:
        result = validate_paths(list(paths) or [Path(".")])
        if policy is not None:
            from .policy import evaluate as evaluate_policy
            from .policy import load_policy

            rules = load_policy(policy)
            wanted = {p.file for p in result.problems} | set(result.files)
            for decl in result.declarations:
                for execution in decl.executions:
                    if execution.file in wanted:
                        result.problems.extend(_policy_problems(execution, evaluate_policy(execution, rules)))
            result.problems.sort()
    except (ConfigError, OSError) as e:
        _fail(str(e))
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
    from .yamldoc import load_documents

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


@main.command()
@click.argument("name")
@source_options
@click.option("--rev", default=None, help="Render at this revision instead of the branch tip.")
@click.option("--templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="RECONCILER_TEMPLATES", help="Directory with your own pipelinerun/job templates.")
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True,
              envvar="RECONCILER_NAMESPACE", help="Namespace the runs are created in.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@_one_shot
def render(name: str, repo: str, branch: str, sub_path: str | None, cache_dir: Path | None,
           rev: str | None, templates: Path | None, namespace: str, output: str) -> None:
    """Print the manifest that would be applied for execution NAME."""
    from .render import Renderer

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.resolve(rev) if rev else source.fetch()
        decl = _loaded(source.load(commit))
        execution = decl.find(name)
        if execution is None:
            bad = next((i for i in decl.invalid if i.name == name), None)
            if bad is not None:
                click.echo(safe_lines(str(p) for p in bad.problems), err=True)
                sys.exit(EXIT_INVALID)
            _fail(f"no execution named {name!r} at {commit[:12]}")
            return
        run = Renderer(templates, namespace).render_checked(execution)
    except (GitError, TemplateError, ConfigError) as e:
        _fail(str(e))
        return
    click.echo(json.dumps(run.manifest, indent=2) if output == "json" else run.to_yaml(), nl=False)
    if output == "json":
        click.echo()


@main.command()
@source_options
@click.option("--base", default=None, help="Show only what changed since this revision.")
@click.option("--head", default=None,
              help="Plan this revision (default: the branch tip; with --base in a work tree, the "
                   "checked-out commit).")
@click.option("--cluster", is_flag=True, help="Include the cluster's view: running runs, locked targets, cooldowns.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Apply this policy (a policy file, or the reconciler's config with a policy: section).")
@kube_options
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True, envvar="RECONCILER_NAMESPACE")
@click.option("--cooldown", default="5m", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="markdown: fit to post as a pull-request comment.")
@_one_shot
def plan(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None,
         base: str | None, head: str | None, cluster: bool, kubeconfig: str | None, context: str | None,
         namespace: str, cooldown: str, policy: Path | None, output: str) -> None:
    """Show what would run: each execution's action and run name (no cluster needed).

    With --cluster, the decisions a cycle would take now: what is running, which targets
    are locked or cooling down; with --policy, the policy and sync windows too. With
    --base/--head, only what a change adds, edits or removes: a pull-request preview.
    Exit 1 when the plan contains invalid files, immutability or policy violations.
    """
    from .plan import plan_change, plan_declaration, plan_from_states, with_states
    from .report import chunks, plan_json, plan_markdown, plan_text_lines

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        if head is None and base and source.is_local:
            head = "HEAD"  # a work tree: the pull request is the checked-out commit, not the branch tip
        head_commit = source.resolve(head) if head else source.fetch()
        _note_uncommitted(source, head_commit)
        base_commit = source.resolve(base) if base else None
        if not any(_declares_something(source, c) for c in (head_commit, base_commit) if c):
            where = f"--path {source.path}" if source.path else "the repository root"
            raise ConfigError(f"{source.display_url}: {where} holds no executions/ or workflows/ at "
                              f"{head_commit[:12]} (point --repo/--path at the directory holding them)")
        head_decl = _loaded(source.load(head_commit))
        gate = None
        if policy:
            from .gate import Gate
            from .policy import load_policy

            gate = Gate(policy=load_policy(policy))
        if base_commit:
            result = plan_change(_loaded(source.load(base_commit)), head_decl,
                                 base_revision=base_commit, revision=head_commit)
        else:
            result = plan_declaration(head_decl, head_commit)
        if cluster or gate is not None:
            from .cluster import OfflineCluster

            live = _cluster(kubeconfig, context, namespace, offline_ok=False)[0] if cluster \
                else OfflineCluster(namespace)
            outcome = _dry_run(source, head_commit, live, namespace, cooldown, gate)
            result = with_states(result, outcome.states) if base else plan_from_states(
                head_decl, outcome.states, head_commit)
    except (ReconcilerError, OSError) as e:
        _fail(str(e))
        return
    if output == "text":  # the table a line at a time: never the whole text at once
        for chunk in chunks(plan_text_lines(result)):
            click.echo(chunk)
    else:
        click.echo({"json": plan_json, "markdown": plan_markdown}[output](result))
    sys.exit(EXIT_INVALID if result.failed else EXIT_OK)


def _declares_something(source: GitSource, commit: str) -> bool:
    """Whether ``commit`` holds executions/ or workflows/ under the watched path."""
    prefix = f"{source.path}/" if source.path else ""
    listed = source._git().ls_tree("--name-only", commit, "--", f"{prefix}executions", f"{prefix}workflows")
    return bool(str(listed).strip())


def _note_uncommitted(source: GitSource, head_commit: str) -> None:
    """Say (stderr) that a work tree's uncommitted changes are not in the plan: it reads commits."""
    if not source.is_local:
        return
    try:
        changed = gitcmd.run(
            ["status", "--porcelain", "--untracked-files=all", "--", source.path or "."],
            cwd=source.fetch_url, text=True, check=True).stdout
    except (subprocess.CalledProcessError, OSError):
        return  # a bare repository: no work tree, nothing uncommitted
    count = len([line for line in changed.splitlines() if line.strip()])
    if count:
        _echo(f"note: {count} uncommitted change(s) in the work tree are ignored: the plan reads commit "
              f"{head_commit[:12]} (commit them, or check the files with `reconciler validate`)", err=True)


@main.command()
@click.option("--kind", type=click.Choice(["WorkflowExecution", "WorkflowDefinition"]),
              default="WorkflowExecution", show_default=True)
def schema(kind: str) -> None:
    """Print the JSON Schema of a document kind (for yaml-language-server and editors)."""
    from .model import WorkflowDefinition, WorkflowExecution

    model = WorkflowExecution if kind == "WorkflowExecution" else WorkflowDefinition
    data = model.model_json_schema(by_alias=True)
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["$id"] = f"https://kubernaut.ai/schemas/v1alpha1/{kind}.json"
    click.echo(json.dumps(data, indent=2))


@main.command()
@source_options
@kube_options
@click.option("--once", is_flag=True, help="Run exactly one reconcile cycle and exit.")
@click.option("--dry-run", is_flag=True, help="Compute every decision; change nothing (no cluster needed).")
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True, envvar="RECONCILER_NAMESPACE",
              help="Namespace the runs are created in.")
@click.option("--cooldown", default="5m", show_default=True, help="Cooldown after a run on a target ends.")
@click.option("--templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="RECONCILER_TEMPLATES")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True,
              help="yaml: the status documents as they would be written to status/.")
def sync(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, kubeconfig: str | None,
         context: str | None, once: bool, dry_run: bool, namespace: str, cooldown: str,
         templates: Path | None, output: str) -> None:
    """Reconcile the tracked branch against the cluster: create, follow and clean up runs.

    Exit 0 when the cycle completed, 1 when some executions hit errors (with --dry-run, also
    when any declared file is invalid), 2 when the cycle could not run (Git or the API server
    unreachable, bad configuration).
    """
    if not once:
        _fail("sync needs --once (the long-running service is `reconciler run`)")
    from .cluster import DryRunCluster
    from .cycle import Reconciler
    from .lifecycle import Settings
    from .render import Renderer
    from .report import format_cycle

    try:
        settings = Settings(namespace=namespace, cooldown=timedelta(seconds=parse_duration(cooldown)))
        source = open_source(repo, branch, sub_path, cache_dir)
        cluster, note = _cluster(kubeconfig, context, namespace, offline_ok=dry_run)
        if dry_run:
            cluster = DryRunCluster(cluster)
        reconciler = Reconciler(source, cluster, renderer=Renderer(templates, namespace), settings=settings,
                                dry_run=dry_run)
        result = reconciler.run_once()
    except (ReconcilerError, ValueError) as e:
        _fail(str(e))
        return
    if note:
        _echo(note, err=True)
    click.echo(format_cycle(result, output, getattr(cluster, "intentions", None)))
    if not result.revision or (result.cluster_unknown and not dry_run):
        sys.exit(EXIT_ERROR)
    invalid = dry_run and result.declaration is not None and bool(result.declaration.invalid
                                                                   or result.declaration.invalid_catalog)
    sys.exit(EXIT_INVALID if result.errors or invalid else EXIT_OK)


def _load_config(config_file: Path | None, repo: str | None, branch: str | None) -> Config:
    from .config import load_config

    overrides: dict[str, Any] = {}
    if repo or branch:
        overrides["repository"] = {k: v for k, v in (("url", repo), ("branch", branch)) if v}
    return load_config(config_file, overrides=overrides)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), envvar="RECONCILER_CONFIG",
              help="Configuration file (YAML); RECONCILER_* environment and these flags override it.")
@click.option("--repo", default=None, help="Override repository.url.")
@click.option("--branch", default=None, help="Override repository.branch.")
def run(config_file: Path | None, repo: str | None, branch: str | None) -> None:
    """Run the service: reconcile on an interval and on push webhooks, write status to Git,
    serve /healthz /readyz (:8081), /metrics (:9090) and /webhook (:8080)."""
    from .service import Service

    try:
        config = _load_config(config_file, repo, branch)
        level = getattr(logging, config.logging.level.upper())
        logs.setup(level, config.logging.format)
        # APScheduler's "Running job"/"executed successfully" lines, once per cycle: debug only
        logging.getLogger("apscheduler").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
        service = Service(config)
    except ReconcilerError as e:
        _fail(str(e))
        return
    try:
        service.run_forever()
    except (RuntimeError, TimeoutError, OSError) as e:  # a port in use, an address not ours
        service.stop()
        _fail(f"cannot start: {e}")


@main.group("config")
def config_group() -> None:
    """Inspect the service configuration."""


CONFIG_WARNINGS = ("server.webhook: no secret configured",)


@config_group.command("check")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), envvar="RECONCILER_CONFIG")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def config_check(config_file: Path | None, output: str) -> None:
    """Validate the configuration and show the effective settings (secrets as set/not set).

    Exit 0 when valid, 1 when it has problems, 2 when it cannot be read at all."""
    import yaml

    from .config import ConfigUnreadable, describe, load_config
    from .service import check

    try:
        config = load_config(config_file)
    except ConfigError as e:
        _echo(f"error: {e}", err=True)
        sys.exit(EXIT_ERROR if isinstance(e, ConfigUnreadable) else EXIT_INVALID)
    found = check(config)
    # what still lets the service work (no webhook secret: polling still works) is a warning
    warnings = [p for p in found if p.startswith(CONFIG_WARNINGS)]
    problems = [p for p in found if p not in warnings]
    effective = describe(config)
    report = {"valid": not problems, "problems": problems, "warnings": warnings, "config": effective}
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(report, sort_keys=False))
    else:
        click.echo(yaml.safe_dump(effective, sort_keys=False).rstrip())
        click.echo(safe_lines([*(f"problem: {p}" for p in problems), *(f"warning: {w}" for w in warnings)]))
        click.echo("configuration is valid" if not problems else "configuration has problems")
    sys.exit(EXIT_INVALID if problems else EXIT_OK)


# -- status / get / wait / diff ------------------------------------------------------------

def _live_view(source: GitSource, commit: str, cluster: bool, kubeconfig: str | None, context: str | None,
               namespace: str, cooldown: str, templates: Path | None = None, *,
               one_shot: bool = True) -> tuple[Any, dict[str, Any], bool]:
    """(declaration, states, cluster_used): the status recorded in Git and, with --cluster,
    what a cycle would record now against the live cluster (nothing is changed).
    ``one_shot``: the caller is a :func:`_one_shot` command that loads once."""
    from .plan import states_from

    decl = source.load(commit)
    if one_shot:
        _loaded(decl)
    states = states_from(decl)
    if not cluster:
        return decl, states, False
    live, _ = _cluster(kubeconfig, context, namespace, offline_ok=False)
    return decl, _dry_run(source, commit, live, namespace, cooldown, templates=templates).states, True


def _dry_run(source: GitSource, commit: str, live: Cluster, namespace: str, cooldown: str,
             gate: Gate | None = None, templates: Path | None = None) -> CycleResult:
    """What a cycle would decide at ``commit`` against ``live`` — nothing is changed."""
    from .cycle import Reconciler
    from .lifecycle import Settings
    from .render import Renderer

    settings = Settings(namespace=namespace, cooldown=timedelta(seconds=parse_duration(cooldown)))
    outcome = Reconciler(source, live, renderer=Renderer(templates, namespace), settings=settings,
                         dry_run=True, gate=gate).run_once(commit)
    if outcome.cluster_unknown:
        raise ConfigError("; ".join(outcome.errors) or "the cluster cannot be read")
    return outcome


def view_options(func: F) -> F:
    func = click.option("--cooldown", default="5m", show_default=True, hidden=True)(func)
    func = click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True,
                        envvar="RECONCILER_NAMESPACE")(func)
    func = kube_options(func)
    func = click.option("--cluster/--no-cluster", default=False,
                        help="Also read the live cluster (default: the status recorded in Git).")(func)
    return source_options(func)


def _matches(r: dict[str, Any], phase: tuple[str, ...], health: tuple[str, ...], sync: tuple[str, ...],
             selector: tuple[str, ...]) -> bool:
    for wanted, value in ((phase, r["phase"]), (health, r["health"]), (sync, r["sync"])):
        if wanted and value not in wanted:
            return False
    for term in selector:
        key, _, expected = term.partition("=")
        if r["labels"].get(key) != expected:
            return False
    return True


@main.command()
@view_options
@click.option("--phase", multiple=True, help="Only these phases (repeatable).")
@click.option("--health", multiple=True, help="Only these health values (repeatable).")
@click.option("--sync", "sync_", multiple=True, help="Only these sync values (repeatable).")
@click.option("-l", "--selector", multiple=True, help="Label filter key=value (repeatable, all must match).")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table",
              show_default=True)
@_one_shot
def status(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, cluster: bool,
           kubeconfig: str | None, context: str | None, namespace: str, cooldown: str, phase: tuple[str, ...],
           health: tuple[str, ...], sync_: tuple[str, ...], selector: tuple[str, ...], output: str) -> None:
    """Every execution with its phase, sync and health (like `argocd app list`)."""
    from . import views
    from .report import format_status

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, cluster, kubeconfig, context, namespace, cooldown)
    except (ReconcilerError, OSError, ValueError) as e:
        _fail(str(e))
        return
    every = views.rows(decl, states)
    selected = [r for r in every if _matches(r, phase, health, sync_, selector)]
    click.echo(format_status(selected, output, views.summary(decl, states, repository=source.display_url,
                                                              branch=branch, revision=commit, all_rows=every)))


@main.command()
@click.argument("name")
@view_options
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@_one_shot
def get(name: str, repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, cluster: bool,
        kubeconfig: str | None, context: str | None, namespace: str, cooldown: str, output: str) -> None:
    """Everything about one execution: state, failure summary, conditions, commits, timeline."""
    from . import views
    from .render import Renderer
    from .report import format_detail

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, cluster, kubeconfig, context, namespace, cooldown)
        data = views.detail(source, commit, decl, states, name, Renderer(namespace=namespace))
    except (ReconcilerError, OSError, ValueError) as e:
        _fail(str(e))
        return
    if data is None:
        _fail(f"no execution named {name!r}")
        return
    click.echo(format_detail(data, output))


@main.command()
@click.argument("name")
@view_options
@click.option("--for", "condition", default="phase=Completed", show_default=True,
              help="phase=<Phase>, health=<Health> or sync=<Sync> to wait for.")
@click.option("--timeout", default="10m", show_default=True)
@click.option("--interval", default="5s", show_default=True, help="How often to check.")
def wait(name: str, repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, cluster: bool,
         kubeconfig: str | None, context: str | None, namespace: str, cooldown: str, condition: str,
         timeout: str, interval: str) -> None:
    """Wait until an execution reaches a phase, health or sync value.

    Exit 0 when reached, 1 when it ended (terminal phase) without it, 2 on timeout or error
    (an execution nothing declares or records, a --for value that cannot happen: at once)."""
    from . import views

    key, _, wanted = condition.partition("=")
    allowed = {"phase": views.PHASES, "health": views.HEALTHS, "sync": views.SYNCS}
    if key not in allowed or wanted not in allowed[key]:
        _fail(f"--for takes phase=<{'|'.join(views.PHASES)}>, health=<{'|'.join(views.HEALTHS)}> or "
              f"sync=<{'|'.join(views.SYNCS)}>, e.g. phase=Completed; not {condition!r}")
    try:
        deadline = time.monotonic() + parse_duration(timeout)
        every = parse_duration(interval)
        source = open_source(repo, branch, sub_path, cache_dir)
    except (ReconcilerError, ValueError) as e:
        _fail(str(e))
        return
    pause = threading.Event()
    known = False
    while True:
        try:
            decl, states, _ = _live_view(source, source.fetch(), cluster, kubeconfig, context, namespace,
                                         cooldown, one_shot=False)
            states = views.with_invalid(decl, states)
            if not known and decl.find(name) is None and name not in states:
                _fail(f"no execution named {name!r} is declared or recorded (see `reconciler status`)")
            known = True
        except ReconcilerError as e:
            _echo(f"warning: {e}", err=True)
            states = {}
        state = states.get(name)
        phase = state.phase if state else "Pending"
        current = {"phase": phase, "health": state.health if state else "Progressing",
                   "sync": state.sync if state else "OutOfSync"}[key]
        if current == wanted:
            click.echo(safe_line(f"{name}: {current}" + (f" ({state.reason})" if state and state.reason else "")))
            sys.exit(EXIT_OK)
        if state is not None and state.terminal:
            click.echo(safe_line(f"{name}: ended {phase} ({state.reason}): {state.message}"), err=True)
            sys.exit(EXIT_INVALID)
        if time.monotonic() >= deadline:
            click.echo(safe_line(f"{name}: still {phase} after {timeout}"), err=True)
            sys.exit(EXIT_ERROR)
        pause.wait(min(every, max(0.0, deadline - time.monotonic())))


@main.command()
@source_options
@kube_options
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True, envvar="RECONCILER_NAMESPACE")
@click.option("--cooldown", default="5m", show_default=True, hidden=True)
@click.option("--templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="RECONCILER_TEMPLATES", help="Directory with your own pipelinerun/job templates.")
@_one_shot
def diff(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, kubeconfig: str | None,
         context: str | None, namespace: str, cooldown: str, templates: Path | None) -> None:
    """Declared versus cluster. Exit 0 in sync, 1 out of sync, 2 error."""
    from .render import Renderer
    from .report import format_diff

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, True, kubeconfig, context, namespace, cooldown,
                                     templates=templates)
        live, _ = _cluster(kubeconfig, context, namespace, offline_ok=False)
        runs = live.list_runs()
        renderer = Renderer(templates, namespace)
    except (ReconcilerError, OSError, ValueError) as e:
        _fail(str(e))
        return
    text, out_of_sync = format_diff(decl, states, runs, renderer)
    click.echo(text)
    sys.exit(EXIT_INVALID if out_of_sync else EXIT_OK)


# -- new ------------------------------------------------------------------------------------

@main.command("new")
@click.option("--workflow", default=None, help="workflowId from the catalog (workflows/*.yaml).")
@click.option("--version", "wf_version", default=None, help="Catalog version (default: the newest).")
@click.option("--target", default=None, help='targetResource: "ns/Kind/name" or "Kind/name".')
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter (repeatable).")
@click.option("--name", default=None, help="metadata.name (default: <workflow>-<target name>-<date>, unique).")
@click.option("--after", multiple=True, help="Start only after this execution completed (repeatable).")
@click.option("--on-failure-of", default=None, help="A fallback: start only if this execution fails.")
@click.option("--on-failure-reason", "reasons", multiple=True,
              help="With --on-failure-of: only for this failure reason (repeatable), e.g. OOMKilled.")
@click.option("--rationale", default=None, help="Why (audit only).")
@click.option("--confidence", type=float, default=None, help="0..1 (audit only).")
@click.option("--remediation-request", default=None, help="remediationRequestRef.name (audit correlation).")
@click.option("--suspend", is_flag=True, help="Merge it held (spec.suspend: true).")
@click.option("-f", "--file", "request_file", type=click.File("r"), default=None,
              help="A JSON request ('-' for stdin) with the same fields: workflow, version, target, "
                   "params, name, after, onFailureOf, onFailureReasons, rationale, confidence.")
@click.option("--repo", "root", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="The watched root (the directory holding executions/ and workflows/).")
@click.option("--branch", default=None, help="Create this branch and commit the file on it.")
@click.option("--push", is_flag=True, help="With --branch: push the branch (never forced).")
@click.option("--remote", default="origin", show_default=True, help="Where --push pushes.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def new(workflow: str | None, wf_version: str | None, target: str | None, params: tuple[str, ...],
        name: str | None, after: tuple[str, ...], on_failure_of: str | None, reasons: tuple[str, ...],
        rationale: str | None, confidence: float | None, remediation_request: str | None, suspend: bool,
        request_file: Any, root: Path, branch: str | None, push: bool, remote: str, output: str) -> None:
    """Scaffold a valid execution from the catalog: pick a unique name, fill and check the
    parameters, write executions/<name>.yaml, print its plan; with --branch, commit it on a
    new branch ready for a pull request.  Exit 0 written, 1 invalid, 2 usage or Git error."""
    from datetime import datetime, timezone

    from . import scaffold as scaffolding
    from .report import plan_json, plan_text

    def finish(code: int, message: str, problems: tuple[Problem, ...] = (), **data: Any) -> None:
        if output == "json":
            click.echo(json.dumps({"valid": code == EXIT_OK, **({"error": message} if message else {}),
                                   "problems": [p.__dict__ for p in problems], **data}, indent=2))
        elif message:
            _echo(f"error: {message}", err=True)
            if problems:
                click.echo(safe_lines(str(p) for p in problems), err=True)
        sys.exit(code)

    try:
        if request_file is not None:
            if workflow or target or params or name or after or on_failure_of or reasons:
                raise scaffolding.ScaffoldError("-f takes the whole request: give the fields in the JSON")
            try:
                raw = json.loads(request_file.read())
            except ValueError as e:
                raise scaffolding.ScaffoldError(f"-f: not JSON: {e}") from None
            request = scaffolding.parse_request(raw)
        else:
            if not workflow or not target:
                raise scaffolding.ScaffoldError("--workflow and --target are required (or -f FILE)")
            pairs = {}
            for item in params:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise scaffolding.ScaffoldError(f"--param {item!r}: expected NAME=VALUE")
                pairs[key] = value
            request = scaffolding.parse_request({
                "workflow": workflow, "version": wf_version, "target": target, "params": pairs, "name": name,
                "after": list(after), "onFailureOf": on_failure_of, "onFailureReasons": list(reasons),
                "rationale": rationale, "confidence": confidence, "remediationRequest": remediation_request,
                "suspend": suspend})
        if push and not branch:
            raise scaffolding.ScaffoldError("--push needs --branch")
        if not any((root / d).is_dir() for d in ("executions", "workflows")):
            raise scaffolding.ScaffoldError(f"--repo: {root} holds neither executions/ nor workflows/")
        if branch:
            scaffolding.check_branch(root, branch)
        result = scaffolding.scaffold(request, root, today=datetime.now(timezone.utc).date())
        scaffolding.write(result)
        commit = scaffolding.commit_on_branch(result, branch, push=push, remote=remote) if branch else ""
    except scaffolding.ScaffoldError as e:
        finish(EXIT_INVALID if e.invalid else EXIT_ERROR, str(e), e.problems)
        return
    except OSError as e:
        finish(EXIT_ERROR, str(e))
        return
    if output == "json":
        finish(EXIT_OK, "", name=result.name, file=result.file, document=result.text,
               plan=json.loads(plan_json(result.plan)), branch=branch or None, commit=commit or None,
               pushed=bool(push and branch))
        return
    _echo(f"wrote {result.file}")
    click.echo(plan_text(result.plan))
    if branch:
        _echo(f"committed {commit[:12]} on branch {branch}" + (f"; pushed to {remote}" if push else
                                                                "; push it and open a pull request"))
    sys.exit(EXIT_OK)


@main.command()
@click.option("--repo", "repo_path", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Try this repository (a directory; it is copied, never changed). Default: examples-repo/.")
@click.option("--fail", "fail_specs", multiple=True, metavar="WORKFLOW[:REASON]",
              help="Make the simulator fail runs of this workflowId (reason: oom, exit, forbidden, image_pull, "
                   "timeout, task_timeout, quota, config, param_missing, deadline; default oom). Repeatable.")
@click.option("--no-pause", is_flag=True, help="Do not wait for Enter between steps.")
@click.option("--exit-after", is_flag=True, help="Stop after the walk-through instead of serving until Ctrl-C.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Dashboard port on 127.0.0.1 (0: any free port).")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (remote, log) after exit.")
def testdrive(repo_path: Path | None, fail_specs: tuple[str, ...], no_pause: bool, exit_after: bool, port: int,
              keep: bool) -> None:
    """Try the whole loop on a simulated cluster: no cluster, no network, nothing to set up.

    Seeds a local bare Git remote from examples-repo/ (or --repo), starts the real service
    against a built-in simulated Kubernetes API with Tekton and Job controllers, prints the
    dashboard's URL and walks through runs created, one succeeding and one failing, the
    status commits in the remote, and a new execution merged and held by the cooldown.
    Ctrl-C stops everything. Exit 0; 2 for a bad flag or repository; 1 if a step never happened.
    """
    from . import testdrive as td

    try:
        failures = td.parse_failures(fail_specs)
        source = repo_path or td.packaged_examples()
        if source is None:
            raise td.TestdriveError("no examples-repo/ next to this installation: pass --repo PATH "
                                    "(a directory with executions/ and workflows/, e.g. the project's examples-repo)")
        options = td.Options(source=source.resolve(), failures=failures, pause=not no_pause, port=port,
                             hold=not exit_after, keep=keep)
        code = td.run(options, lambda line: click.echo(line))
    except td.TestdriveError as e:
        _echo(f"{td.TAG} error: {e}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), envvar="RECONCILER_CONFIG",
              help="The service's configuration (the same file `reconciler run` reads).")
@kube_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def doctor(config_file: Path | None, kubeconfig: str | None, context: str | None, output: str) -> None:
    """Check the configured cluster and repository before (or after) installing.

    API server and version (>= 1.27), Tekton's v1 PipelineRun CRD, the bundles resolver,
    the execution namespace, every verb the reconciler needs (one SelfSubjectAccessReview
    each), the ServiceAccounts the declared executions name, Git with the configured
    credentials and branch, the webhook secret, notification sinks. Each failure prints
    its fix. Exit 0 all passed (warnings allowed), 1 a check failed, 2 the configuration
    cannot be read."""
    from . import doctor as dr
    from .config import load_config
    from .kube import KubeClient, RetryPolicy, load_api_client

    try:
        config = load_config(config_file)
        kube_config = config.kubernetes
        configured = str(kube_config.kubeconfig) if kube_config.kubeconfig else None
        api = load_api_client(context=context or kube_config.context, kubeconfig=kubeconfig or configured)
    except ConfigError as e:
        _echo(f"error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    checks = dr.run_checks(config, KubeClient(api, retry=RetryPolicy(attempts=1), request_timeout=15.0))
    if output == "json":
        click.echo(json.dumps([{"check": c.name, "status": c.status, "detail": c.detail, "fix": c.fix}
                               for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(safe_lines(dr.format_check(c)))
        failed = sum(c.status == dr.FAIL for c in checks)
        click.echo(f"{failed} check(s) failed" if failed else "all checks passed")
    sys.exit(dr.exit_code(checks))
