"""Kubernetes `Status` error bodies, built the way the real API server words them.

Clients (and the reconciler) branch on `reason` and `code`, and people read `message`:
both must match what kube-apiserver sends, so every error the fake returns goes through here.
"""

from __future__ import annotations

from typing import Any

_REASONS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the resource version is too old"),
    415: ("UnsupportedMediaType", "the body of the request was in an unknown format"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: an error on the server prevented the request from succeeding"),
    503: ("ServiceUnavailable", "The server is currently unable to handle the request"),
    504: ("Timeout", "The server was unable to return a response in the time allotted, "
                     "but may still be processing the request"),
}


class ApiError(Exception):
    """An error answered as a `Status` body with an HTTP code."""

    def __init__(self, code: int, reason: str | None, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str | None, message: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message}
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


def success_status(name: str, group: str, plural: str, uid: str) -> dict[str, Any]:
    """What DELETE answers for resources that do not return the deleted object."""
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details.update({"kind": plural, "uid": uid})
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def default_status(code: int, message: str | None = None,
                   retry_after: float | None = None) -> dict[str, Any]:
    """A plausible body for an injected fault with only a code."""
    reason, default_message = _REASONS.get(code, ("", f"the server responded with the status code {code} "
                                                      "but did not return more information"))
    details: dict[str, Any] | None = None
    if retry_after is not None:
        details = {"retryAfterSeconds": int(retry_after)}
    return status_body(code, reason or None, message or default_message, details)


def qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(name: str | None, group: str, plural: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(group, plural)} "{name}" not found',
                    _details(name, group, plural))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(group, plural)} "{name}" already exists',
                    _details(name, group, plural))


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": {why}',
                    _details(name, group, plural))


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid. `causes` holds (field, reason, detail) like `("metadata.name",
    "FieldValueInvalid", 'Invalid value: "X": a lowercase RFC 1123 ...')`."""
    qualified_kind = f"{kind}.{group}" if group else kind
    parts = [f"{field}: {detail}" for field, _, detail in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": reason, "message": detail, "field": field}
                         for field, reason, detail in causes]
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {joined}', details)


def forbidden(user: str, verb: str, group: str, plural: str, subresource: str | None,
              namespace: str | None, name: str | None) -> ApiError:
    resource = f"{plural}/{subresource}" if subresource else plural
    subject = qualified(group, plural) + (f' "{name}"' if name else "")
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{group}" {scope}')
    return ApiError(403, "Forbidden", message, _details(name, group, plural))


def expired(requested: str, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")
