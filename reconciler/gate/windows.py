"""Sync windows (Argo CD's model): *when* new executions may start (pure, no I/O).

Merging a pull request approves a remediation, but operators still need change freezes
("not during the nightly batch", "only in business hours").  A window is a cron schedule
plus a duration in a time zone.  As in Argo CD: only windows applying to the target count
(``namespaces`` globs over its namespace or ``targets`` globs over ``ns/Kind/name``; both
empty = every target; a cluster-scoped target is matched by the namespace entry ``""``
only, never by a glob); an active deny window closes (deny wins); if allow windows apply
and none is active, it is closed; otherwise open.  Windows gate starts, never running runs.

Instants are compared in UTC, so a duration is elapsed time: a 3h window starting at 01:00
on the night clocks go forward ends at 05:00 local time.  A start in the skipped hour
begins at the instant of the old offset (02:30 → 03:30 CEST); a start in the repeated hour
begins at both occurrences.  Day-of-week numbers follow crontab (0 and 7 = Sunday), not
APScheduler 3 (0 = Monday), hence the translation of that field here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.declare import names

UTC = timezone.utc
_TICK = timedelta(microseconds=1)
_DST_SLACK = timedelta(hours=3)  # longer than any clock change
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MAX_STEPS = 256  # bound on merging back-to-back occurrences (a "* * * * *" window is endless)
_MAX_HOPS = 16  # bound on alternating deny ends / allow starts when computing next_change
_NAMESPACE_PATTERN = re.compile(r"[a-z0-9*?\[\]!-]*", re.ASCII)  # whole value: fullmatch


def _weekday(token: str) -> int:
    if token in _DAYS:
        return _DAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    raise ValueError(f"day of week {token!r} must be 0-7 (0 and 7 = Sunday) or sun..sat")


def _cron_weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler 3 day names (its numbers start at Monday)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        base, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"step {step_text!r} in day of week must be a positive number")
        step = int(step_text) if slash else 1
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _weekday(first), _weekday(last)
            high = 7 if high == 0 and low > 0 else high  # mon-sun
        else:
            low = _weekday(base)
            high = max(low, 6) if slash else low
        if low > high:
            raise ValueError(f"day-of-week range {base!r} runs backwards")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_DAYS[day] for day in sorted(days))


def _duration_seconds(raw: str) -> int:
    """Go-style duration (``2h``, ``1h30m``) in seconds.

    Not :func:`names.parse_duration`: that one parses run *timeouts*, capped at 24h, and a
    weekend freeze (``0 18 * * 5`` for ``62h``) needs longer windows.
    """
    try:
        total = names.duration_seconds(raw)
    except names.DurationTooLong:
        raise ValueError(f"{raw[:40]!r} is far too long for a window") from None
    except ValueError:
        raise ValueError(f"{raw[:40]!r} is not a duration such as 30m, 2h or 1h30m") from None
    if total <= 0:
        raise ValueError("a window must last longer than 0s")
    return total


@functools.lru_cache(maxsize=256)
def _trigger(schedule: str, time_zone: str) -> CronTrigger:
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{schedule!r} must have 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise ValueError("day-of-month and day-of-week are both restricted: cron runs when *either* "
                         "matches, which is easy to misread; use one of them per window")
    trigger = CronTrigger(minute=minute, hour=hour, day="*" if day == "?" else day, month=month,
                          day_of_week=_cron_weekdays(weekday), timezone=ZoneInfo(time_zone))
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"{schedule!r} never fires")
    return trigger


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"{value!r} is not a known IANA time zone (such as Europe/Berlin or UTC)") from e
    return value


class SyncWindow(BaseModel):
    """One allow/deny window; field names as in Argo CD's AppProject ``syncWindows``."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    kind: Literal["allow", "deny"]
    schedule: Annotated[str, AfterValidator(lambda v: _trigger(v, "UTC") and v)] = Field(
        ..., description="5-field cron: minute hour day-of-month month day-of-week.")
    duration: Annotated[str, AfterValidator(lambda v: _duration_seconds(v) and v)] = Field(
        ..., description="How long each occurrence lasts (Go style: 1h30m).")
    time_zone: Annotated[str, AfterValidator(_zone)] = Field("UTC", description="IANA zone of the schedule.")
    namespaces: Annotated[list[str], AfterValidator(lambda v: check_namespace_patterns(v))] = Field(
        default_factory=list, description="Globs over the target's namespace.")
    targets: list[str] = Field(default_factory=list, description="Globs over ns/Kind/name.")
    description: str | None = None

    @property
    def length(self) -> timedelta:
        return timedelta(seconds=_duration_seconds(self.duration))

    def describe(self) -> str:
        about = f", {self.description}" if self.description else ""
        return f"{self.kind} window '{self.schedule}' for {self.duration} ({self.time_zone}{about})"


@dataclass(frozen=True)
class WindowDecision:
    """May a new execution start now?  ``next_change``: when a closed decision opens (best
    effort; None when open or unknown)."""

    open: bool
    reason: str
    window: SyncWindow | None
    next_change: datetime | None


def check_namespace_patterns(patterns: list[str]) -> list[str]:
    """Reject globs that can never match a namespace (``Payments``): in a deny list a typo
    would silently allow everything."""
    for pattern in patterns:
        if not _NAMESPACE_PATTERN.fullmatch(pattern):
            raise ValueError(f"{pattern!r} is not a namespace glob (lowercase letters, digits, '-', "
                             "wildcards; \"\" = cluster-scoped)")
    return patterns


