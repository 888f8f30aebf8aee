"""The one UTC clock and time format of psbridge.

Approvals, audit lines, run records and check results all stamp times people read and
compare across machines: always UTC, always ISO 8601 with a `Z`.
"""

from __future__ import annotations

from datetime import UTC, datetime

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    """Current time in UTC at whole seconds: approvals record times people read and compare."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with a Z at whole seconds; a naive time is taken as UTC (never as local time)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: object) -> datetime:
    """Parse `format_time` output; anything else is malformed (ValueError)."""
    if not isinstance(text, str):
        raise ValueError("time is not a string")
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def stamp(moment: datetime | None = None, *, digits: int = 3) -> str:
    """ISO 8601 UTC with a Z and `digits` fractional digits (3 or 6): events, records, audit lines."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - (6 - digits)] + "Z"


def file_stamp(moment: datetime | None = None) -> str:
    """A sortable UTC time for file names (`20261127T081500.123456Z`)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
