"""Shared by the drop tests: make table exports and verify a written partition byte for byte.

A partition is read back through the same API a consumer would use (``keys`` + ``fetch``), and
parsed with independent readers (Python's csv and json modules, pyarrow), never with DuckDB, which
wrote it.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from audience_profiles.destinations.drop import MANIFEST, QUICKSIGHT_MANIFEST

PROFILE_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("email", pa.string()),
        ("external_id", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("optin_1", pa.bool_()),
        ("optin_2", pa.bool_()),
        ("accept_terms", pa.bool_()),
        ("first_seen", pa.timestamp("us")),
        ("last_seen", pa.timestamp("us")),
        ("sessions", pa.int64()),
        ("interactions", pa.int64()),
        ("answers", pa.string()),
    ]
)

IDENTIFIERS = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier_value", pa.string()),
        ("profile_id", pa.string()),
    ]
)
IDENTIFIER_ROWS = [
    {"identifier_type": "email", "identifier_value": " Fan@Example.com", "profile_id": "p1"},
    {"identifier_type": "session_id", "identifier_value": "-s1", "profile_id": "p1"},
    {"identifier_type": "external_id", "identifier_value": "sso-9", "profile_id": "p2"},
]


# The link audit and quarantine as the build exports them (publish/exports.sql, setup/tables.sql).
AUDIT = pa.schema(
    [
        ("rule", pa.string()),
        ("detail", pa.string()),
        ("left_type", pa.string()),
        ("left_value", pa.string()),
        ("right_type", pa.string()),
        ("right_value", pa.string()),
        ("observed_at", pa.timestamp("us")),
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
    ]
)
AUDIT_ROWS = [
    {
        "rule": "session_limit",
        "detail": "session keeps its 1 most recent email value(s)",
        "left_type": "session_id",
        "left_value": "-s1",
        "right_type": "email",
        "right_value": "fan@example.com",
        "observed_at": dt.datetime(2024, 5, 1, 10),
        "source": "form_entries",
        "file": "a.csv",
        "line": 2,
    },
    {
        "rule": "session_limit",
        "detail": "session keeps its 1 most recent email value(s)",
        "left_type": "session_id",
        "left_value": "kiosk",
        "right_type": "email",
        "right_value": "keep@example.com",
        "observed_at": dt.datetime(2024, 5, 1, 11),
        "source": "form_entries",
        "file": "a.csv",
        "line": 3,
    },
    {
        "rule": "external_id_limit",
        "detail": "session carries 3 distinct external_id values (limit 2)",
        "left_type": "session_id",
        "left_value": "kiosk",
        "right_type": "external_id",
        "right_value": "sso-9",
        "observed_at": dt.datetime(2024, 5, 1, 12),
        "source": "identities",
        "file": "b.csv",
        "line": 4,
    },
]
QUARANTINE = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
QUARANTINE_ROWS = [
    {
        "source": "form_entries",
        "file": "a.csv",
        "line": 5,
        "reason": "optin_1: expected Yes or No",
        "raw": '2024-05-01T10:00:00,Fan,"FAN@Example.com",Maybe',
    },
    {
        "source": "form_entries",
        "file": "a.csv",
        "line": 6,
        "reason": "optin_1: expected Yes or No",
        "raw": "2024-05-01T10:00:00,Other,xfan@example.com,Maybe",
    },
    {
        "source": "identities",
        "file": "b.csv",
        "line": 7,
        "reason": "observed_at: not an ISO timestamp",
        "raw": '{"session_id": "-s1", "external_id": "sso"}',
    },
]


def write_profiles(
    path: Path, count: int, *, tag: str = "a", extra: list[dict] | None = None
) -> Path:
    """An ``audience_profiles`` export: ``count`` generated rows (ids tagged), then ``extra`` rows.

    Generated values are hex-heavy so they compress like real data and splitting is exercised.
    """
    seen = dt.datetime(2024, 5, 1, 9, 30)
    rows = [
        {
            "profile_id": f"{tag}-{i:07d}",
            "email": f"Fan.{i}.{hashlib.md5(f'{tag}{i}'.encode()).hexdigest()[:10]}@Example.com",
            "external_id": hashlib.sha1(f"{tag}{i}".encode()).hexdigest() if i % 3 else None,
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "optin_1": i % 2 == 0,
            "optin_2": None if i % 5 == 0 else i % 3 == 0,
            "accept_terms": True,
            "first_seen": seen,
            "last_seen": seen + dt.timedelta(minutes=i),
            "sessions": i % 7 + 1,
            "interactions": i,
            "answers": json.dumps({"Favourite player": f"Player {i % 11}", "Kit": "Home"}),
        }
        for i in range(count)
    ]
    rows.extend({**{f.name: None for f in PROFILE_SCHEMA}, **r} for r in extra or [])
    pq.write_table(pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA), path)
    return path


def write_table(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def read_part(name: str, data: bytes) -> list[dict]:
    """Parse one part file the way a consumer would; CSV cells stay strings."""
    if name.endswith(".gz"):
        data = gzip.decompress(data)
        name = name[: -len(".gz")]
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    if name.endswith(".json"):
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pylist()
    raise AssertionError(f"unexpected part {name}")


def check_partition(
    keys: list[str],
    fetch: Callable[[str], bytes],
    partition: str,
    *,
    run_id: str,
    expected_rows: int,
    quicksight: bool = False,
) -> tuple[dict, dict[str, list[dict]]]:
    """Assert ``partition`` holds exactly its manifest's files, each matching its entry.

    Returns the manifest and, per format, the rows of all parts in part order.
    """
    listed = sorted(k for k in keys if k.startswith(partition + "/"))
    manifest = json.loads(fetch(f"{partition}/{MANIFEST}"))
    expected_keys = {f["key"] for f in manifest["files"]} | {f"{partition}/{MANIFEST}"}
    if quicksight:
        expected_keys.add(f"{partition}/{QUICKSIGHT_MANIFEST}")
    assert listed == sorted(expected_keys), "partition holds files its manifest does not name"
    assert manifest["run_id"] == run_id
    assert manifest["dt"] == partition.rsplit("dt=", 1)[1]
    assert manifest["rows"] == expected_rows

    rows_by_format: dict[str, list[dict]] = {}
    for entry in manifest["files"]:
        data = fetch(entry["key"])
        assert len(data) == entry["bytes"], entry["key"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["key"]
        rows = read_part(entry["key"], data)
        assert len(rows) == entry["rows"], entry["key"]
        rows_by_format.setdefault(entry["format"], []).extend(rows)
    for fmt, rows in rows_by_format.items():
        assert len(rows) == expected_rows, fmt
        # Parts are numbered without gaps per format.
        names = [f["key"].rsplit("/", 1)[1] for f in manifest["files"] if f["format"] == fmt]
        assert [n.split(".")[0] for n in names] == [f"part-{i:05d}" for i in range(len(names))]
    schema_names = [c["name"] for c in manifest["schema"]]
    for fmt, rows in rows_by_format.items():
        if rows:
            assert list(rows[0]) == schema_names, fmt
    return manifest, rows_by_format
