"""The erasure's lists of values, bounded for the warehouse, and its tombstones (the statements themselves are tested
against fakesnow in test_snowflake.py and against DuckDB in test_generic_sql.py)."""

import pyarrow as pa
import pyarrow.parquet as pq

from audience_profiles.destinations import warehouse_erasure
from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.warehouse_erasure import (
    listed_parts,
    tombstones,
    without_erased,
)
from audience_profiles.privacy import hash_identifier


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


def test_a_reload_leaves_out_an_erased_sso_id_or_session_in_its_own_case_only(tmp_path):
    """Tombstones of SSO ids and sessions keep their case (``exact:<type>``): erasing `sso-9`
    leaves `SSO-9`, another account, in later loads. One recorded before (lower-cased) still
    takes both cases, as it always did."""
    rows = {
        "profile_id": ["p1", "p2", "p3", "p4"],
        "session_id": ["S-1", "s-1", "s-3", "s-4"],
        "external_id": [None, None, "sso-9", "SSO-9"],
        "identifier_type": ["session_id", "session_id", "external_id", "external_id"],
        "identifier_value": ["S-1", "s-1", "sso-9", "SSO-9"],
    }
    export = tmp_path / "export.parquet"
    pq.write_table(pa.table(rows), export)
    request = ErasureRequest(
        "r", "2024-05-04", (), (("external_id", " sso-9"), ("session_id", "S-1"))
    )
    out = tmp_path / "out"
    out.mkdir()

    kept, left_out = without_erased(str(export), tombstones(request), out / "a.parquet")
    assert (pq.read_table(kept).column("profile_id").to_pylist(), left_out) == (["p2", "p4"], 2)

    legacy = {("external_id", hash_identifier("sso-9"))}
    kept, left_out = without_erased(str(export), legacy, out / "b.parquet")
    assert pq.read_table(kept).column("profile_id").to_pylist() == ["p1", "p2"]
