"""Sync windows: allow/deny, deny wins, time zones, DST, cron weekdays, override, next_change.

Every instant is injected; 2026-11-23 is a Monday, 2026-03-29 and 2026-10-25 are the
Sundays Europe/Berlin switches to and from summer time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from pydantic import ValidationError

from reconciler.gate.windows import SyncWindow, active_until, evaluate_windows, window_active, window_applies

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TARGET = "payments/Deployment/payment-api"


def window(kind: str = "deny", schedule: str = "0 22 * * *", duration: str = "2h", **extra: Any) -> SyncWindow:
    return SyncWindow.model_validate({"kind": kind, "schedule": schedule, "duration": duration, **extra})


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, *,
       tz: timezone | ZoneInfo = UTC) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz)


@pytest.mark.parametrize(("w", "now", "active"), [
    (window(), at(2026, 11, 23, 21, 59), False),
    (window(), at(2026, 11, 23, 22, 0), True),           # start is inclusive
    (window(), at(2026, 11, 23, 23, 59, 59), True),
    (window(), at(2026, 11, 24, 0, 0), False),           # end is exclusive
    (window(), at(2026, 11, 24, 1, 30, tz=BERLIN), False),  # 00:30 UTC
    (window(duration="26h"), at(2026, 11, 24, 23, 0), True),  # longer than the period: overlapping starts
    (window(timeZone="Europe/Berlin"), at(2026, 11, 23, 21, 30), True),   # 22:30 in Berlin
    (window(timeZone="Europe/Berlin"), at(2026, 11, 23, 23, 0), False),   # 00:00 in Berlin
    (window(timeZone="America/New_York"), at(2026, 11, 24, 3, 30), True),  # 22:30 EST
    (window(timeZone="America/New_York"), at(2026, 11, 23, 22, 30, tz=NEW_YORK), True),
    (window(timeZone="America/New_York"), at(2026, 11, 23, 22, 30), False),
    (window(schedule="0 0 1 1 *", duration="24h"), at(2027, 1, 1, 12), True),
    (window(schedule="0 0 1 1 *", duration="24h"), at(2027, 1, 2, 12), False),
])
def test_window_active(w: SyncWindow, now: datetime, active: bool) -> None:
    assert window_active(w, now) is active


@pytest.mark.parametrize(("weekdays", "active_days"), [
    ("5", {"Fri"}), ("fri", {"Fri"}), ("FRI", {"Fri"}), ("0", {"Sun"}), ("7", {"Sun"}),
    ("1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}), ("mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ("sat,sun", {"Sat", "Sun"}), ("6,0", {"Sat", "Sun"}), ("5-7", {"Fri", "Sat", "Sun"}),
    ("*/2", {"Sun", "Tue", "Thu", "Sat"}), ("1-5/2", {"Mon", "Wed", "Fri"}), ("4/1", {"Thu", "Fri", "Sat"}),
    ("mon-sun", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}), ("*", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
])
def test_day_of_week_follows_crontab_not_apscheduler(weekdays: str, active_days: set[str]) -> None:
    w = window(schedule=f"0 12 * * {weekdays}", duration="1h")
    days = {at(2026, 11, 23 + i, 12, 30) for i in range(7)}
    assert {d.strftime("%a") for d in days if window_active(w, d)} == active_days


def test_no_windows_is_open() -> None:
    decision = evaluate_windows([], at(2026, 11, 23, 22, 30), TARGET, override=False)
    assert (decision.open, decision.window, decision.next_change) == (True, None, None)
    assert decision.reason == f"no sync window applies to {TARGET}"


def test_active_deny_closes_and_names_the_window() -> None:
    freeze = window(timeZone="Europe/Berlin", description="nightly batch")
    decision = evaluate_windows([freeze], at(2026, 11, 22, 22, 30, tz=BERLIN), TARGET, override=False)
    assert not decision.open and decision.window == freeze
    assert decision.reason == ("deny window '0 22 * * *' for 2h (Europe/Berlin, nightly batch) "
                               "is active until 2026-11-23T00:00:00+01:00")
    assert decision.next_change == at(2026, 11, 23, 0, 0, tz=BERLIN)
    assert decision.next_change is not None and decision.next_change.tzinfo == BERLIN  # in now's zone


def test_inactive_deny_is_open() -> None:
    decision = evaluate_windows([window()], at(2026, 11, 23, 12), TARGET, override=False)
    assert decision.open and decision.window is None and decision.next_change is None
    assert decision.reason == f"no deny window applying to {TARGET} is active"


BUSINESS_HOURS = window("allow", "0 9 * * 1-5", "8h", timeZone="Europe/Berlin")


@pytest.mark.parametrize(("now", "is_open", "next_change"), [
    (at(2026, 11, 23, 10, tz=BERLIN), True, None),                                  # Monday 10:00
    (at(2026, 11, 23, 17, tz=BERLIN), False, at(2026, 11, 24, 9, tz=BERLIN)),       # closes at 17:00
    (at(2026, 11, 23, 8, 59, tz=BERLIN), False, at(2026, 11, 23, 9, tz=BERLIN)),
    (at(2026, 11, 21, 10, tz=BERLIN), False, at(2026, 11, 23, 9, tz=BERLIN)),       # Saturday → Monday
])
def test_allow_windows_only(now: datetime, is_open: bool, next_change: datetime | None) -> None:
    decision = evaluate_windows([BUSINESS_HOURS], now, TARGET, override=False)
    assert decision.open is is_open
    assert decision.window == BUSINESS_HOURS
    assert decision.next_change == next_change
    if is_open:
        assert decision.reason.endswith("is active until 2026-11-23T17:00:00+01:00")
    else:
        assert decision.reason.startswith("outside every allow window; allow window '0 9 * * 1-5' for 8h")


def test_earliest_allow_window_is_named() -> None:
    later, sooner = window("allow", "0 12 * * *", "1h"), window("allow", "0 11 * * *", "1h")
    decision = evaluate_windows([later, sooner], at(2026, 11, 23, 10), TARGET, override=False)
    assert not decision.open and decision.window == sooner and decision.next_change == at(2026, 11, 23, 11)
    assert evaluate_windows([later, sooner], at(2026, 11, 23, 12, 30), TARGET, override=False).open


def test_deny_wins_over_active_allow() -> None:
    always = window("allow", "0 0 * * *", "24h")
    deny = window("deny", "0 16 * * *", "1h")
    decision = evaluate_windows([always, deny], at(2026, 11, 23, 16, 30), TARGET, override=False)
    assert not decision.open and decision.window == deny
    assert decision.next_change == at(2026, 11, 23, 17)


def test_overlapping_denies_longest_wins() -> None:
    short, long = window(schedule="0 22 * * *", duration="1h"), window(schedule="30 21 * * *", duration="3h")
    decision = evaluate_windows([short, long], at(2026, 11, 23, 22, 15), TARGET, override=False)
    assert decision.window == long and decision.next_change == at(2026, 11, 24, 0, 30)
    assert "until 2026-11-24T00:30:00+00:00" in decision.reason


def test_next_change_walks_deny_end_into_closed_allow() -> None:
    # Monday 16:30: a deny window until 18:00 overlaps business hours ending at 17:00, so the
    # next opening is Tuesday 09:00, not the end of the deny window.
    late_freeze = window(schedule="0 16 * * *", duration="2h", timeZone="Europe/Berlin")
    decision = evaluate_windows([BUSINESS_HOURS, late_freeze], at(2026, 11, 23, 16, 30, tz=BERLIN), TARGET,
                                override=False)
    assert not decision.open and decision.window == late_freeze
    assert decision.next_change == at(2026, 11, 24, 9, tz=BERLIN)


def test_back_to_back_occurrences_merge() -> None:
    nightly = window(schedule="0 0-5 * * *", duration="1h")
    assert active_until(nightly, at(2026, 11, 23, 2, 30)) == at(2026, 11, 23, 6)
    assert active_until(nightly, at(2026, 11, 23, 7)) is None


def test_endless_window_reports_a_lower_bound_and_no_next_change() -> None:
    endless = window(schedule="* * * * *", duration="24h")
    decision = evaluate_windows([endless], at(2026, 11, 23, 10), TARGET, override=False)
    assert not decision.open and "is active until at least" in decision.reason
    assert decision.next_change is None


@pytest.mark.parametrize(("w", "now", "active"), [
    # Spring forward (02:00 CET → 03:00 CEST): 01:00 CET + 3h elapsed = 05:00 CEST (03:00 UTC).
    (window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin"), at(2026, 3, 29, 4, 30, tz=BERLIN), True),
    (window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin"), at(2026, 3, 29, 2, 59), True),
    (window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin"), at(2026, 3, 29, 3, 0), False),
    # Fall back (03:00 CEST → 02:00 CET): 01:00 CEST + 3h elapsed = 03:00 CET (02:00 UTC).
    (window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin"), at(2026, 10, 25, 1, 59), True),
    (window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin"), at(2026, 10, 25, 2, 0), False),
    # A start in the skipped hour (02:30) begins at 03:30 CEST.
    (window(schedule="30 2 * * *", duration="30m", timeZone="Europe/Berlin"), at(2026, 3, 29, 1, 29), False),
    (window(schedule="30 2 * * *", duration="30m", timeZone="Europe/Berlin"), at(2026, 3, 29, 1, 30), True),
    # A start in the repeated hour begins at both occurrences of 02:30.
    (window(schedule="30 2 * * *", duration="30m", timeZone="Europe/Berlin"), at(2026, 10, 25, 0, 45), True),
    (window(schedule="30 2 * * *", duration="30m", timeZone="Europe/Berlin"), at(2026, 10, 25, 1, 15), False),
    (window(schedule="30 2 * * *", duration="30m", timeZone="Europe/Berlin"), at(2026, 10, 25, 1, 45), True),
    # The wall-clock start stays at 22:00 across the change: 21:00 UTC in winter, 20:00 UTC in summer.
    (window(timeZone="Europe/Berlin"), at(2026, 3, 28, 21, 30), True),
    (window(timeZone="Europe/Berlin"), at(2026, 3, 29, 20, 30), True),
    (window(timeZone="Europe/Berlin"), at(2026, 3, 29, 22, 30), False),
])
def test_dst(w: SyncWindow, now: datetime, active: bool) -> None:
    assert window_active(w, now) is active


def _reference_starts(w: SyncWindow, begin: datetime, end: datetime) -> list[datetime]:
    """Every start in [begin, end), walking APScheduler fire by fire from a day earlier."""
    trigger = CronTrigger.from_crontab(w.schedule, timezone=ZoneInfo(w.time_zone))
    starts, fire = [], trigger.get_next_fire_time(None, begin - timedelta(days=1))
    while fire is not None and fire < end:
        starts.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(None, fire.astimezone(UTC) + timedelta(microseconds=1))
    return starts


@pytest.mark.parametrize("schedule", ["30 2 * * *", "0 2 * * *", "0 1 * * *", "15,45 * * * *", "0 3 * * *"])
@pytest.mark.parametrize("duration", ["20m", "1h", "3h"])
@pytest.mark.parametrize("day", [at(2026, 3, 28, 22), at(2026, 10, 24, 22)])
def test_active_agrees_with_every_start_across_dst(schedule: str, duration: str, day: datetime) -> None:
    # Whichever minute is asked, window_active agrees with the full list of starts.
    w = window(schedule=schedule, duration=duration, timeZone="Europe/Berlin")
    starts = _reference_starts(w, day - w.length, day + timedelta(hours=8))
    for minute in range(0, 8 * 60, 5):
        now = day + timedelta(minutes=minute)
        expected = any(s <= now < s + w.length for s in starts)
        assert window_active(w, now) is expected, now


def test_dst_reason_and_next_change_use_elapsed_time() -> None:
    w = window(schedule="0 1 * * *", duration="3h", timeZone="Europe/Berlin")
    decision = evaluate_windows([w], at(2026, 10, 25, 1, 30), TARGET, override=False)
    assert decision.reason.endswith("is active until 2026-10-25T03:00:00+01:00")
    assert decision.next_change == at(2026, 10, 25, 2, 0)
    spring = evaluate_windows([w], at(2026, 3, 29, 2, 0), TARGET, override=False)
    assert spring.reason.endswith("is active until 2026-03-29T05:00:00+02:00")


@pytest.mark.parametrize(("windows", "now"), [
    ([window()], at(2026, 11, 23, 22, 30)),                              # deny active
    ([window("allow", "0 9 * * *", "1h")], at(2026, 11, 23, 22, 30)),   # outside allow
])
@pytest.mark.parametrize("override", [False, True])
def test_override(windows: list[SyncWindow], now: datetime, override: bool) -> None:
    decision = evaluate_windows(windows, now, TARGET, override=override)
    assert decision.open is override
    assert decision.window == windows[0]
    assert ("overridden" in decision.reason) is override
    assert (decision.next_change is None) is override


@pytest.mark.parametrize(("extra", "target", "applies"), [
    ({}, TARGET, True),
    ({}, "Node/worker-1", True),
    ({"namespaces": ["payments"]}, TARGET, True),
    ({"namespaces": ["pay*"]}, TARGET, True),
    ({"namespaces": ["team-*"]}, TARGET, False),
    ({"namespaces": ["*"]}, "Node/worker-1", False),
    ({"namespaces": [""]}, "Node/worker-1", True),
    ({"targets": ["*/Deployment/*"]}, TARGET, True),
    ({"targets": ["*/StatefulSet/*"]}, TARGET, False),
    ({"targets": ["Node/*"]}, "Node/worker-1", True),
    ({"namespaces": ["team-*"], "targets": ["payments/*"]}, TARGET, True),  # either matches
])
def test_window_applies(extra: dict[str, Any], target: str, applies: bool) -> None:
    w = window(**extra)
    assert window_applies(w, target) is applies
    decision = evaluate_windows([w], at(2026, 11, 23, 22, 30), target, override=False)
    assert decision.open is not applies


def test_non_matching_allow_window_does_not_close() -> None:
    other_team = window("allow", "0 9 * * *", "1h", namespaces=["team-*"])
    assert evaluate_windows([other_team], at(2026, 11, 23, 22, 30), TARGET, override=False).open


@pytest.mark.parametrize(("fields", "message"), [
    ({"timeZone": "Mars/Olympus"}, "not a known IANA time zone"),
    ({"timeZone": "../etc/passwd"}, "not a known IANA time zone"),
    ({"schedule": "0 22 * *"}, "must have 5 fields"),
    ({"schedule": "61 22 * * *"}, "higher than the maximum"),
    ({"schedule": "0 22 1 * 1"}, "day-of-month and day-of-week are both restricted"),
    ({"schedule": "0 22 * * 8"}, "must be 0-7"),
    ({"schedule": "0 22 * * fri-mon"}, "runs backwards"),
    ({"schedule": "0 22 * * */0"}, "must be a positive number"),
    ({"schedule": "0 0 30 2 *"}, "never fires"),
    ({"duration": "0s"}, "longer than 0s"),
    ({"duration": "2d"}, "is not a duration"),
    ({"kind": "block"}, "Input should be 'allow' or 'deny'"),
    ({"namespaces": ["Payments"]}, "is not a namespace glob"),
    ({"scheduel": "x"}, "Extra inputs are not permitted"),
])
def test_invalid_windows(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SyncWindow.model_validate({"kind": "deny", "schedule": "0 22 * * *", "duration": "2h", **fields})


def test_windows_may_be_longer_than_a_day() -> None:
    weekend = window(schedule="0 18 * * 5", duration="62h", timeZone="Europe/Berlin")
    assert weekend.length == timedelta(hours=62)
    assert window_active(weekend, at(2026, 11, 23, 7, 59, tz=BERLIN))
    assert not window_active(weekend, at(2026, 11, 23, 8, 0, tz=BERLIN))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_active(window(), datetime(2026, 11, 23, 22, 30))
