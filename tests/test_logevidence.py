"""Only the line that explains a failure leaves the log, and never a credential."""

from __future__ import annotations

import pytest

from reconciler.observe.logevidence import explaining_line, redact, with_step_message

FORBIDDEN = ('Error from server (Forbidden): deployments.apps "api" is forbidden: User "system:serviceaccount:'
             'w:runner" cannot patch resource "deployments" in API group "apps" in the namespace "payments"')


@pytest.mark.parametrize(("log", "expected"), [
    ("+ kubectl patch ...\n" + FORBIDDEN + "\n+ exit 1\n", FORBIDDEN),
    ("starting\nall good\nexit 1\n", None),
    ("the broom closet has room for zoom\n", None),
    ("java.lang.OutOfMemoryError: Java heap space\n", None),
    ("fatal: out of memory allocating 1GiB\n", "fatal: out of memory allocating 1GiB"),
    ("", None),
])
def test_explaining_line(log: str, expected: str | None) -> None:
    assert explaining_line(log) == expected


@pytest.mark.parametrize(("line", "secret"), [
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.payload.sig forbidden", "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ"),
    ("login failed password=hunter2 forbidden", "hunter2"),
    ("token: s3cr3t-value forbidden", "s3cr3t-value"),
    ("git clone https://robot:ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/x forbidden", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("using key glpat-abcdefghijklmnopqrstu forbidden", "glpat-abcdefghijklmnopqrstu"),
])
def test_credentials_are_masked(line: str, secret: str) -> None:
    out = explaining_line(line)
    assert out is not None and secret not in out and "***" in out
    assert secret not in redact(line)


def test_long_lines_are_trimmed() -> None:
    out = explaining_line("forbidden " + "x" * 5000)
    assert out is not None and len(out) == 400 and out.endswith("…")


def test_with_step_message_targets_the_failing_step_only() -> None:
    children = [
        {"metadata": {"labels": {"tekton.dev/pipelineTask": "validate"}},
         "status": {"steps": [{"name": "apply", "terminated": {"exitCode": 0}}]}},
        {"metadata": {"labels": {"tekton.dev/pipelineTask": "apply"}},
         "status": {"steps": [{"name": "apply", "terminated": {"exitCode": 1}}]}},
    ]
    out = with_step_message(children, "apply", "apply", "line")
    assert "message" not in out[0]["status"]["steps"][0]["terminated"]
    assert out[1]["status"]["steps"][0]["terminated"]["message"] == "line"
    assert "message" not in children[1]["status"]["steps"][0]["terminated"]  # inputs untouched