def match_namespace(patterns: Sequence[str], namespace: str | None) -> str | None:
    """The first pattern matching ``namespace``; a cluster-scoped target (None) is matched by
    the literal ``""`` only."""
    if namespace is None:
        return "" if "" in patterns else None
    return next((p for p in patterns if p and fnmatchcase(namespace, p)), None)


def window_applies(window: SyncWindow, target: str) -> bool:
    """Does ``window`` govern ``target`` (``ns/Kind/name`` or ``Kind/name``)?"""
    if not window.namespaces and not window.targets:
        return True
    parts = target.split("/")
    return (match_namespace(window.namespaces, parts[0] if len(parts) == 3 else None) is not None
            or any(fnmatchcase(target, p) for p in window.targets))


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _next_start(window: SyncWindow, at_or_after: datetime) -> datetime | None:
    """First start at or after an instant (UTC).  APScheduler finds a start in a skipped hour
    only when it searches from before the clock change, so after one it searches from earlier."""
    trigger, zone = _trigger(window.schedule, window.time_zone), ZoneInfo(window.time_zone)
    begin = at_or_after - _DST_SLACK
    if begin.astimezone(zone).utcoffset() == at_or_after.astimezone(zone).utcoffset():
        begin = at_or_after
    fire: datetime | None = trigger.get_next_fire_time(None, begin)
    while fire is not None and fire.astimezone(UTC) < at_or_after:
        fire = trigger.get_next_fire_time(None, fire.astimezone(UTC) + _TICK)
    return None if fire is None else fire.astimezone(UTC)


def _active_start(window: SyncWindow, now: datetime) -> datetime | None:
    """The earliest start s with s <= now < s + duration (instants, UTC)."""
    start = _next_start(window, now - window.length + _TICK)
    return start if start is not None and start <= now else None


def window_active(window: SyncWindow, now: datetime) -> bool:
    """True iff an occurrence of the window covers ``now`` (timezone-aware)."""
    return _active_start(window, _utc(now)) is not None


def _period_end(window: SyncWindow, now: datetime) -> tuple[datetime, bool] | None:
    """End of the active period covering ``now`` (UTC) with overlapping or back-to-back
    occurrences merged, and whether that end is exact (False: the merge bound was hit)."""
    start = _active_start(window, now)
    if start is None:
        return None
    end = start + window.length
    for _ in range(_MAX_STEPS):
        following = _next_start(window, start + _TICK)
        if following is None or following > end:
            return end, True
        start, end = following, max(end, following + window.length)
    return end, False


def active_until(window: SyncWindow, now: datetime) -> datetime | None:
    """When the active period covering ``now`` ends (UTC; best effort for windows that
    never pause, such as every minute for 24h); None if the window is not active."""
    period = _period_end(window, _utc(now))
    return None if period is None else period[0]


def _local(moment: datetime, window: SyncWindow) -> str:
    return moment.astimezone(ZoneInfo(window.time_zone)).isoformat(timespec="seconds")


def _opens_at(matching: Sequence[SyncWindow], now: datetime) -> datetime | None:
    """Walk forward from ``now`` over deny ends and allow starts until starting is permitted."""
    moment = now
    allows = [w for w in matching if w.kind == "allow"]
    for _ in range(_MAX_HOPS):
        periods = [p for w in matching if w.kind == "deny" and (p := _period_end(w, moment)) is not None]
        if periods:
            if not all(exact for _, exact in periods):
                return None
            moment = max(end for end, _ in periods)
        elif allows and not any(window_active(w, moment) for w in allows):
            starts = [s for w in allows if (s := _next_start(w, moment)) is not None]
            if not starts:
                return None
            moment = min(starts)
        else:
            return moment if moment > now else None
    return None


def evaluate_windows(windows: Sequence[SyncWindow], now: datetime, target: str, *,
                     override: bool) -> WindowDecision:
    """Whether a new execution on ``target`` may start at ``now``.

    ``override`` must already combine *requested* (the execution's label) and *permitted*
    (policy ``allowSyncWindowOverride``): when true, a closed decision opens, naming the
    window it overrides.  ``next_change`` is in ``now``'s time zone.
    """
    instant = _utc(now)
    matching = [w for w in windows if window_applies(w, target)]
    if not matching:
        return WindowDecision(True, f"no sync window applies to {target}", None, None)
    denies = [(p, w) for w in matching if w.kind == "deny" and (p := _period_end(w, instant)) is not None]
    allows = [w for w in matching if w.kind == "allow"]
    if denies:
        (until, exact), window = max(denies, key=lambda pair: pair[0][0])
        reason = f"{window.describe()} is active until {'' if exact else 'at least '}{_local(until, window)}"
    elif not allows:
        return WindowDecision(True, f"no deny window applying to {target} is active", None, None)
    else:
        active = next((w for w in allows if window_active(w, instant)), None)
        if active is not None:
            period = _period_end(active, instant) or (instant, True)
            return WindowDecision(True, f"{active.describe()} is active until {_local(period[0], active)}",
                                  active, None)
        starts = [(s, w) for w in allows if (s := _next_start(w, instant)) is not None]
        if starts:
            start, window = min(starts, key=lambda pair: pair[0])
            reason = f"outside every allow window; {window.describe()} opens at {_local(start, window)}"
        else:
            window, reason = allows[0], "outside every allow window; none opens again"
    if override:
        return WindowDecision(True, f"{reason}; overridden (override requested and permitted by policy)",
                              window, None)
    opens = _opens_at(matching, instant)
    return WindowDecision(False, reason, window, opens.astimezone(now.tzinfo) if opens else None)
