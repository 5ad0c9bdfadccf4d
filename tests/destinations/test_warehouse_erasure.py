"""The erasure's lists of values, bounded for the warehouse (the statements themselves are tested
against fakesnow in test_snowflake.py and against DuckDB in test_generic_sql.py)."""

from audience_profiles.destinations import warehouse_erasure
from audience_profiles.destinations.warehouse_erasure import listed_parts


def test_values_are_listed_in_order_in_parts_bounded_by_count_and_characters(monkeypatch):
    monkeypatch.setattr(warehouse_erasure, "LISTED_MAX", 3)
    monkeypatch.setattr(warehouse_erasure, "LISTED_CHARS_MAX", 10)
    values = ["a", "b", "c", "d", "eeeeeeee", "ff", "g" * 25, "h"]
    parts = list(listed_parts(values))
    assert parts == [["a", "b", "c"], ["d", "eeeeeeee"], ["ff"], ["g" * 25], ["h"]]
    assert [v for part in parts for v in part] == values  # each once, in order
    # pairs are measured by their value, the last item
    assert list(listed_parts([("email", "x" * 6), (None, "y" * 6)])) == [
        [("email", "x" * 6)],
        [(None, "y" * 6)],
    ]
    assert list(listed_parts([])) == []
