"""The mergeable latency histogram."""

from __future__ import annotations

import random

from wsctl.ops.histogram import Histogram


def test_percentiles_are_within_two_percent() -> None:
    rng = random.Random(1)
    values = [rng.uniform(0.001, 0.5) for _ in range(5000)]
    hist = Histogram()
    for v in values:
        hist.add(v)
    values.sort()
    for q in (50, 90, 99):
        exact = values[int(len(values) * q / 100) - 1]
        assert abs(hist.percentile(q) - exact) / exact < 0.03


def test_merge_equals_adding_everything_to_one() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(1, 200):
        (a if i % 2 else b).add(i / 1000)
        both.add(i / 1000)
    a.merge(Histogram.from_json(b.to_json()))
    assert a.summary_ms() == both.summary_ms()


def test_empty_histogram_summarises_to_zeros() -> None:
    assert Histogram().summary_ms()["count"] == 0 and Histogram().percentile(99) == 0.0
