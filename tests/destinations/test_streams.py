"""The stream record schema, batching within service limits, and the retry of failed entries."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from audience_profiles.config import ConfigError
from audience_profiles.destinations.firehose import PUT_RECORD_BATCH_LIMITS
from audience_profiles.destinations.kinesis import PUT_RECORDS_LIMITS
from audience_profiles.destinations.streams import (
    MIB,
    BatchLimits,
    Entry,
    RecordTooLargeError,
    RetryableCallError,
    RetryPolicy,
    StreamRecord,
    UndeliveredRecordsError,
    aws_batch_failures,
    batches,
    json_safe,
    records_from_export,
    send_with_retries,
)
from audience_profiles.privacy import hash_identifier
from tests.destinations.stream_support import RUN, stream_destination, write_exports


@pytest.fixture
def exports(tmp_path):
    return write_exports(tmp_path / "exports")


def all_records(exports, table, ds=RUN.ds, **kwargs) -> list[StreamRecord]:
    return list(records_from_export(table, exports[table], ds, **kwargs))


# --- the record schema ------------------------------------------------------------------------


def test_each_table_becomes_its_event_with_the_profile_as_key(exports):
    merge = all_records(exports, "profile_merges")[0]
    upsert = all_records(exports, "audience_profiles")[0]
    interaction = all_records(exports, "audience_profile_interactions")[0]

    assert (merge.event_type, merge.profile_id) == ("profile_merge", "p-00000")  # surviving id
    assert merge.payload["merged_profile_id"] == "p-m0000"
    assert (upsert.event_type, upsert.profile_id) == ("profile_upsert", "p-00000")
    assert (interaction.event_type, interaction.profile_id) == ("interaction", "p-00000")


def test_a_record_is_versioned_json_with_iso_dates_and_every_column(exports):
    record = all_records(exports, "audience_profiles", emitted_at="2024-05-02T03:00:00.000+00:00")[
        1
    ]
    decoded = json.loads(record.encode())

    assert list(decoded) == [
        "schema_version",
        "record_id",
        "event_type",
        "profile_id",
        "emitted_at",
        "payload",
    ]
    assert decoded["schema_version"] == 1
    assert decoded["emitted_at"] == "2024-05-02T03:00:00.000+00:00"
    payload = decoded["payload"]
    assert payload["first_seen"] == "2024-04-29T12:00:00"
    assert payload["sessions"] == 2 and payload["optin_1"] is False
    assert payload["optin_1_source"] == "form"  # extra columns pass through
    interaction = json.loads(all_records(exports, "audience_profile_interactions")[3].encode())
    assert interaction["payload"]["interaction_date"] == "2024-04-04"


def test_record_ids_are_deterministic_and_ignore_emitted_at(exports):
    for table in ("profile_merges", "audience_profiles", "audience_profile_interactions"):
        first = [r.record_id for r in all_records(exports, table, emitted_at="2024-05-02T00:00:00")]
        again = [r.record_id for r in all_records(exports, table, emitted_at="2024-05-09T00:00:00")]
        assert first == again
        assert len(set(first)) == len(first)
        assert all(len(rid) == 64 and int(rid, 16) >= 0 for rid in first)


def test_record_ids_change_with_content(tmp_path, exports):
    table = pq.read_table(exports["audience_profiles"])
    changed = table.set_column(
        table.schema.get_field_index("sessions"),
        "sessions",
        pa.array([99] + table["sessions"].to_pylist()[1:], pa.int64()),
    )
    path = tmp_path / "changed.parquet"
    pq.write_table(changed, path)

    before = [r.record_id for r in all_records(exports, "audience_profiles")]
    after = [r.record_id for r in records_from_export("audience_profiles", str(path), RUN.ds)]
    assert before[0] != after[0]
    assert before[1:] == after[1:]


def test_profile_upserts_are_per_run_date_facts_are_not(exports):
    """A profile's state as of another day is another event; an interaction is the same fact."""

    def ids(table, ds):
        return [r.record_id for r in all_records(exports, table, ds=ds)]

    assert set(ids("audience_profiles", "2024-05-01")).isdisjoint(
        ids("audience_profiles", "2024-05-02")
    )
    for table in ("audience_profile_interactions", "profile_merges"):
        assert ids(table, "2024-05-01") == ids(table, "2024-05-02")


