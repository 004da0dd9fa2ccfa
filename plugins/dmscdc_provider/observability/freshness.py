"""Freshness objectives: how far behind raw a table may fall (``freshness_slo`` in a source's YAML,
``--freshness-slo`` of ``dmscdc status``), and how far behind it is.

A table is behind by the age of the oldest file DMS delivered that the table has not applied
(zero when raw holds nothing beyond its watermark): a table whose source is quiet is not stale,
and one whose merges stopped falls behind from its first unapplied file on.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime

_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 900, 90s, 15m, 2h, 1d)")
    return float(match.group("number")) * _UNIT_SECONDS[(match.group("unit") or "s").lower()]


def format_duration(seconds: float | None) -> str:
    """``42s``, ``12m05s``, ``3h20m``, ``2d04h``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class FreshnessObjectives:
    """``schema.table`` globs and the seconds a matching table may fall behind; the first glob that
    matches a table decides (a single duration is the glob ``*``)."""

    objectives: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, value) -> "FreshnessObjectives":
        """From YAML (``1h``, or a mapping of globs to durations), or None (no objective)."""
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls(tuple((str(glob), parse_duration(duration)) for glob, duration in value.items()))
        return cls((("*", parse_duration(value)),))

    @classmethod
    def from_options(cls, options: list[str]) -> "FreshnessObjectives":
        """From ``--freshness-slo`` options: ``GLOB=DURATION`` or a bare ``DURATION`` (every table)."""
        entries = []
        for option in options:
            glob, sep, duration = option.rpartition("=")
            entries.append((glob if sep else "*", parse_duration(duration)))
        return cls(tuple(entries))

    def for_table(self, table: str) -> float | None:
        return next((seconds for glob, seconds in self.objectives if fnmatch.fnmatchcase(table, glob)), None)

    def to_dict(self) -> dict[str, float]:
        return dict(self.objectives)


def behind_seconds(oldest_pending_at: str | datetime | None, now: datetime) -> float:
    """How far a table is behind raw at ``now``: the age of its oldest unapplied file, else 0."""
    if oldest_pending_at is None:
        return 0.0
    oldest = datetime.fromisoformat(oldest_pending_at) if isinstance(oldest_pending_at, str) else oldest_pending_at
    return max(0.0, (now - oldest).total_seconds())
