"""What a destination is to the delivery queue (:class:`Sink`: where an event goes, the request
for it, what its answer means, which secrets to redact) and the common meaning of an HTTP
answer (:func:`classify_http`: delivered, retried after a backoff or as long as a rate limit
says, or dropped), which each sink refines with its own cases.

Pure: an answer and the attempt count in, an :class:`Outcome` out; nothing here sends.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from reconciler.service.config_model import RouteRule
from reconciler.service.delivery_event import Event
from reconciler.service.outbound import Request, Response

RATE_LIMIT_CAP = 3600.0


@dataclass(frozen=True)
class Outcome:
    kind: Literal["delivered", "retry", "drop"]
    delay: float = 0.0  # seconds before the next attempt (retry)
    why: str = ""


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential: base, 2·base, 4·base … up to cap (attempt counts from 1)."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def rate_limit_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a rate-limit answer asks us to wait: ``Retry-After`` (seconds or an HTTP
    date), else ``X-RateLimit-Reset``/``RateLimit-Reset`` (Unix time) when nothing remains;
    None when the answer says nothing.  Capped at an hour."""
    retry_after = headers.get("retry-after", "").strip()
    if retry_after:
        if retry_after.isdigit():
            return min(RATE_LIMIT_CAP, float(retry_after))
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return min(RATE_LIMIT_CAP, max(0.0, when.timestamp() - now))
    remaining = headers.get("x-ratelimit-remaining", headers.get("ratelimit-remaining", "")).strip()
    reset = headers.get("x-ratelimit-reset", headers.get("ratelimit-reset", "")).strip()
    if remaining == "0" and reset.isdigit():
        return min(RATE_LIMIT_CAP, max(1.0, float(reset) - now + 1.0))
    return None


def classify_http(response: Response, attempt: int, now: float, *, base: float, cap: float,
                  rate_limited: bool = False) -> Outcome:
    """The common meaning of an HTTP answer (sinks add their own cases first)."""
    status = response.status
    if status is None:
        return Outcome("retry", backoff(attempt, base=base, cap=cap), response.error or "no answer")
    if 200 <= status < 300:
        return Outcome("delivered")
    why = f"HTTP {status}" + (f": {_snippet(response)}" if response.body else "")
    if status == 429 or rate_limited:
        told = rate_limit_delay(response.headers, now)
        return Outcome("retry", told if told is not None else backoff(attempt, base=base, cap=cap),
                       f"rate limited ({why})")
    if status in (401, 403):  # credentials: a rotated Secret heals it, keep the queue
        return Outcome("retry", backoff(attempt, base=base, cap=cap), f"credentials refused ({why})")
    if status in (408, 409, 425) or status >= 500:
        return Outcome("retry", backoff(attempt, base=base, cap=cap), why)
    if 300 <= status < 400:
        return Outcome("drop", 0.0, f"{why}: redirects are not followed (credentials would travel); "
                                    "configure the final URL")
    return Outcome("drop", 0.0, why)


def _snippet(response: Response) -> str:
    text = response.text(200)
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:200]
    return " ".join(text.split())[:200]


class Sink(Protocol):
    """One destination.  ``targets`` are the places one event goes (a forge: the declaring
    commit and the merge commit; others: one); ``request`` reads its secret when called."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def rules(self) -> Sequence[RouteRule]: ...

    def targets(self, event: Event) -> list[str]: ...
    def request(self, event: Event, target: str, link: str) -> Request: ...
    def classify(self, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome: ...
    def secrets(self) -> list[str]: ...


def secret_values(values: Iterable[str | None]) -> list[str]:
    return [v for v in values if v]