def test_pii_policy_applies_to_the_payload(exports):
    hashed = all_records(exports, "audience_profiles", pii="hashed")[1].payload
    assert hashed["email_sha256"] == hash_identifier(" Fan1@Example.com ")
    assert not {"email", "first_name", "last_name"} & set(hashed)
    assert (
        all_records(exports, "audience_profiles", pii="hashed")[0].payload["email_sha256"] is None
    )

    omitted = all_records(exports, "audience_profile_interactions", pii="omit")[0].payload
    assert not {"email", "email_sha256", "first_name", "last_name"} & set(omitted)
    assert omitted["session_id"] == "s-0"


def test_records_stream_through_row_batches(exports):
    """Small read batches (several per row group) give exactly the records of one big read."""
    table = "audience_profile_interactions"
    whole = [r.record_id for r in all_records(exports, table)]
    batched = [r.record_id for r in all_records(exports, table, batch_rows=7)]
    assert batched == whole and len(whole) == 120


def test_a_row_without_a_profile_id_is_an_error(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": ["p-1", None], "email": ["a@b.co", "c@d.co"]}), path)
    with pytest.raises(ValueError, match="audience_profiles: a row has no profile_id") as exc:
        list(records_from_export("audience_profiles", str(path), RUN.ds))
    assert exc.value.__notes__ == [f"row 2 of {path}"]
    assert "c@d.co" not in str(exc.value)


def test_only_stream_tables_are_accepted_and_delivered_in_event_order():
    entry = {"name": "s", "kind": "kinesis", "stream_name": "x"}
    dest = stream_destination(
        {
            **entry,
            "tables": ["audience_profile_interactions", "audience_profiles", "profile_merges"],
        }
    )
    assert dest.tables == ["profile_merges", "audience_profiles", "audience_profile_interactions"]
    with pytest.raises(ConfigError, match="cannot stream segment_memberships"):
        stream_destination({**entry, "tables": ["segment_memberships"]})
    with pytest.raises(ConfigError, match="needs stream_name"):
        stream_destination({"name": "s", "kind": "kinesis"})
    with pytest.raises(ConfigError, match="max_attempts must be at least 1"):
        stream_destination({**entry, "max_attempts": 0})


# --- batching ---------------------------------------------------------------------------------


def entry(size: int, key: str = "p-1", rid: str | None = None) -> Entry:
    record = StreamRecord(rid or f"r{size}-{key}", "interaction", key, "", {})
    return Entry(record, b"x" * size)


def test_batches_stop_at_the_record_count():
    sizes = [
        len(b) for b in batches((entry(10, rid=str(i)) for i in range(1001)), PUT_RECORDS_LIMITS)
    ]
    assert sizes == [500, 500, 1]


def test_batch_bytes_count_the_partition_key_for_kinesis_only():
    key = "k" * 100
    # Five records of 1 MiB - 100 bytes: exactly 1 MiB each with the key, so 5 fill 5 MiB.
    five = [entry(MIB - 100, key, rid=str(i)) for i in range(5)]
    assert [len(b) for b in batches(five, PUT_RECORDS_LIMITS)] == [5]
    six = [*five, entry(1, key, rid="small")]
    assert [len(b) for b in batches(six, PUT_RECORDS_LIMITS)] == [5, 1]
    # Firehose: 4 MiB per call, no key; records of 1,000 KiB - 100 bytes -> 4 per call.
    firehose = [entry(1000 * 1024 - 100, key, rid=str(i)) for i in range(5)]
    assert [len(b) for b in batches(firehose, PUT_RECORD_BATCH_LIMITS)] == [4, 1]


def test_a_record_over_the_limit_names_the_record():
    at_limit = entry(MIB - 4, "p-42", rid="fits")  # 1 MiB incl. its 4-byte key
    over = entry(MIB - 3, "p-42", rid="abc123")
    assert list(batches([at_limit], PUT_RECORDS_LIMITS)) == [[at_limit]]
    with pytest.raises(RecordTooLargeError) as exc:
        list(batches([at_limit, over], PUT_RECORDS_LIMITS))
    message = str(exc.value)
    assert "record abc123" in message and "'p-42'" in message
    assert "1,048,577 bytes incl. its partition key" in message
    assert "Kinesis PutRecords accepts at most 1,048,576 bytes per record" in message
    with pytest.raises(
        RecordTooLargeError, match="Firehose PutRecordBatch accepts at most 1,024,000"
    ):
        list(batches([entry(1000 * 1024 + 1)], PUT_RECORD_BATCH_LIMITS))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=60),
    keys=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5),
    max_records=st.integers(min_value=1, max_value=8),
    max_batch_bytes=st.integers(min_value=500, max_value=2000),
)
def test_batches_keep_order_and_every_limit(sizes, keys, max_records, max_batch_bytes):
    limits = BatchLimits("Test", max_records, max_batch_bytes, 400 + 80, key_counts=True)
    entries = [entry(size, keys[i % len(keys)], rid=str(i)) for i, size in enumerate(sizes)]
    result = list(batches(entries, limits))
    assert [e for batch in result for e in batch] == entries
    for batch in result:
        assert 1 <= len(batch) <= max_records
        assert sum(limits.size(e) for e in batch) <= max_batch_bytes


