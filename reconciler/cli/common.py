"""What every ``reconciler`` command shares: exit codes, safe output, options, opening the source.

Exit codes are part of the contract so CI jobs can gate on them: 0 = fine, 1 = the input is
invalid (or the plan shows violations), 2 = usage, I/O, Git or template error.  Every line
composed here from untrusted parts goes out through :func:`echo` (see ``safetext``).  The
one-shot commands' heap handling (:func:`one_shot_command`, :func:`checked_declaration`), the repository and
cluster options, and the dry-run cycle that plan, status and diff share live here too.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from reconciler.declare.names import parse_duration
from reconciler.source import gitcmd

from ..errors import ConfigError
from ..safetext import safe_block

# Everything else is imported by the command that needs it (see reconciler.cli).
if TYPE_CHECKING:
    from reconciler.declare.declared import Declaration
    from reconciler.gate.checks import Gate
    from reconciler.record.transitions import CycleResult
    from reconciler.run.cluster import Cluster
    from reconciler.source.gitsource import GitSource


F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def echo(message: str, *, err: bool = False) -> None:
    """Print a message composed here from untrusted parts (names, errors, status fields).

    Its own line breaks are kept; each line is cleaned and guarded (see ``safetext``)."""
    click.echo(safe_block(message), err=err)


def fail(message: str) -> None:
    echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def checked_declaration(decl: Declaration) -> Declaration:
    """A declaration a one-shot command (decorated with :func:`one_shot_command`) keeps until it exits.

    What the load built (hundreds of thousands of objects at 10 000 executions) stays alive,
    and holds no garbage cycles; left in the cyclic collector's generations, each full pass
    the plan or the table built on top triggers walks all of it again (~0.2 s a pass at
    10 000 — the time cProfile charged to ``names.run_name`` and the report).  ``gc.freeze``
    moves it out of those passes: the output is the same, reference counting still frees
    whatever is dropped, only the sweep is skipped."""
    gc.freeze()
    return decl


def one_shot_command(func: F) -> F:
    """A command that may call :func:`checked_declaration`: when it returns or exits, what was frozen goes
    back to the collector, so a process running several commands (tests with ``CliRunner``)
    is not left with a heap the collector never looks at.

    The collector is off while the command runs: the load pauses it anyway, and turning it
    back on at the load's end made the very next allocation walk everything the load built
    (generation 0 held all of it: ~0.8 s at 50 000) just before :func:`checked_declaration` froze it.
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
    from reconciler.source.gitsource import GitSource

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


def open_cluster(kubeconfig: str | None, context: str | None, namespace: str, *,
                 offline_ok: bool) -> tuple[Cluster, str]:
    from reconciler.run.cluster import KubeCluster, OfflineCluster
    from reconciler.run.kube import KubeClient, load_api_client

    try:
        api = load_api_client(context=context, kubeconfig=kubeconfig)
    except ConfigError as e:
        if not offline_ok:
            raise
        return OfflineCluster(namespace), f"no cluster configured ({e}); planning against an empty cluster"
    return KubeCluster(KubeClient(api), namespace), ""


def dry_run_cycle(source: GitSource, commit: str, live: Cluster, namespace: str, cooldown: str,
             gate: Gate | None = None, templates: Path | None = None) -> CycleResult:
    """What a cycle would decide at ``commit`` against ``live`` — nothing is changed."""
    from reconciler.render.renderer import Renderer
    from reconciler.run.lifecycle import Settings
    from reconciler.service.cycle import Reconciler

    settings = Settings(namespace=namespace, cooldown=timedelta(seconds=parse_duration(cooldown)))
    outcome = Reconciler(source, live, renderer=Renderer(templates, namespace), settings=settings,
                         dry_run=True, gate=gate).run_once(commit)
    if outcome.cluster_unknown:
        raise ConfigError("; ".join(outcome.errors) or "the cluster cannot be read")
    return outcome
