"""A small mergeable latency histogram (log buckets, ~1% precision). Pure.

Simulation workers each fill one; the coordinator merges them, so memory does not grow with the
number of messages.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Histogram"]

_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_MIN = 1e-6  # 1 microsecond, the smallest value that gets its own bucket


@dataclass
class Histogram:
    """Latencies in log-spaced buckets: bounded memory, mergeable across worker processes."""

    buckets: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0
    maximum: float = 0.0
    minimum: float = math.inf

    def add(self, seconds: float) -> None:
        """Count one sample (seconds)."""
        value = max(seconds, _MIN)
        self.buckets[int(math.log(value / _MIN) / _LOG_GROWTH)] += 1
        self.count += 1
        self.total += value
        self.maximum = max(self.maximum, value)
        self.minimum = min(self.minimum, value)

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts to this one (a worker's, for the run's total)."""
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)
        self.minimum = min(self.minimum, other.minimum)

    def percentile(self, q: float) -> float:
        """The value at quantile ``q`` (0..100), within about 1%; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                upper = _MIN * _GROWTH ** (bucket + 1)
                return min(upper, self.maximum)
        return self.maximum  # pragma: no cover - rank never exceeds count

    def count_below(self, value: float) -> int:
        """How many samples are below ``value`` (seconds), within the bucket precision
        (about 2%): a bucket counts when its upper edge is at most ``value``."""
        if value <= _MIN:
            return 0
        edge = int(math.log(value / _MIN) / _LOG_GROWTH)  # the bucket ``value`` falls in
        return sum(n for bucket, n in self.buckets.items() if bucket < edge)

    def summary_ms(self) -> dict[str, float]:
        """Count, p50, p90, p99, max and mean in milliseconds (zeros when empty), for reports."""
        if not self.count:
            return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        return {
            "count": self.count,
            "p50": round(self.percentile(50) * 1000, 3),
            "p90": round(self.percentile(90) * 1000, 3),
            "p99": round(self.percentile(99) * 1000, 3),
            "max": round(self.maximum * 1000, 3),
            "mean": round(self.total / self.count * 1000, 3),
        }

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON-ready data, to cross a process boundary."""
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "maximum": self.maximum,
            "minimum": self.minimum if self.count else 0.0,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """A histogram from :meth:`to_json`'s data."""
        hist = cls(Counter({int(k): int(v) for k, v in data["buckets"].items()}))
        hist.count = int(data["count"])
        hist.total = float(data["total"])
        hist.maximum = float(data["maximum"])
        hist.minimum = float(data["minimum"]) if hist.count else math.inf
        return hist
