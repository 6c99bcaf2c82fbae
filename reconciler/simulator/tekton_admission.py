"""Tekton's admission webhooks as the API server sees them: defaulting (timeouts, service
account, Go-formatted durations; opt-in, since a cluster may run without the webhook) and
the validation rules a client trips over in practice (pipelineRef xor pipelineSpec,
spec.status values, no spec edits once started or done)."""

from __future__ import annotations

import re
from typing import Any

from reconciler.simulator.errors import ApiError

VALIDATION_HOOK = "validation.webhook.pipeline.tekton.dev"
DEFAULTING_HOOK = "webhook.pipeline.tekton.dev"
SPEC_STATUSES = ("Cancelled", "CancelledRunFinally", "StoppedRunFinally", "PipelineRunPending")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs|ns)")  # Go durations: ASCII digits


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("30m", "1h0m0s"); ValueError when malformed."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f'time: invalid duration "{text}"')
    return total


def format_duration(seconds: float) -> str:
    """Go's time.Duration.String() for whole and fractional seconds."""
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{int(secs)}s" if float(secs).is_integer() else f"{secs:.9f}".rstrip("0") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


def pipeline_timeout(pr: dict[str, Any]) -> str:
    raw = ((pr.get("spec") or {}).get("timeouts") or {}).get("pipeline") or "1h0m0s"
    try:
        return format_duration(parse_duration(str(raw)))
    except ValueError:
        return str(raw)


def _deny(hook: str, message: str) -> ApiError:
    # Webhook denials carry code 400 and no reason (apiserver's ToStatusErr).
    return ApiError(400, None, f'admission webhook "{hook}" denied the request: {message}')


def _is_done(pr: dict[str, Any]) -> bool:
    for cond in (pr.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Succeeded" and cond.get("status") in ("True", "False"):
            return True
    return False


def pipelinerun_defaulting(operation: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Tekton's mutating webhook: default and Go-format the timeouts, default the service
    account. Only where a test asks for it (``TektonSimulator(defaulting=True)``): a cluster
    may have no Tekton webhook in front of the API server, and then nothing is rewritten."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    timeouts = spec.get("timeouts")
    if timeouts is None:
        spec["timeouts"] = {"pipeline": "1h0m0s"}
    elif isinstance(timeouts, dict):
        for key in ("pipeline", "tasks", "finally"):
            if key in timeouts:
                try:
                    timeouts[key] = format_duration(parse_duration(str(timeouts[key])))
                except ValueError as exc:
                    raise _deny(DEFAULTING_HOOK, f"mutation failed: cannot decode incoming new object: "
                                                 f"{exc}") from exc
    template = spec.setdefault("taskRunTemplate", {})
    template.setdefault("serviceAccountName", "default")


def pipelinerun_validation(operation: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Tekton's validating webhook: the rules a client trips over in practice."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise _deny(VALIDATION_HOOK, "validation failed: missing field(s): spec")
    timeouts = spec.get("timeouts")
    for key, value in (timeouts.items() if isinstance(timeouts, dict) else ()):
        try:
            parse_duration(str(value))
        except ValueError as exc:
            raise _deny(VALIDATION_HOOK, f"validation failed: cannot decode incoming new object: "
                                         f"{exc}: spec.timeouts.{key}") from exc
    has_ref, has_spec = "pipelineRef" in spec, "pipelineSpec" in spec
    if has_ref == has_spec:
        which = "both" if has_ref else "neither"
        raise _deny(VALIDATION_HOOK, f"validation failed: expected exactly one, got {which}: "
                                     "spec.pipelineRef, spec.pipelineSpec")
    status = spec.get("status")
    if status and status not in SPEC_STATUSES:
        raise _deny(VALIDATION_HOOK, f"validation failed: invalid value: {status}: spec.status")
    if operation != "UPDATE" or old is None:
        return
    before = dict(old.get("spec") or {})
    if _is_done(old):
        if before != spec:
            raise _deny(VALIDATION_HOOK, "validation failed: invalid value: Once the PipelineRun is "
                                         "complete, no updates are allowed: spec")
    elif (old.get("status") or {}).get("startTime"):
        before["status"] = spec.get("status")
        if before.get("status") is None:
            before.pop("status")
        if before != spec:
            raise _deny(VALIDATION_HOOK, "validation failed: invalid value: Once the PipelineRun has "
                                         "started, only status updates are allowed: spec")


def pipelinerun_admission(operation: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Both webhooks, mutating first (as the API server calls them)."""
    pipelinerun_defaulting(operation, obj, old)
    pipelinerun_validation(operation, obj, old)
