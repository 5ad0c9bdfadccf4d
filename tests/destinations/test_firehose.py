"""Firehose destination against moto (delivering to an S3 bucket in moto): JSON Lines, each record
once, and only failed entries re-sent."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import boto3
import pytest
from moto.core.exceptions import JsonRESTError
from moto.firehose.models import FirehoseBackend

from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.streams import UndeliveredRecordsError, records_from_export
from tests.destinations.stream_support import (
    RUN,
    record_ids,
    stream_destination,
    write_exports,
)

pytestmark = pytest.mark.services

TABLES = ["profile_merges", "audience_profiles", "audience_profile_interactions"]


def create_delivery_stream(endpoint_url: str, name: str | None = None) -> tuple[str, str]:
    """A delivery stream writing into a fresh bucket; returns (stream name, bucket)."""
    suffix = uuid.uuid4().hex[:8]
    bucket, name = f"firehose-{suffix}", name or f"profiles-{suffix}"
    boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    boto3.client(
        "firehose", endpoint_url=endpoint_url, region_name="us-east-1"
    ).create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "profiles/",
        },
    )
    return name, bucket


def read_bucket(endpoint_url: str, bucket: str) -> list[dict]:
    """Every JSON line Firehose wrote into ``bucket``."""
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    lines: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            assert body.endswith(b"\n")  # newline-terminated records concatenate into JSON Lines
            lines += [json.loads(line) for line in body.splitlines()]
    return lines


def expected_ids(exports) -> set[str]:
    return {r.record_id for t in TABLES for r in records_from_export(t, exports[t], RUN.ds)}


def destination(conn_id: str, stream: str, **options):
    return stream_destination(
        {
            "name": "profile_firehose",
            "kind": "firehose",
            "conn_id": conn_id,
            "delivery_stream": stream,
            "tables": TABLES,
            **options,
        }
    )


def test_delivers_every_record_once_as_json_lines(aws_conn, moto_server, tmp_path):
    exports = write_exports(
        tmp_path, profiles=40, interactions=600, merges=4, repeated_interactions=2
    )
    stream, bucket = create_delivery_stream(moto_server)

    report = destination(aws_conn, stream).deliver(RUN, exports)

    lines = read_bucket(moto_server, bucket)
    ids = [line["record_id"] for line in lines]
    assert len(ids) == 646 and len(set(ids)) == 646 and set(ids) == expected_ids(exports)
    assert {line["schema_version"] for line in lines} == {1}
    assert {line["as_of"] for line in lines} == {RUN.ds}
    assert report.rows == {
        "profile_merges": 4,
        "audience_profiles": 40,
        "audience_profile_interactions": 602,
    }


@pytest.fixture
def put_record_batch_calls(monkeypatch):
    """Make moto's PutRecordBatch fail chosen entries (``plan["fail"]``: record_id -> times) or
    whole calls (``plan["unavailable_calls"]``). Returns the record_ids each call carried."""
    original = FirehoseBackend.put_record_batch
    calls: list[list[str]] = []
    plan = {"fail": Counter(), "unavailable_calls": 0}

    def put_record_batch(self, delivery_stream_name, records):
        ids = [json.loads(r["Data"])["record_id"] for r in records]
        calls.append(ids)
        if plan["unavailable_calls"]:
            plan["unavailable_calls"] -= 1
            raise JsonRESTError("ServiceUnavailableException", "Slow down.")
        failing = {i for i, rid in enumerate(ids) if plan["fail"][rid] > 0}
        for i in failing:
            plan["fail"][ids[i]] -= 1
        passing = [r for i, r in enumerate(records) if i not in failing]
        # moto would write an empty S3 object for an empty batch; real Firehose writes nothing.
        stored = (
            original(self, delivery_stream_name, passing) if passing else {"RequestResponses": []}
        )
        results = iter(stored["RequestResponses"])
        return {
            "FailedPutCount": len(failing),
            "Encrypted": False,
            "RequestResponses": [
                {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
                if i in failing
                else next(results)
                for i in range(len(records))
            ],
        }

    monkeypatch.setattr(FirehoseBackend, "put_record_batch", put_record_batch)
    return calls, plan


def test_only_failed_entries_are_resent_and_none_lost_or_duplicated(
    aws_conn_in_process, moto_in_process, put_record_batch_calls, tmp_path
):
    calls, plan = put_record_batch_calls
    exports = write_exports(tmp_path, profiles=20, interactions=40, merges=2)
    profile_ids = record_ids(exports, "audience_profiles")
    victims = profile_ids[1::3]
    plan["fail"].update(dict.fromkeys(victims, 1))
    plan["unavailable_calls"] = 1  # and the very first call is refused whole
    stream, bucket = create_delivery_stream(moto_in_process)

    report = destination(aws_conn_in_process, stream, retry_base_seconds=0.01).deliver(RUN, exports)

    ids = [line["record_id"] for line in read_bucket(moto_in_process, bucket)]
    assert len(ids) == 62 and set(ids) == expected_ids(exports)
    assert [len(c) for c in calls] == [2, 2, 20, len(victims), 40]
    assert calls[3] == victims
    assert report.details["resent"] == 2 + len(victims)


def test_entries_that_keep_failing_fail_the_task_naming_them(
    aws_conn_in_process, moto_in_process, put_record_batch_calls, tmp_path
):
    calls, plan = put_record_batch_calls
    exports = write_exports(tmp_path, profiles=6, interactions=0, merges=0)
    profile_ids = record_ids(exports, "audience_profiles")
    stuck = [profile_ids[0], profile_ids[5]]
    plan["fail"].update(dict.fromkeys(stuck, 1_000))
    stream, bucket = create_delivery_stream(moto_in_process)
    dest = destination(aws_conn_in_process, stream, max_attempts=4, retry_base_seconds=0.01)

    with pytest.raises(UndeliveredRecordsError) as exc:
        dest.deliver(RUN, exports)

    assert exc.value.record_ids == stuck
    message = str(exc.value)
    assert (
        f"2 record(s) not delivered to Firehose delivery stream '{stream}' after 4 attempt(s)"
        in message
    )
    assert "ServiceUnavailableException x2" in message and all(rid in message for rid in stuck)
    assert [len(c) for c in calls] == [6, 2, 2, 2]
    assert {line["record_id"] for line in read_bucket(moto_in_process, bucket)} == set(
        profile_ids
    ) - set(stuck)


def test_a_delivery_stream_created_again_under_its_name_is_told_apart(aws_conn, moto_server):
    """The checkpoint's settings hold the stream's ARN and creation time, so a retry to a
    delivery stream deleted and created again since the failed attempt starts over (the
    checkpoint itself: tests/destinations/test_streams.py)."""
    stream, bucket = create_delivery_stream(moto_server)
    dest = destination(aws_conn, stream)
    first = dest.target_identity()
    assert first.startswith("arn:aws:firehose:") and stream in first
    assert dest.target_identity() == first

    client = boto3.client("firehose", endpoint_url=moto_server, region_name="us-east-1")
    client.delete_delivery_stream(DeliveryStreamName=stream)
    create_delivery_stream(moto_server, name=stream)
    assert dest.target_identity() not in (first, None)


def test_erasure_sends_one_profile_erased_line_per_profile(aws_conn, moto_server):
    stream, bucket = create_delivery_stream(moto_server)
    request = ErasureRequest("r-1", "2024-05-02 10:00:00", ("p-1", "p-2"), (("email", "a@b.com"),))

    statuses = destination(aws_conn, stream).erase([request])

    assert statuses["r-1"]["status"] == "done"
    lines = read_bucket(moto_server, bucket)
    assert sorted((line["event_type"], line["profile_id"]) for line in lines) == [
        ("profile_erased", "p-1"),
        ("profile_erased", "p-2"),
    ]
    assert "a@b.com" not in json.dumps(lines)
