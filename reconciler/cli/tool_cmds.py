"""``reconciler new``, ``testdrive`` and ``doctor``: helpers around the loop.

``new`` scaffolds a valid execution from the catalog (optionally committed on a branch for a
pull request); ``testdrive`` runs the whole loop on a simulated cluster; ``doctor`` checks a
cluster and repository before (or after) installing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, Problem
from ..safetext import safe_lines
from .common import EXIT_ERROR, EXIT_INVALID, EXIT_OK, echo, kube_options

# Everything else is imported by the command that needs it (see reconciler.cli).


@click.command("new")
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

    from reconciler.tools import scaffold as scaffolding
    from reconciler.views.report import plan_json, plan_text

    def finish(code: int, message: str, problems: tuple[Problem, ...] = (), **data: Any) -> None:
        if output == "json":
            click.echo(json.dumps({"valid": code == EXIT_OK, **({"error": message} if message else {}),
                                   "problems": [p.__dict__ for p in problems], **data}, indent=2))
        elif message:
            echo(f"error: {message}", err=True)
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
    echo(f"wrote {result.file}")
    click.echo(plan_text(result.plan))
    if branch:
        echo(f"committed {commit[:12]} on branch {branch}" + (f"; pushed to {remote}" if push else
                                                                "; push it and open a pull request"))
    sys.exit(EXIT_OK)


@click.command()
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
    from reconciler.tools import testdrive as td

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
        echo(f"{td.TAG} error: {e}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


@click.command()
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
    from reconciler.run.kube import KubeClient, RetryPolicy, load_api_client
    from reconciler.service.config import load_config
    from reconciler.tools import doctor as dr

    try:
        config = load_config(config_file)
        kube_config = config.kubernetes
        configured = str(kube_config.kubeconfig) if kube_config.kubeconfig else None
        api = load_api_client(context=context or kube_config.context, kubeconfig=kubeconfig or configured)
    except ConfigError as e:
        echo(f"error: {e}", err=True)
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
