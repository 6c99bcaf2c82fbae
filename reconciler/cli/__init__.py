"""The ``reconciler`` command line: the ``main`` group, with every command registered on it.

Thin by design: each command gathers options, calls the pure core or an adapter, and
prints one of the report formats.  Exit codes are part of the contract so CI jobs can
gate on them: 0 = fine, 1 = the input is invalid (or the plan shows violations),
2 = usage, I/O, Git or template error.

Every human-readable line goes out through :mod:`reconciler.safetext` (the report
builders, and :func:`echo` for the lines composed here): repository-controlled text can
neither drive the terminal nor issue a GitHub Actions workflow command.  Nothing is
printed through ``rich``, so ``[markup]`` in a name is shown as it is.

The commands live by group: ``check_cmds`` (validate, render, schema), ``view_cmds`` (plan,
status, get, wait, diff), ``run_cmds`` (sync, run, config check) and ``tool_cmds`` (new,
testdrive, doctor); what they share (exit codes, options, safe output, opening the source
and the cluster) is ``common``.  Each imports at start only what ``--help`` needs:
everything else is imported by the command that needs it.  The Kubernetes client, Git,
Jinja, pydantic and the service's web stack cost ~0.5 s to import, and ``validate`` or an
offline ``plan`` needs only some of them (``--help`` none); tests/test_startup_cost.py
holds each command to what it uses.
"""

from __future__ import annotations

import logging

import click

from reconciler import __version__
from reconciler.service import logs

from .check_cmds import render, schema, validate
from .run_cmds import config_group, run, sync
from .tool_cmds import doctor, new, testdrive
from .view_cmds import diff, get, plan, status, wait


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="RECONCILER_LOG_FORMAT",
              show_default=True, help="json: one object per line, for log shippers.")
def main(verbose: int, log_format: str) -> None:
    """GitOps reconciler for kubernaut remediation runs (Tekton PipelineRuns and Jobs)."""
    logs.setup(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING, log_format)


# registered in the order they were written (``--help`` lists them sorted)
for _command in (validate, render, plan, schema, sync, run, config_group, status, get, wait, diff, new, testdrive,
                 doctor):
    main.add_command(_command)
