"""Object validation and defaulting with the API server's own wording.

A name or label the real server refuses must be refused here too (422 `Invalid`), or the
reconciler would pass its tests and fail on a cluster. The checks cover object metadata
for every resource and the few built-in rules Jobs and Pods are known for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Cause = tuple[str, str, str]  # (field, reason, detail)
Validator = Callable[[dict[str, Any], dict[str, Any] | None], list[Cause]]

# Whole-value (fullmatch) like Go's anchored regexps: a trailing newline is not a valid name.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character (e.g. "
                 "'example.com', regex used for validation is "
                 r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
             "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', "
                   "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',"
                   "  or 'my_value',  or '12345', regex used for validation is "
                   "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
NAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                 "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                 "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")


def _invalid(field: str, value: Any, why: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return (field, "FieldValueInvalid", f"Invalid value: {shown}: {why}")


def _too_long(field: str, value: str, limit: int) -> Cause:
    return (field, "FieldValueTooLong", f'Invalid value: "{value}": must be no more than {limit} characters')


def required(field: str, why: str = "") -> Cause:
    return (field, "FieldValueRequired", "Required value" + (f": {why}" if why else ""))


def check_name(name: str, rule: str, field: str = "metadata.name") -> list[Cause]:
    if rule == "label":
        if len(name) > 63:
            return [_too_long(field, name, 63)]
        return [] if _LABEL.fullmatch(name) else [_invalid(field, name, LABEL_MSG)]
    if len(name) > 253:
        return [_too_long(field, name, 253)]
    return [] if _SUBDOMAIN.fullmatch(name) else [_invalid(field, name, SUBDOMAIN_MSG)]


def _check_qualified_key(key: str, field: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes: list[Cause] = []
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        causes.append(_invalid(field, key, "prefix part " + SUBDOMAIN_MSG))
    if len(name) > 63:
        causes.append(_invalid(field, key, "name part must be no more than 63 characters"))
    elif not _QUALIFIED_NAME.fullmatch(name):
        causes.append(_invalid(field, key, NAME_PART_MSG))
    return causes


def check_metadata(meta: dict[str, Any], name_rule: str) -> list[Cause]:
    causes: list[Cause] = []
    name = meta.get("name") or ""
    if name:
        causes += check_name(name, name_rule)
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return [_invalid("metadata.labels", str(labels), "must be a map of strings")]
    for key, value in labels.items():
        causes += _check_qualified_key(key, "metadata.labels")
        if not isinstance(value, str):
            causes.append(_invalid("metadata.labels", str(value), "must be a string"))
        elif len(value) > 63:
            causes.append(_invalid("metadata.labels", value, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.fullmatch(value):
            causes.append(_invalid("metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        causes += _check_qualified_key(key, "metadata.annotations")
        if not isinstance(value, str):
            causes.append(_invalid("metadata.annotations", str(value), "must be a string"))
        else:
            total += len(key) + len(value)
    if total > 256 * 1024:
        causes.append(("metadata.annotations", "FieldValueTooLong",
                       "Too long: must have at most 262144 bytes"))
    return causes


def default_pod_spec(spec: dict[str, Any]) -> None:
    """The defaults the API server writes into every pod spec (a subset that clients notice)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        pinned = "@" in image or (":" in tag and not tag.endswith(":latest"))
        container.setdefault("imagePullPolicy", "IfNotPresent" if pinned else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def check_pod_spec(spec: Any, field: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required(field)]
    containers = spec.get("containers")
    if not containers:
        return [required(f"{field}.containers")]
    causes: list[Cause] = []
    for i, container in enumerate(containers):
        if not container.get("name"):
            causes.append(required(f"{field}.containers[{i}].name"))
        else:
            causes += check_name(container["name"], "label", f"{field}.containers[{i}].name")
        if not container.get("image"):
            causes.append(required(f"{field}.containers[{i}].image"))
    return causes


def default_pod(obj: dict[str, Any]) -> None:
    default_pod_spec(obj.setdefault("spec", {}))


def validate_pod(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    return check_pod_spec(obj.get("spec"), "spec")


JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


def default_job(obj: dict[str, Any], create: bool = True) -> None:
    """SetDefaults_Job (every decode) plus, on create, the selector and labels that
    PrepareForCreate generates."""
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    if tmeta.get("labels") and not meta.get("labels"):
        meta["labels"] = dict(tmeta["labels"])
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    if create and not spec.get("manualSelector"):
        uid = meta["uid"]
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: uid}}
        labels = tmeta.setdefault("labels", {})
        for key in JOB_UID_LABELS:
            labels[key] = uid
        for key in JOB_NAME_LABELS:
            labels[key] = meta["name"]
    if isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


_JOB_IMMUTABLE = ("template", "completions", "selector", "completionMode", "podFailurePolicy")


def validate_job(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    name = obj["metadata"].get("name", "")
    if len(name) > 63:
        causes.append(_invalid("spec.template.labels", name, "must be no more than 63 characters"))
    pod_spec = (spec.get("template") or {}).get("spec")
    causes += check_pod_spec(pod_spec, "spec.template.spec")
    if isinstance(pod_spec, dict) and pod_spec.get("restartPolicy") not in ("OnFailure", "Never"):
        causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                       f'Unsupported value: "{pod_spec.get("restartPolicy")}": supported values: '
                       '"OnFailure", "Never"'))
    for key, low in (("backoffLimit", 0), ("parallelism", 0), ("completions", 0),
                     ("activeDeadlineSeconds", 1), ("ttlSecondsAfterFinished", 0)):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < low):
            causes.append(_invalid(f"spec.{key}", value, f"must be greater than or equal to {low}"))
    if old is not None:
        old_spec = old.get("spec") or {}
        for key in _JOB_IMMUTABLE:
            if spec.get(key) != old_spec.get(key):
                causes.append(_invalid(f"spec.{key}", "...", "field is immutable"))
    return causes
