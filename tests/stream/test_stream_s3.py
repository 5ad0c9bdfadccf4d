"""S3 landing on moto: object-created notifications go to SQS, the SQS MessageQueueTrigger (the
stream DAG's asset watcher) turns them into an event, and the DAG's logic emits the batch to
Kinesis. Then a notification is lost, and the reconciliation listing still finds the file."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import json
import logging
import lzma
import uuid
from pathlib import Path

import boto3
import duckdb
import pytest
import zstandard
from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

from audience_profiles.stream import Landing, _stage, run_batch, s3_records
from tests.stream.support import (
    emitted,
    kinesis_config,
    of_type,
    query,
    write_interactions,
)
from tests.support import SEED_SESSION, write_seed_example
from tests.test_landing_compressed import zip_compress

pytestmark = pytest.mark.services
PREFIX = "landing"


def client(service: str, moto_url: str):
    return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket_with_queue(aws_conn, moto_server) -> tuple[str, str]:
    """A landing bucket whose object-created notifications go to a new SQS queue."""
    s3, sqs = client("s3", moto_server), client("sqs", moto_server)
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"landed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return bucket, queue_url


def upload(moto_url: str, bucket: str, local_root: Path) -> list[str]:
    """Upload every file under ``local_root`` below the landing prefix; return the keys."""
    s3 = client("s3", moto_url)
    keys = []
    for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
        key = f"{PREFIX}/{path.relative_to(local_root).as_posix()}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


def s3_landing_config(tmp_path: Path, aws_conn: str, moto_url: str, bucket: str):
    """A pipeline landing in ``bucket`` (below PREFIX) and streaming to Kinesis on moto."""
    return kinesis_config(
        tmp_path,
        aws_conn,
        moto_url,
        landing_root=f"s3://{bucket}/{PREFIX}",
        landing_conn_id=aws_conn,
    )


def upload_seed_example(moto_url: str, bucket: str, folder: Path) -> list[str]:
    """The seed's worked example and one more vote, in ``part 1.csv`` (S3 event keys are
    form-encoded: it arrives as ``part+1.csv``), uploaded; returns the keys."""
    write_seed_example(folder)
    write_interactions(folder, "2022-04-29", "part 1.csv", [("2022-04-29", SEED_SESSION, 3)])
    return upload(moto_url, bucket, folder)


async def next_event(trigger: MessageQueueTrigger) -> dict:
    events = trigger.run()
    try:
        event = await asyncio.wait_for(anext(events), timeout=20)
    finally:
        await events.aclose()
    return event.payload


def trigger_events(queue_url: str, conn_id: str, keys: list[str]) -> list[dict]:
    """Run the DAG's trigger until its events announce every key; return the asset-event extras
    Airflow would store (``{"from_trigger": True, "payload": ...}``)."""
    extras: list[dict] = []
    while {r["s3"]["object"]["key"] for r in s3_records(extras)} < set(keys):
        trigger = MessageQueueTrigger(
            scheme="sqs",
            sqs_queue=queue_url,
            aws_conn_id=conn_id,
            max_messages=10,
            wait_time_seconds=1,
            waiter_delay=0,
        )
        extras.append({"from_trigger": True, "payload": asyncio.run(next_event(trigger))})
        assert len(extras) < 10, "the trigger did not announce every uploaded key"
    return extras


def test_sqs_trigger_event_drives_a_batch_and_reconciliation_finds_a_lost_message(
    aws_conn, moto_server, bucket_with_queue, tmp_path
):
    bucket, queue_url = bucket_with_queue
    config = s3_landing_config(tmp_path, aws_conn, moto_server, bucket)
    keys = upload_seed_example(moto_server, bucket, tmp_path / "upload-1")

    extras = trigger_events(queue_url, aws_conn, [k.replace(" ", "+") for k in keys])
    bodies = [m["Body"] for e in extras for m in e["payload"]["message_batch"]]
    assert any("s3:TestEvent" in b for b in bodies)  # moto announces the configuration: skipped
    result = run_batch(config, run_id="asset_triggered", records=s3_records(extras))

    assert result["mode"] == "events" and result["files"] == len(keys) == 4
    records = emitted(config, moto_server)
    assert sorted(r["payload"]["option"] for r in of_type(records, "interaction")) == [
        "Manchester Blue",
        "West London Blue",
    ]
    assert (f"s3://{bucket}/{PREFIX}/interactions/date=2022-04-29/part 1.csv",) in query(
        config, "SELECT file FROM stream_files"
    )
    # The trigger deleted every message it announced: nothing left to redeliver.
    attributes = client("sqs", moto_server).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"

    # A file lands and its notification is lost (the triggerer died after deleting it).
    second = tmp_path / "upload-2"
    write_interactions(second, "2022-04-30", "late.csv", [("2022-04-30", SEED_SESSION, 1)])
    upload(moto_server, bucket, second)
    client("sqs", moto_server).purge_queue(QueueUrl=queue_url)

    result = run_batch(config, run_id="reconcile")

    assert result["mode"] == "reconcile" and result["files"] == 1
    interactions = of_type(emitted(config, moto_server), "interaction")
    assert sorted(r["payload"]["option"] for r in interactions) == [
        "Manchester Blue",
        "Manchester Red",
        "West London Blue",
    ]
    assert len({r["record_id"] for r in interactions}) == 3
    # Listed again: the ledger knows every version, the watermarks cover them.
    assert run_batch(config, run_id="reconcile-2")["files"] == 0
    assert len(emitted(config, moto_server)) == len(records) + 2


def test_s3_events_routed_through_eventbridge_drive_a_batch(aws_conn, moto_server, tmp_path):
    """A landing bucket that sends its events to EventBridge, and a rule that sends them on to
    the queue: the run reads them as it reads S3's own notifications (they used to be skipped,
    leaving the files to the reconciliation listing)."""
    s3, sqs, events = (client(service, moto_server) for service in ("s3", "sqs", "events"))
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    queue_url = sqs.create_queue(QueueName=f"landed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    rule = f"landed-{bucket}"
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}},
            }
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn["Attributes"]["QueueArn"]}])
    config = s3_landing_config(tmp_path, aws_conn, moto_server, bucket)
    keys = upload_seed_example(moto_server, bucket, tmp_path / "upload")

    extras = trigger_events(queue_url, aws_conn, [k.replace(" ", "+") for k in keys])
    bodies = [json.loads(m["Body"]) for e in extras for m in e["payload"]["message_batch"]]
    assert {b["detail-type"] for b in bodies} == {"Object Created"}  # EventBridge's, not S3's
    result = run_batch(config, run_id="asset_triggered", records=s3_records(extras))

    assert result["mode"] == "events" and result["files"] == len(keys) == 4
    assert sorted(
        r["payload"]["option"] for r in of_type(emitted(config, moto_server), "interaction")
    ) == [
        "Manchester Blue",
        "West London Blue",
    ]
    assert (f"s3://{bucket}/{PREFIX}/interactions/date=2022-04-29/part 1.csv",) in query(
        config, "SELECT file FROM stream_files"
    )
    # Listed afterwards: the ledger already holds every version the events brought.
    assert run_batch(config, run_id="reconcile")["files"] == 0


def test_a_file_deleted_after_its_event_is_left_out_and_the_rest_streams(
    aws_conn, moto_server, bucket_with_queue, tmp_path, caplog
):
    """An upload taken back before the batch fetched it (NoSuchKey) failed the whole run, and
    with it every other file its events announced. Now it is left out, named in the log and
    the run's summary, and the rest streams; a new upload under its name is a new event."""
    bucket, queue_url = bucket_with_queue
    config = s3_landing_config(tmp_path, aws_conn, moto_server, bucket)
    keys = upload_seed_example(moto_server, bucket, tmp_path / "upload")
    extras = trigger_events(queue_url, aws_conn, [k.replace(" ", "+") for k in keys])
    taken_back = next(k for k in keys if k.endswith("part 1.csv"))
    client("s3", moto_server).delete_object(Bucket=bucket, Key=taken_back)

    with caplog.at_level(logging.ERROR, logger="audience_profiles.stream"):
        result = run_batch(config, run_id="asset_triggered", records=s3_records(extras))

    gone = f"s3://{bucket}/{taken_back}"
    assert result["files"] == len(keys) - 1 and result["unreadable"] == [gone]
    assert f"{gone}: not in the landing any more (deleted since it was announced)" in caplog.text
    interactions = of_type(emitted(config, moto_server), "interaction")
    assert [r["payload"]["option"] for r in interactions] == ["Manchester Blue"]
    assert (gone,) not in query(config, "SELECT file FROM stream_files")


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress),
        (".bz2", bz2.compress),
        (".zst", zstandard.compress),
        (".zip", zip_compress),
        (".xz", lzma.compress),
    ],
    ids=["gz", "bz2", "zst", "zip", "xz"],
)
def test_a_compressed_key_is_listed_fetched_and_staged_under_its_name(
    aws_conn, moto_server, tmp_path, suffix, compress
):
    # A part-0.csv.gz was "not read": never streamed, and named in a warning each batch; so
    # were part-0.csv.bz2 and part-0.csv.zst until they were read too.
    s3 = client("s3", moto_server)
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    partition = f"{PREFIX}/interactions/date=2022-04-29"
    body = "date,event_id,poll_id,session_id,option,votes\n2022-04-29,e1,p,s1,0,1\nbad,row\n"
    key = f"{partition}/part-0.csv{suffix}"
    s3.put_object(Bucket=bucket, Key=key, Body=compress(body.encode()))
    s3.put_object(Bucket=bucket, Key=f"{partition}/part-1.csv.7z", Body=b"7z\xbc\xaf\x27\x1c")
    landing_ = Landing(f"s3://{bucket}/{PREFIX}", aws_conn)

    files = landing_.list_source("interactions")

    name = f"s3://{bucket}/{key}"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert [(f.name, f.ds, f.version) for f in files] == [
        (name, "2022-04-29", head["ETag"].strip('"'))
    ]
    assert landing_.warn_unread() == [f"s3://{bucket}/{partition}/part-1.csv.7z"]
    staged, unreadable = _stage(landing_, files, tmp_path)
    assert unreadable == {}
    result = staged["interactions", "2022-04-29"]
    assert (result["rows"], result["malformed"]) == (2, 1)
    rows = duckdb.sql(
        f"SELECT _file, _line, _raw FROM '{result['path']}' ORDER BY _line"
    ).fetchall()
    assert rows == [(name, 2, "2022-04-29,e1,p,s1,0,1"), (name, 3, "bad,row")]