# --- retrying failed entries ------------------------------------------------------------------


def test_only_failed_entries_are_resent_until_delivered():
    batch = [entry(10, rid=f"r{i}") for i in range(10)]
    calls: list[list[str]] = []
    failures_left = Counter({"r2": 2, "r5": 1, "r9": 3})

    def send(pending):
        calls.append([e.record_id for e in pending])
        failed = [
            (e, "ProvisionedThroughputExceededException")
            for e in pending
            if failures_left[e.record_id]
        ]
        for e, _ in failed:
            failures_left[e.record_id] -= 1
        return failed

    delays: list[float] = []
    policy = RetryPolicy(max_attempts=5, base_seconds=0.1, max_seconds=0.3)
    resent = send_with_retries(
        batch, send, policy, "test", sleep=delays.append, rng=random.Random(7)
    )

    assert calls == [[f"r{i}" for i in range(10)], ["r2", "r5", "r9"], ["r2", "r9"], ["r9"]]
    assert resent == 6
    # Full jitter: each wait is uniform in [0, min(max, base * 2^(attempt-1))].
    assert len(delays) == 3
    assert all(0 <= d <= cap for d, cap in zip(delays, [0.1, 0.2, 0.3], strict=True))


def test_a_throttled_call_is_retried_whole():
    batch = [entry(10, rid=f"r{i}") for i in range(3)]
    calls = []

    def send(pending):
        calls.append(len(pending))
        if len(calls) == 1:
            raise RetryableCallError("ProvisionedThroughputExceededException")
        return []

    policy = RetryPolicy(max_attempts=3, base_seconds=0)
    assert send_with_retries(batch, send, policy, "test", sleep=lambda _: None) == 3
    assert calls == [3, 3]


def test_attempts_are_bounded_and_the_error_lists_what_was_not_delivered():
    batch = [entry(10, rid=f"r{i}") for i in range(4)]
    calls = []

    def send(pending):
        calls.append([e.record_id for e in pending])
        return [(e, "InternalFailure") for e in pending if e.record_id in {"r1", "r3"}]

    policy = RetryPolicy(max_attempts=3, base_seconds=0)
    with pytest.raises(UndeliveredRecordsError) as exc:
        send_with_retries(batch, send, policy, "Kinesis stream 's'", sleep=lambda _: None)

    assert len(calls) == 3
    assert exc.value.record_ids == ["r1", "r3"]
    message = str(exc.value)
    assert "2 record(s) not delivered to Kinesis stream 's' after 3 attempt(s)" in message
    assert "InternalFailure x2" in message and message.endswith("r1, r3")


def test_an_aws_batch_put_reports_failed_entries_and_retryable_calls():
    batch = [entry(10, rid=f"r{i}") for i in range(3)]
    retryable = frozenset({"ThrottlingException"})

    def fails(code):
        def call():
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "PutRecords")

        return call

    def put(response):
        return aws_batch_failures(
            batch, lambda: response, retryable, failed_count="Failed", results="Results"
        )

    assert put({"Failed": 0, "Results": [{}, {}, {}]}) == []
    # results come back in request order: the failed ones are named by position
    results = [{}, {"ErrorCode": "InternalFailure"}, {}]
    assert put({"Failed": 1, "Results": results}) == [(batch[1], "InternalFailure")]
    with pytest.raises(RetryableCallError) as exc:
        aws_batch_failures(
            batch, fails("ThrottlingException"), retryable, failed_count="F", results="R"
        )
    assert exc.value.code == "ThrottlingException"
    # anything else (a missing stream, access denied) fails now, not after every attempt
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws_batch_failures(
            batch, fails("ResourceNotFoundException"), retryable, failed_count="F", results="R"
        )


def test_values_become_json_safe():
    value = {
        "d": dt.date(2024, 5, 1),
        "n": Decimal("12.30"),
        "x": float("nan"),
        "l": (1, dt.time(3, 4)),
    }
    assert json_safe(value) == {"d": "2024-05-01", "n": "12.30", "x": None, "l": [1, "03:04:00"]}
