"""Bounded sorting for tables and --watch: the first N rows, without holding them all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wsctl.ops.listing import SortKey, TopRows, sort_rows

ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "robot_id": st.text(min_size=1, max_size=4),
            "instance_id": st.none() | st.sampled_from(["gw-a", "gw-b"]),
            "heartbeat_age_s": st.none() | st.floats(-5, 500, allow_nan=False),
            "connected_for_s": st.none() | st.floats(0, 500, allow_nan=False),
        }
    ),
    max_size=60,
    unique_by=lambda row: row["robot_id"],
)


@given(ROWS, st.sampled_from(list(SortKey)), st.integers(1, 8), st.integers(1, 7))
def test_top_rows_are_the_head_of_the_full_sort(
    rows: list[dict[str, object]], key: SortKey, limit: int, chunk: int
) -> None:
    """Cutting the buffer back while rows arrive in batches gives exactly the first ``limit``
    rows of sorting them all at once, and counts every row seen."""
    top = TopRows(key, limit)
    top._cut_at = limit  # cut as often as possible
    for start in range(0, len(rows), chunk):
        top.add(rows[start : start + chunk])
    assert top.result() == sort_rows(list(rows), key)[:limit]
    assert top.seen == len(rows)


def test_without_a_limit_every_row_is_kept_in_order() -> None:
    rows = [{"robot_id": r, "instance_id": None} for r in ("c", "a", "b")]
    top = TopRows(SortKey.robot, None)
    top.add(rows)
    assert [r["robot_id"] for r in top.result()] == ["a", "b", "c"]
