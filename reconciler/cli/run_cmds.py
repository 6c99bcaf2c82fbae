"""``reconciler sync``, ``run`` and ``config check``: reconciling, once or as the service.

``sync --once`` runs one reconcile cycle (``--dry-run``: decides, changes nothing); ``run``
is the long-running service (:mod:`reconciler.service.app`) on its configuration, which
``config check`` validates and shows with secrets as set/not set.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.declare.names import DEFAULT_NAMESPACE, parse_duration
from reconciler.service import logs

from ..errors import ConfigError, ReconcilerError
from ..safetext import safe_lines
from .common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    echo,
    fail,
    kube_options,
    open_cluster,
    open_source,
    source_options,
)

# Everything else is imported by the command that needs it (see reconciler.cli).
if TYPE_CHECKING:
    from reconciler.service.config_model import Config


@click.command()
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
        fail("sync needs --once (the long-running service is `reconciler run`)")
    from reconciler.render.renderer import Renderer
    from reconciler.run.cluster import DryRunCluster
    from reconciler.run.lifecycle import Settings
    from reconciler.service.cycle import Reconciler
    from reconciler.views.report import format_cycle

    try:
        settings = Settings(namespace=namespace, cooldown=timedelta(seconds=parse_duration(cooldown)))
        source = open_source(repo, branch, sub_path, cache_dir)
        cluster, note = open_cluster(kubeconfig, context, namespace, offline_ok=dry_run)
        if dry_run:
            cluster = DryRunCluster(cluster)
        reconciler = Reconciler(source, cluster, renderer=Renderer(templates, namespace), settings=settings,
                                dry_run=dry_run)
        result = reconciler.run_once()
    except (ReconcilerError, ValueError) as e:
        fail(str(e))
        return
    if note:
        echo(note, err=True)
    click.echo(format_cycle(result, output, getattr(cluster, "intentions", None)))
    if not result.revision or (result.cluster_unknown and not dry_run):
        sys.exit(EXIT_ERROR)
    invalid = dry_run and result.declaration is not None and bool(result.declaration.invalid
                                                                   or result.declaration.invalid_catalog)
    sys.exit(EXIT_INVALID if result.errors or invalid else EXIT_OK)


def _load_config(config_file: Path | None, repo: str | None, branch: str | None) -> Config:
    from reconciler.service.config import load_config

    overrides: dict[str, Any] = {}
    if repo or branch:
        overrides["repository"] = {k: v for k, v in (("url", repo), ("branch", branch)) if v}
    return load_config(config_file, overrides=overrides)


@click.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), envvar="RECONCILER_CONFIG",
              help="Configuration file (YAML); RECONCILER_* environment and these flags override it.")
@click.option("--repo", default=None, help="Override repository.url.")
@click.option("--branch", default=None, help="Override repository.branch.")
def run(config_file: Path | None, repo: str | None, branch: str | None) -> None:
    """Run the service: reconcile on an interval and on push webhooks, write status to Git,
    serve /healthz /readyz (:8081), /metrics (:9090) and /webhook (:8080)."""
    from reconciler.service.app import Service

    try:
        config = _load_config(config_file, repo, branch)
        level = getattr(logging, config.logging.level.upper())
        logs.setup(level, config.logging.format)
        # APScheduler's "Running job"/"executed successfully" lines, once per cycle: debug only
        logging.getLogger("apscheduler").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
        service = Service(config)
    except ReconcilerError as e:
        fail(str(e))
        return
    try:
        service.run_forever()
    except (RuntimeError, TimeoutError, OSError) as e:  # a port in use, an address not ours
        service.stop()
        fail(f"cannot start: {e}")


@click.group("config")
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

    from reconciler.service.app import check
    from reconciler.service.config import ConfigUnreadable, describe, load_config

    try:
        config = load_config(config_file)
    except ConfigError as e:
        echo(f"error: {e}", err=True)
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
