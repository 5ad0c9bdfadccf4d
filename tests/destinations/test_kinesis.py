"""Kinesis destination against moto: every record lands once, failed entries alone are re-sent."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter

import boto3
import pytest
from moto.core.exceptions import JsonRESTError
from moto.kinesis.models import KinesisBackend

from audience_profiles.destinations.streams import UndeliveredRecordsError, records_from_export
from tests.destinations.stream_support import (
    RUN,
    record_ids,
    stream_destination,
    write_exports,
)

pytestmark = pytest.mark.services

TABLES = ["profile_merges", "audience_profiles", "audience_profile_interactions"]


def kinesis_client(endpoint_url: str):
    return boto3.client("kinesis", endpoint_url=endpoint_url, region_name="us-east-1")


def create_stream(endpoint_url: str, shards: int = 2, name: str | None = None) -> str:
    name = name or f"profiles-{uuid.uuid4().hex[:8]}"
    client = kinesis_client(endpoint_url)
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return name


def read_stream(endpoint_url: str, name: str) -> list[tuple[str, dict]]:
    """Every (partition key, record) in the stream, shard by shard from the start."""
    client = kinesis_client(endpoint_url)
    found = []
    for shard in client.list_shards(StreamName=name)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            found += [(r["PartitionKey"], json.loads(r["Data"])) for r in page["Records"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return found


def expected_ids(exports) -> set[str]:
    return {r.record_id for t in TABLES for r in records_from_export(t, exports[t], RUN.ds)}


def destination(conn_id: str, stream: str, **options):
    return stream_destination(
        {
            "name": "profile_stream",
            "kind": "kinesis",
            "conn_id": conn_id,
            "stream_name": stream,
            "tables": TABLES,
            **options,
        }
    )


def test_delivers_every_record_once_keyed_by_profile(aws_conn, moto_server, tmp_path):
    # 600 interactions: more than one PutRecords call of 500; 5 of them twice (identical rows).
    exports = write_exports(
        tmp_path, profiles=50, interactions=600, merges=5, repeated_interactions=5
    )
    stream = create_stream(moto_server)

    report = destination(aws_conn, stream).deliver(RUN, exports)

    found = read_stream(moto_server, stream)
    ids = [record["record_id"] for _, record in found]
    assert len(ids) == 660 and len(set(ids)) == 660 and set(ids) == expected_ids(exports)
    assert {record["as_of"] for _, record in found} == {RUN.ds}
    assert all(key == record["profile_id"] for key, record in found)
    assert Counter(r["event_type"] for _, r in found) == {
        "interaction": 605,
        "profile_upsert": 50,
        "profile_merge": 5,
    }
    assert report.rows == {
        "profile_merges": 5,
        "audience_profiles": 50,
        "audience_profile_interactions": 605,
    }
    assert report.details["resent"] == 0


def test_delivering_the_run_again_repeats_the_same_record_ids(aws_conn, moto_server, tmp_path):
    exports = write_exports(tmp_path, profiles=5, interactions=10, merges=2)
    stream = create_stream(moto_server, shards=1)

    destination(aws_conn, stream).deliver(RUN, exports)
    destination(aws_conn, stream).deliver(RUN, exports)

    ids = Counter(record["record_id"] for _, record in read_stream(moto_server, stream))
    assert set(ids) == expected_ids(exports) and set(ids.values()) == {2}


@pytest.fixture
def put_records_calls(monkeypatch):
    """Make moto's PutRecords fail chosen entries (per entry, as a hot shard does) or whole calls.

    ``plan["fail"]`` maps record_id -> how many more times its entry fails;
    ``plan["throttle_calls"]`` is how many more whole calls are throttled. Returns the record_ids
    each call carried.
    """
    original = KinesisBackend.put_records
    calls: list[list[str]] = []
    plan = {"fail": Counter(), "throttle_calls": 0}

    def put_records(self, stream_arn, stream_name, records):
        ids = [json.loads(base64.b64decode(r["Data"]))["record_id"] for r in records]
        calls.append(ids)
        if plan["throttle_calls"]:
            plan["throttle_calls"] -= 1
            raise JsonRESTError(
                "ProvisionedThroughputExceededException", "Rate exceeded for stream"
            )
        failing = {i for i, rid in enumerate(ids) if plan["fail"][rid] > 0}
        for i in failing:
            plan["fail"][ids[i]] -= 1
        stored = original(
            self, stream_arn, stream_name, [r for i, r in enumerate(records) if i not in failing]
        )
        results = iter(stored["Records"])
        return {
            "FailedRecordCount": len(failing),
            "Records": [
                {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard",
                }
                if i in failing
                else next(results)
                for i in range(len(records))
            ],
        }

    monkeypatch.setattr(KinesisBackend, "put_records", put_records)
    return calls, plan


def test_only_failed_entries_are_resent_and_none_lost_or_duplicated(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    calls, plan = put_records_calls
    exports = write_exports(tmp_path, profiles=30, interactions=60, merges=3)
    interaction_ids = record_ids(exports, "audience_profile_interactions")
    victims = interaction_ids[::4]  # 15 entries fail twice, then go through
    plan["fail"].update(dict.fromkeys(victims, 2))
    stream = create_stream(moto_in_process)

    report = destination(aws_conn_in_process, stream, retry_base_seconds=0.01).deliver(RUN, exports)

    ids = [record["record_id"] for _, record in read_stream(moto_in_process, stream)]
    assert len(ids) == 93 and set(ids) == expected_ids(exports)
    # One call per table (all fit in one batch), then two calls carrying only the failed entries.
    assert [len(c) for c in calls] == [3, 30, 60, 15, 15]
    assert calls[3] == calls[4] == victims
    assert report.details["resent"] == 30


def test_a_throttled_call_is_retried_without_losing_records(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    calls, plan = put_records_calls
    plan["throttle_calls"] = 2
    exports = write_exports(tmp_path, profiles=10, interactions=10, merges=2)
    stream = create_stream(moto_in_process, shards=1)

    destination(aws_conn_in_process, stream, retry_base_seconds=0.01).deliver(RUN, exports)

    ids = [record["record_id"] for _, record in read_stream(moto_in_process, stream)]
    assert len(ids) == 22 and set(ids) == expected_ids(exports)
    assert [len(c) for c in calls] == [2, 2, 2, 10, 10]


def test_entries_that_keep_failing_fail_the_task_naming_them(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    calls, plan = put_records_calls
    exports = write_exports(tmp_path, profiles=8, interactions=0, merges=0)
    profile_ids = record_ids(exports, "audience_profiles")
    stuck = profile_ids[2:5]
    plan["fail"].update(dict.fromkeys(stuck, 1_000))
    stream = create_stream(moto_in_process, shards=1)
    dest = destination(aws_conn_in_process, stream, max_attempts=3, retry_base_seconds=0.01)

    with pytest.raises(UndeliveredRecordsError) as exc:
        dest.deliver(RUN, exports)

    assert exc.value.record_ids == stuck
    message = str(exc.value)
    assert f"3 record(s) not delivered to Kinesis stream '{stream}' after 3 attempt(s)" in message
    assert "ProvisionedThroughputExceededException x3" in message
    assert all(rid in message for rid in stuck)
    assert [len(c) for c in calls] == [8, 3, 3]  # only the stuck entries were re-sent
    delivered = {record["record_id"] for _, record in read_stream(moto_in_process, stream)}
    assert delivered == set(profile_ids) - set(stuck)


def test_a_retry_goes_on_after_the_records_an_earlier_attempt_got_confirmed(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    """An attempt that fails part way leaves a checkpoint beside the exports: the task's retry
    sends only what was not confirmed (it used to send the whole run again), and a completed
    delivery removes it, so delivering the date again sends everything."""
    calls, plan = put_records_calls
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    profile_ids = record_ids(exports, "audience_profiles")
    plan["fail"].update(dict.fromkeys(profile_ids[2:4], 1_000))
    stream = create_stream(moto_in_process, shards=1)
    dest = destination(aws_conn_in_process, stream, max_attempts=2, retry_base_seconds=0.01)
    with pytest.raises(UndeliveredRecordsError):
        dest.deliver(RUN, exports)
    checkpoint = tmp_path / ".delivery-profile_stream.json"
    assert json.loads(checkpoint.read_text())["tables"]["profile_merges"]["sent"] == 3

    plan["fail"].clear()
    calls.clear()
    report = dest.deliver(RUN, exports)
    # profile_merges (3, confirmed) is not sent again; the failed batch and the rest are
    assert [len(c) for c in calls] == [8, 12]
    assert report.details["resumed_after"] == {"profile_merges": 3}
    assert report.rows == {
        "profile_merges": 3,
        "audience_profiles": 8,
        "audience_profile_interactions": 12,
    }
    ids = Counter(record["record_id"] for _, record in read_stream(moto_in_process, stream))
    assert set(ids) == expected_ids(exports) and ids.most_common(1)[0][1] <= 2
    assert not checkpoint.exists()

    calls.clear()
    dest.deliver(RUN, exports)  # delivered again on purpose: everything
    assert [len(c) for c in calls] == [3, 8, 12]


def test_a_retry_to_a_stream_deleted_and_created_again_sends_everything(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    """What the failed attempt got confirmed went with the deleted stream: the stream created
    again under its name (another creation time) receives every record from the retry."""
    calls, plan = put_records_calls
    exports = write_exports(tmp_path, profiles=8, interactions=12, merges=3)
    plan["fail"].update(dict.fromkeys(record_ids(exports, "audience_profiles")[2:4], 1_000))
    stream = create_stream(moto_in_process, shards=1)
    dest = destination(aws_conn_in_process, stream, max_attempts=2, retry_base_seconds=0.01)
    first = dest.target_identity()
    with pytest.raises(UndeliveredRecordsError):
        dest.deliver(RUN, exports)
    assert (tmp_path / ".delivery-profile_stream.json").exists()

    client = kinesis_client(moto_in_process)
    client.delete_stream(StreamName=stream)
    client.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    create_stream(moto_in_process, shards=1, name=stream)
    assert dest.target_identity() != first and stream in first
    plan["fail"].clear()
    calls.clear()
    report = dest.deliver(RUN, exports)

    assert [len(c) for c in calls] == [3, 8, 12]
    assert "resumed_after" not in report.details
    ids = Counter(record["record_id"] for _, record in read_stream(moto_in_process, stream))
    assert set(ids) == expected_ids(exports) and set(ids.values()) == {1}


def test_a_failed_attempt_keeps_the_batches_it_got_confirmed(
    aws_conn_in_process, moto_in_process, put_records_calls, tmp_path
):
    """The second PutRecords call of a table fails for good: the checkpoint says the first
    call's 500 records got through (not only what its last timed write had seen)."""
    calls, plan = put_records_calls
    exports = write_exports(tmp_path, profiles=8, interactions=600, merges=3)
    interactions = record_ids(exports, "audience_profile_interactions")
    plan["fail"][interactions[550]] = 1_000
    stream = create_stream(moto_in_process, shards=1)
    dest = destination(aws_conn_in_process, stream, max_attempts=2, retry_base_seconds=0.01)
    with pytest.raises(UndeliveredRecordsError):
        dest.deliver(RUN, exports)
    saved = json.loads((tmp_path / ".delivery-profile_stream.json").read_text())["tables"]
    assert {t: entry["sent"] for t, entry in saved.items()} == {
        "profile_merges": 3,
        "audience_profiles": 8,
        "audience_profile_interactions": 500,
    }
