"""The stream record schema, batching within service limits, and the retry of failed entries."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections import Counter
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from audience_profiles.config import ConfigError
from audience_profiles.destinations import kafka, streams
from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.drop import select_list
from audience_profiles.destinations.firehose import PUT_RECORD_BATCH_LIMITS
from audience_profiles.destinations.kinesis import PUT_RECORDS_LIMITS, KinesisDestination
from audience_profiles.destinations.streams import (
    MIB,
    STREAM_TABLES,
    BatchLimits,
    Entry,
    RecordTooLargeError,
    RetryableCallError,
    RetryPolicy,
    StreamRecord,
    UndeliveredRecordsError,
    apply_pii,
    aws_batch_failures,
    batches,
    build_record,
    erased_records,
    json_safe,
    record_id,
    records_from_export,
    repeat_candidates,
    run_records,
    send_with_retries,
)
from audience_profiles.files import safe_name
from audience_profiles.privacy import hash_identifier
from tests.destinations.stream_support import (
    RUN,
    interactions_table,
    merges_table,
    stream_destination,
    write_exports,
)


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
        "as_of",
        "emitted_at",
        "payload",
    ]
    assert decoded["schema_version"] == 1
    assert decoded["as_of"] == RUN.ds
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
    with pytest.raises(ConfigError, match="max_attempts: must be 1 or more, not 0"):
        stream_destination({**entry, "max_attempts": 0})


# --- identical rows -----------------------------------------------------------------------------


@pytest.fixture(params=["in_memory", "duckdb"])
def repeats_found(request, monkeypatch):
    """Both ways of finding identical rows: counted in Python (small exports, the default for
    these tests' sizes) and DuckDB's pre-pass (large exports, forced here)."""
    if request.param == "duckdb":
        monkeypatch.setattr(streams, "IN_MEMORY_REPEAT_ROWS", 0)
    return request.param


def write(tmp_path, table: pa.Table, name: str = "t.parquet", **kwargs) -> str:
    path = tmp_path / name
    pq.write_table(table, path, **kwargs)
    return str(path)


def test_identical_rows_get_distinct_ids_and_the_first_keeps_its_own(tmp_path, repeats_found):
    """Two identical votes are two facts: the repeat's key gets occurrence 2, the first keeps the
    id it has alone (consumers may have stored it), every unique row keeps its id."""
    exports = write_exports(tmp_path, profiles=10, interactions=30, repeated_interactions=4)
    records = all_records(exports, "audience_profile_interactions")
    ids = [r.record_id for r in records]
    assert len(ids) == 34 and len(set(ids)) == 34

    alone = write_exports(tmp_path / "alone", profiles=10, interactions=30)
    assert ids[:30] == [r.record_id for r in all_records(alone, "audience_profile_interactions")]
    key_columns = STREAM_TABLES["audience_profile_interactions"].key_columns
    for first, repeat in zip(records[:4], records[30:], strict=True):
        assert repeat.payload == first.payload
        key = {c: first.payload[c] for c in key_columns}
        assert first.record_id == record_id("interaction", key, first.payload)
        assert repeat.record_id == record_id("interaction", {**key, "occurrence": 2}, first.payload)


def test_identical_row_ids_do_not_depend_on_order_batches_or_time(tmp_path, repeats_found):
    base = interactions_table(12, 4)
    # row 3 three times, row 5 twice, spread over several read batches and row groups
    table = pa.concat_tables([base, base.slice(3, 1), base.slice(5, 1), base.slice(3, 1)])
    path = write(tmp_path, table, row_group_size=4)
    shuffled = table.take(random.Random(3).sample(range(table.num_rows), table.num_rows))
    other = write(tmp_path, shuffled, "shuffled.parquet")

    def ids(p, **kwargs):
        return [
            r.record_id
            for r in records_from_export("audience_profile_interactions", p, RUN.ds, **kwargs)
        ]

    first = ids(path)
    assert len(set(first)) == 15
    assert ids(path, batch_rows=2, emitted_at="2024-06-01T00:00:00") == first
    assert sorted(ids(other, batch_rows=5)) == sorted(first)


def replaced(table: pa.Table, **columns) -> pa.Table:
    """``table`` with the named columns' values replaced (each keeps its type)."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values, table.schema.field(index).type))
    return table


def test_rows_identical_once_pii_is_applied_get_distinct_ids(tmp_path, repeats_found):
    """Rows that differ only in what the policy removes are sent identical: still two records."""
    same = {
        "profile_id": ["p-0"] * 2,
        "interaction_date": [dt.date(2024, 4, 1)] * 2,
        "attribute": ["Q"] * 2,
        "option": ["A"] * 2,
        "poll_id": ["poll-0"] * 2,
        "event_id": ["event-0"] * 2,
        "session_id": ["s-0"] * 2,
        "votes": [1, 1],
    }
    twins = replaced(interactions_table(2, 2), **same)  # two different names and emails
    path = write(tmp_path, twins)
    table = "audience_profile_interactions"

    for pii in ("plain", "hashed", "omit"):
        records = list(records_from_export(table, path, RUN.ds, pii=pii))
        assert len({r.record_id for r in records}) == 2, pii
    omitted = list(records_from_export(table, path, RUN.ds, pii="omit"))
    assert omitted[0].payload == omitted[1].payload
    alone = build_record(table, twins.to_pylist()[0], RUN.ds, "", "omit")
    assert omitted[0].record_id == alone.record_id


def test_merges_identical_once_the_identifier_is_omitted_get_distinct_ids(tmp_path, repeats_found):
    merges = replaced(
        merges_table(2),
        merged_profile_id=["p-m0"] * 2,
        surviving_profile_id=["p-0"] * 2,
        merged_at=[dt.datetime(2024, 5, 1, 2)] * 2,
    )
    path = write(tmp_path, merges)  # two merges of the same pair through different emails
    records = list(records_from_export("profile_merges", path, RUN.ds, pii="omit"))
    assert records[0].payload == records[1].payload
    assert records[0].payload["identifier_value"] is None
    assert records[0].record_id != records[1].record_id


def test_repeat_candidates_are_the_rows_sharing_the_key_columns(tmp_path):
    path = write(tmp_path, pa.table({"k": ["a", "b", "a", "c", "a", "b"], "v": list(range(6))}))
    assert list(repeat_candidates(path, ["k"], batch_rows=2)) == [
        (0, 0, 4),
        (1, 1, 5),
        (2, 0, 4),
        (4, 0, 4),
        (5, 1, 5),
    ]
    assert list(repeat_candidates(path, ["k", "v"])) == []
    assert [row for row, _, _ in repeat_candidates(path, [])] == list(range(6))


# --- PII in identifier pairs ------------------------------------------------------------------


def test_merges_never_send_an_email_identifier_unless_pii_is_plain(exports):
    emails = [f"fan{i}@example.com" for i in range(5)]
    plain = [r.payload for r in all_records(exports, "profile_merges")]
    assert [p["identifier_value"] for p in plain] == emails

    hashed = all_records(exports, "profile_merges", pii="hashed")
    assert [r.payload["identifier_type"] for r in hashed] == ["email_sha256"] * 5
    assert [r.payload["identifier_value"] for r in hashed] == [hash_identifier(e) for e in emails]
    omitted = all_records(exports, "profile_merges", pii="omit")
    assert [r.payload["identifier_type"] for r in omitted] == ["email"] * 5
    assert [r.payload["identifier_value"] for r in omitted] == [None] * 5
    for record in hashed + omitted:
        assert "@" not in record.encode().decode()
        # the id hashes what was sent, never the email
        key = {c: record.payload[c] for c in STREAM_TABLES["profile_merges"].key_columns}
        assert record.record_id == record_id("profile_merge", key, record.payload)


@pytest.mark.parametrize("pii", ["plain", "hashed", "omit"])
def test_the_pii_policy_matches_the_file_drops(tmp_path, pii):
    """apply_pii gives, row for row, what drop.select_list's SQL gives: identifiers, merges and
    the link audit (every (type, value) pair), names and email, a quarantined raw line."""
    tables = {
        "identifiers": pa.table(
            {
                "profile_id": ["p-1", "p-1", "p-2", "p-3"],
                "identifier_type": ["email", "session_id", "external_id", "email"],
                "identifier_value": ["a@b.co", "s-1", "sso-1", None],
            }
        ),
        "audit": pa.table(
            {
                "left_type": ["email", "session_id", "email"],
                "left_value": [" A@B.co", "s-1", "x@y.z"],
                "right_type": ["session_id", "email", "email"],
                "right_value": ["s-2", "c@d.co", "X@Y.z "],
                "rule": ["form", "form", "same"],
            }
        ),
        "profiles": pa.table(
            {
                "profile_id": ["p-1", "p-2"],
                "email": ["A@b.co", None],
                "first_name": ["Ada", "Bob"],
                "last_name": ["L", "M"],
                "raw": ["a line, a@b.co", None],
            }
        ),
    }
    con = duckdb.connect()
    for name, table in tables.items():
        path = write(tmp_path, table, f"{name}.parquet")
        source = f"read_parquet('{path}')"
        cols, _ = select_list(con, source, pii, escape_csv=False)
        dropped = con.sql(f"SELECT {cols} FROM {source}").to_arrow_table().to_pylist()
        assert [apply_pii(row, pii) for row in table.to_pylist()] == dropped, name


# --- as_of --------------------------------------------------------------------------------------


def test_every_record_says_which_date_it_describes(exports):
    for table in STREAM_TABLES:
        records = all_records(exports, table, ds="2024-04-30", emitted_at="2024-06-01T00:00:00")
        assert {r.as_of for r in records} == {"2024-04-30"}
        assert {json.loads(r.encode())["as_of"] for r in records} == {"2024-04-30"}
    # as_of is a key field of upserts only: facts keep their ids whichever run sends them
    upsert = all_records(exports, "audience_profiles")[0]
    key = {"profile_id": upsert.profile_id, "as_of": RUN.ds}
    assert upsert.record_id == record_id("profile_upsert", key, upsert.payload)


def test_an_old_date_delivered_again_does_not_roll_a_consumer_back(tmp_path):
    """The documented consumer rule: apply a profile_upsert only if its as_of is not older than
    the state held. Ordering by emitted_at instead would roll the profile back."""
    day1 = write_exports(tmp_path / "day1", profiles=3, interactions=0, merges=0)
    table = pq.read_table(day1["audience_profiles"])
    day2_table = table.set_column(
        table.schema.get_field_index("sessions"), "sessions", pa.array([7, 7, 7], pa.int64())
    )
    day2 = write(tmp_path, day2_table, "day2.parquet")
    sent = [
        *records_from_export("audience_profiles", day2, "2024-05-02", emitted_at="2024-05-03T01"),
        # the 2024-05-01 run re-delivered later (a backfill, a cleared task)
        *records_from_export(
            "audience_profiles", day1["audience_profiles"], "2024-05-01", emitted_at="2024-05-09"
        ),
    ]
    held: dict[str, StreamRecord] = {}
    for record in sent:
        current = held.get(record.profile_id)
        if current is None or record.as_of >= current.as_of:
            held[record.profile_id] = record
    assert {r.payload["sessions"] for r in held.values()} == {7}
    assert {r.as_of for r in held.values()} == {"2024-05-02"}


def test_profile_erased_records_are_as_of_the_day_they_are_sent():
    request = ErasureRequest("r-1", "2024-05-01 10:00:00", ("p-1",))
    late_evening = list(erased_records([request], emitted_at="2024-05-02T23:30:00.000-02:00"))
    assert [r.as_of for r in late_evening] == ["2024-05-03"]  # the UTC date
    again = list(erased_records([request], emitted_at="2024-05-04T08:00:00.000+00:00"))
    assert again[0].record_id == late_evening[0].record_id  # as_of is not part of the id
    assert json.loads(again[0].encode())["as_of"] == "2024-05-04"


# --- Kafka delivery reports ---------------------------------------------------------------------


class FakeProducer:
    """confluent_kafka.Producer as _produce_all uses it; messages numbered in ``lose`` get no
    delivery report. ``headers`` collects every message's headers."""

    lose: set[int] = set()
    headers: list[dict[str, str]] = []

    def __init__(self, config, logger=None):
        self.queued: list = []

    def produce(self, topic, key, value, headers, on_delivery):
        self.queued.append(on_delivery)
        self.headers.append(dict(headers))

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        for number, on_delivery in enumerate(self.queued):
            if number not in self.lose:
                on_delivery(None, None)
        self.queued = []
        return 0


def test_kafka_tracks_each_message_even_when_two_share_a_record_id(monkeypatch):
    """A message without a delivery report fails the task even when another message with the
    same record_id was delivered (tracking by record_id let it go missing silently)."""
    monkeypatch.setattr(kafka, "Producer", FakeProducer)
    monkeypatch.setattr(FakeProducer, "headers", [])
    monkeypatch.setattr(kafka.KafkaDestination, "producer_config", lambda self: {})
    dest = stream_destination(
        {"name": "t", "kind": "kafka", "topic": "profiles", "tables": ["audience_profiles"]}
    )
    twin = StreamRecord("same-id", "interaction", "p-1", "", {"profile_id": "p-1"}, RUN.ds)
    other = StreamRecord("other-id", "interaction", "p-2", "", {"profile_id": "p-2"}, RUN.ds)

    monkeypatch.setattr(FakeProducer, "lose", {1})  # the second twin
    with pytest.raises(UndeliveredRecordsError) as exc:
        dest._produce_all([("t", [twin, twin, other])])
    assert exc.value.record_ids == ["same-id"]
    assert "no delivery report within flush_timeout_seconds x1" in str(exc.value)

    monkeypatch.setattr(FakeProducer, "lose", set())
    assert dest._produce_all([("t", [twin, twin, other])]) == {"t": 3}
    assert FakeProducer.headers[-1] == {
        "record_id": "other-id",
        "event_type": "interaction",
        "as_of": RUN.ds,
        "schema_version": "1",
    }


def test_kafka_keeps_the_run_of_messages_confirmed_from_the_start():
    """Delivery reports come back out of order across partitions: a retry may skip only the
    messages before the first one not confirmed."""
    confirmed = kafka._ConfirmedPrefix()
    for number in (1, 2, 0, 5, 3):
        confirmed.add(number)
    assert confirmed.below == 4  # 4 has no report yet: 5 is sent again by a retry
    confirmed.add(4)
    assert confirmed.below == 6


# --- the delivery checkpoint ------------------------------------------------------------------


def kinesis_entry(monkeypatch, region: str = "eu-west-1", created: str | None = "v1", **options):
    """A Kinesis destination whose stream says it was ``created`` then (None: it cannot be
    described); nothing is sent."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_CHECKPOINT",
        json.dumps({"conn_type": "aws", "extra": {"region_name": region}}),
    )

    def describe_target(self):
        if created is None:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
                "DescribeStreamSummary",
            )
        return f"arn:aws:kinesis:{region}:123456789012:stream/{self.stream_name} {created}"

    monkeypatch.setattr(KinesisDestination, "describe_target", describe_target)
    return stream_destination(
        {
            "name": "profile_stream",
            "kind": "kinesis",
            "conn_id": "aws_checkpoint",
            "stream_name": "profiles",
            "tables": ["profile_merges", "audience_profiles"],
            **options,
        }
    )


def test_a_checkpoint_holds_under_other_retry_options_not_another_target(monkeypatch, tmp_path):
    """Raising max_attempts for a throttled stream keeps what got through; another stream,
    region or PII policy gets everything."""
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    checkpoint, _ = run_records(kinesis_entry(monkeypatch, max_attempts=2), RUN, exports)
    checkpoint.confirm("profile_merges", 3)
    checkpoint.confirm("audience_profiles", 5, write=True)

    resumed = {"profile_merges": 3, "audience_profiles": 5}
    again = kinesis_entry(monkeypatch, max_attempts=20, retry_max_seconds=60)
    assert run_records(again, RUN, exports)[0].resumed == resumed
    for elsewhere in (
        {"stream_name": "profiles-standby"},
        {"region": "us-east-1"},
        {"pii": "hashed"},
    ):
        # (the connection is read when the delivery starts)
        assert run_records(kinesis_entry(monkeypatch, **elsewhere), RUN, exports)[0].resumed == {}
    assert run_records(kinesis_entry(monkeypatch), RUN, exports)[0].resumed == resumed


def test_a_stream_deleted_and_created_again_starts_the_delivery_over(monkeypatch, tmp_path, caplog):
    """Records an earlier attempt sent went with the stream that was deleted: a retry to the
    stream created again under its name sends everything. A stream that cannot be described
    (no permission) keeps what got through, as before, and the log says why."""
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    checkpoint, _ = run_records(kinesis_entry(monkeypatch, created="v1"), RUN, exports)
    checkpoint.confirm("audience_profiles", 5, write=True)

    assert run_records(kinesis_entry(monkeypatch, created="v1"), RUN, exports)[0].resumed
    assert run_records(kinesis_entry(monkeypatch, created="v2"), RUN, exports)[0].resumed == {}

    checkpoint, _ = run_records(kinesis_entry(monkeypatch, created=None), RUN, exports)
    checkpoint.confirm("audience_profiles", 5, write=True)
    with caplog.at_level(logging.WARNING, logger=streams.__name__):
        again = run_records(kinesis_entry(monkeypatch, created=None), RUN, exports)[0]
    assert again.resumed == {"audience_profiles": 5}
    assert "Kinesis stream 'profiles': could not describe it (An error occurred " in caplog.text
    assert "AccessDeniedException" in caplog.text


def test_a_checkpoint_of_a_destination_named_with_a_slash_is_written_and_read(tmp_path):
    """``crm/eu`` named a folder that does not exist: every attempt failed writing its
    checkpoint once it had sent everything, and the next attempt sent everything again."""
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    first = streams.DeliveryCheckpoint("crm/eu", RUN, exports)
    first.confirm("audience_profiles", 5, write=True)

    assert first.path.parent == tmp_path
    assert first.path.name.startswith(".delivery-crm_eu-")
    assert streams.DeliveryCheckpoint("crm/eu", RUN, exports).resumed == {"audience_profiles": 5}
    assert streams.DeliveryCheckpoint("crm_eu", RUN, exports).resumed == {}  # not the same one
    assert safe_name("profile_stream") == "profile_stream"


def test_a_torn_checkpoint_starts_the_delivery_over(tmp_path):
    """A checkpoint cut short (a worker lost while writing it) resumes nothing: sending the
    whole run again is what the at-least-once guarantee allows; skipping records is not."""
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    first = streams.DeliveryCheckpoint("crm", RUN, exports)
    first.confirm("audience_profiles", 5, write=True)
    first.path.write_text(first.path.read_text()[:20])

    again = streams.DeliveryCheckpoint("crm", RUN, exports)
    assert again.resumed == {} and again.sent("audience_profiles") == 0


# --- batching ---------------------------------------------------------------------------------


def entry(size: int, key: str = "p-1", rid: str | None = None) -> Entry:
    record = StreamRecord(rid or f"r{size}-{key}", "interaction", key, "", {}, RUN.ds)
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
    # A retry goes on after what its checkpoint holds: it does not send the whole run again.
    assert "a task retry sends them and the later records" in message
    assert "sends the run again" not in message


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


def test_a_connection_not_defined_has_no_target_but_other_lookup_errors_fail(monkeypatch):
    # Taken as "not defined", a lookup error would change the delivery's settings and make the
    # retry send everything again.
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    assert streams.connection_target("no_such_connection_here") is None

    def denied(conn_id):
        raise AirflowSecretsBackendAccessDenied(conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", denied)
    with pytest.raises(AirflowSecretsBackendAccessDenied):
        streams.connection_target("aws_default")
