"""``reconciler plan``, ``status``, ``get``, ``wait`` and ``diff``: views of the declared state.

What would run (``plan``, also as a pull-request preview), what the status in Git (or,
with ``--cluster``, a dry-run cycle against the live cluster) says about every execution or
one of them, waiting for one to reach a state, and declared versus cluster.  Nothing here
changes the repository or the cluster.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.declare.names import DEFAULT_NAMESPACE, parse_duration
from reconciler.source import gitcmd

from ..errors import ConfigError, ReconcilerError
from ..safetext import safe_line
from .common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    F,
    checked_declaration,
    dry_run_cycle,
    echo,
    fail,
    kube_options,
    one_shot_command,
    open_cluster,
    open_source,
    source_options,
)

# Everything else is imported by the command that needs it (see reconciler.cli).
if TYPE_CHECKING:
    from reconciler.source.gitsource import GitSource


@click.command()
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
@one_shot_command
def plan(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None,
         base: str | None, head: str | None, cluster: bool, kubeconfig: str | None, context: str | None,
         namespace: str, cooldown: str, policy: Path | None, output: str) -> None:
    """Show what would run: each execution's action and run name (no cluster needed).

    With --cluster, the decisions a cycle would take now: what is running, which targets
    are locked or cooling down; with --policy, the policy and sync windows too. With
    --base/--head, only what a change adds, edits or removes: a pull-request preview.
    Exit 1 when the plan contains invalid files, immutability or policy violations.
    """
    from reconciler.views.plan import plan_change, plan_declaration, plan_from_states, with_states
    from reconciler.views.report import chunks, plan_json, plan_markdown, plan_text_lines

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
        head_decl = checked_declaration(source.load(head_commit))
        gate = None
        if policy:
            from reconciler.gate.checks import Gate
            from reconciler.gate.policy_file import load_policy

            gate = Gate(policy=load_policy(policy))
        if base_commit:
            result = plan_change(checked_declaration(source.load(base_commit)), head_decl,
                                 base_revision=base_commit, revision=head_commit)
        else:
            result = plan_declaration(head_decl, head_commit)
        if cluster or gate is not None:
            from reconciler.run.cluster import OfflineCluster

            live = open_cluster(kubeconfig, context, namespace, offline_ok=False)[0] if cluster \
                else OfflineCluster(namespace)
            outcome = dry_run_cycle(source, head_commit, live, namespace, cooldown, gate)
            result = with_states(result, outcome.states) if base else plan_from_states(
                head_decl, outcome.states, head_commit)
    except (ReconcilerError, OSError) as e:
        fail(str(e))
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
        echo(f"note: {count} uncommitted change(s) in the work tree are ignored: the plan reads commit "
              f"{head_commit[:12]} (commit them, or check the files with `reconciler validate`)", err=True)


# -- status / get / wait / diff ------------------------------------------------------------

def _live_view(source: GitSource, commit: str, cluster: bool, kubeconfig: str | None, context: str | None,
               namespace: str, cooldown: str, templates: Path | None = None, *,
               one_shot: bool = True) -> tuple[Any, dict[str, Any], bool]:
    """(declaration, states, cluster_used): the status recorded in Git and, with --cluster,
    what a cycle would record now against the live cluster (nothing is changed).
    ``one_shot``: the caller is a :func:`one_shot_command` command that loads once."""
    from reconciler.views.plan import states_from

    decl = source.load(commit)
    if one_shot:
        checked_declaration(decl)
    states = states_from(decl)
    if not cluster:
        return decl, states, False
    live, _ = open_cluster(kubeconfig, context, namespace, offline_ok=False)
    return decl, dry_run_cycle(source, commit, live, namespace, cooldown, templates=templates).states, True


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


@click.command()
@view_options
@click.option("--phase", multiple=True, help="Only these phases (repeatable).")
@click.option("--health", multiple=True, help="Only these health values (repeatable).")
@click.option("--sync", "sync_", multiple=True, help="Only these sync values (repeatable).")
@click.option("-l", "--selector", multiple=True, help="Label filter key=value (repeatable, all must match).")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table",
              show_default=True)
@one_shot_command
def status(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, cluster: bool,
           kubeconfig: str | None, context: str | None, namespace: str, cooldown: str, phase: tuple[str, ...],
           health: tuple[str, ...], sync_: tuple[str, ...], selector: tuple[str, ...], output: str) -> None:
    """Every execution with its phase, sync and health (like `argocd app list`)."""
    from reconciler.views import status_view as views
    from reconciler.views.report import format_status

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, cluster, kubeconfig, context, namespace, cooldown)
    except (ReconcilerError, OSError, ValueError) as e:
        fail(str(e))
        return
    every = views.rows(decl, states)
    selected = [r for r in every if _matches(r, phase, health, sync_, selector)]
    click.echo(format_status(selected, output, views.summary(decl, states, repository=source.display_url,
                                                              branch=branch, revision=commit, all_rows=every)))


@click.command()
@click.argument("name")
@view_options
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@one_shot_command
def get(name: str, repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, cluster: bool,
        kubeconfig: str | None, context: str | None, namespace: str, cooldown: str, output: str) -> None:
    """Everything about one execution: state, failure summary, conditions, commits, timeline."""
    from reconciler.render.renderer import Renderer
    from reconciler.views import status_view as views
    from reconciler.views.report import format_detail

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, cluster, kubeconfig, context, namespace, cooldown)
        data = views.detail(source, commit, decl, states, name, Renderer(namespace=namespace))
    except (ReconcilerError, OSError, ValueError) as e:
        fail(str(e))
        return
    if data is None:
        fail(f"no execution named {name!r}")
        return
    click.echo(format_detail(data, output))


@click.command()
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
    from reconciler.views import status_view as views

    key, _, wanted = condition.partition("=")
    allowed = {"phase": views.PHASES, "health": views.HEALTHS, "sync": views.SYNCS}
    if key not in allowed or wanted not in allowed[key]:
        fail(f"--for takes phase=<{'|'.join(views.PHASES)}>, health=<{'|'.join(views.HEALTHS)}> or "
              f"sync=<{'|'.join(views.SYNCS)}>, e.g. phase=Completed; not {condition!r}")
    try:
        deadline = time.monotonic() + parse_duration(timeout)
        every = parse_duration(interval)
        source = open_source(repo, branch, sub_path, cache_dir)
    except (ReconcilerError, ValueError) as e:
        fail(str(e))
        return
    pause = threading.Event()
    known = False
    while True:
        try:
            decl, states, _ = _live_view(source, source.fetch(), cluster, kubeconfig, context, namespace,
                                         cooldown, one_shot=False)
            states = views.with_invalid(decl, states)
            if not known and decl.find(name) is None and name not in states:
                fail(f"no execution named {name!r} is declared or recorded (see `reconciler status`)")
            known = True
        except ReconcilerError as e:
            echo(f"warning: {e}", err=True)
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


@click.command()
@source_options
@kube_options
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True, envvar="RECONCILER_NAMESPACE")
@click.option("--cooldown", default="5m", show_default=True, hidden=True)
@click.option("--templates", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="RECONCILER_TEMPLATES", help="Directory with your own pipelinerun/job templates.")
@one_shot_command
def diff(repo: str, branch: str, sub_path: str | None, cache_dir: Path | None, kubeconfig: str | None,
         context: str | None, namespace: str, cooldown: str, templates: Path | None) -> None:
    """Declared versus cluster. Exit 0 in sync, 1 out of sync, 2 error."""
    from reconciler.render.renderer import Renderer
    from reconciler.views.report import format_diff

    try:
        source = open_source(repo, branch, sub_path, cache_dir)
        commit = source.fetch()
        decl, states, _ = _live_view(source, commit, True, kubeconfig, context, namespace, cooldown,
                                     templates=templates)
        live, _ = open_cluster(kubeconfig, context, namespace, offline_ok=False)
        runs = live.list_runs()
        renderer = Renderer(templates, namespace)
    except (ReconcilerError, OSError, ValueError) as e:
        fail(str(e))
        return
    text, out_of_sync = format_diff(decl, states, runs, renderer)
    click.echo(text)
    sys.exit(EXIT_INVALID if out_of_sync else EXIT_OK)
