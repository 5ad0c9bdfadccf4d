"""
# audience_profiles_stream

Near-real-time profile events: every few seconds, the files that landed since the last
micro-batch are validated, resolved against the current identities and emitted to the stream
destinations of `pipeline.yml` (kinds kinesis, firehose, kafka) as `interaction`,
`profile_upsert` and `profile_merge` records. The daily `audience_profiles` DAG stays the source
of truth; this one gets the news out in seconds.

```
process_landed_files   (one task: stage + validate -> resolve -> emit -> commit watermark)
```

- **S3 landing**: set `AUDIENCE_PROFILES_STREAM_SQS_QUEUE_URL` to an SQS queue fed by the landing
  bucket's object-created notifications (S3's own, or its events sent on by an EventBridge
  rule: docs/streams.md). An asset watcher (MessageQueueTrigger) starts a run per
  batch of messages; each run takes every landing event stored since its earliest triggering one
  (Airflow hands some events to no run: see `stream.landing_event_extras`); a reconciliation run every `AUDIENCE_PROFILES_STREAM_RECONCILE_SECONDS`
  (300) lists the landing root past the watermark, because the trigger deletes messages before a
  run exists: a lost message delays a file, it never loses it.
- **Local landing folder** (no queue URL): a reconciliation run every
  `AUDIENCE_PROFILES_STREAM_POLL_SECONDS` (60).
- `AUDIENCE_PROFILES_STREAM_AWS_CONN_ID` (aws_default): the connection the trigger polls with.

Delivery is at-least-once with stable `record_id`s: the ledger and watermarks are committed only
after every destination took the batch, so a crash re-emits the same records. Paused on creation:
unpause it where stream destinations are configured. The task takes the warehouse pool (DuckDB
has one writer). Docs: `docs/streams.md`.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    DeltaTriggerTimetable,
    dag,
    get_current_context,
    get_parsing_context,
    task,
)

from audience_profiles.dag_defaults import DEFAULT_ARGS, WAREHOUSE_POOL, Tag, fails_fast

# From the environment, never from pipeline.yml or a hook: parsing a DAG file must do no I/O.
SQS_QUEUE_URL = os.environ.get("AUDIENCE_PROFILES_STREAM_SQS_QUEUE_URL", "")
AWS_CONN_ID = os.environ.get("AUDIENCE_PROFILES_STREAM_AWS_CONN_ID", "aws_default")
POLL_SECONDS = int(os.environ.get("AUDIENCE_PROFILES_STREAM_POLL_SECONDS", "60"))
RECONCILE_SECONDS = int(os.environ.get("AUDIENCE_PROFILES_STREAM_RECONCILE_SECONDS", "300"))
LANDING_ASSET = "audience_profiles_landing"
LANDING_URI = "audience-profiles://landing"


def _landing_asset() -> Asset | None:
    """The asset the SQS watcher feeds; None without a queue (local landing)."""
    if not SQS_QUEUE_URL:
        return None
    if get_parsing_context().task_id:
        # A worker parsing this file to run the task needs the asset only as its inlet, and
        # importing the trigger loads every message-queue provider: seconds off each micro-batch.
        return Asset(name=LANDING_ASSET, uri=LANDING_URI)
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(
        scheme="sqs",
        sqs_queue=SQS_QUEUE_URL,
        aws_conn_id=AWS_CONN_ID,
        max_messages=10,
        wait_time_seconds=20,  # long polling: a message is seen as soon as it arrives
        waiter_delay=0,  # the default (60 s) would sleep after every empty poll
    )
    return Asset(
        name=LANDING_ASSET,
        uri=LANDING_URI,
        watchers=[AssetWatcher(name="landing_sqs", trigger=trigger)],
    )


LANDED = _landing_asset()


def _schedule():
    if LANDED is None:
        return DeltaTriggerTimetable(dt.timedelta(seconds=POLL_SECONDS))
    return AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(dt.timedelta(seconds=RECONCILE_SECONDS)), assets=LANDED
    )


@dag(
    dag_id="audience_profiles_stream",
    schedule=_schedule(),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # batches in order; the warehouse pool serialises them with the daily DAG
    is_paused_upon_creation=True,
    default_args=DEFAULT_ARGS,
    tags=[Tag.AUDIENCE_PROFILES, Tag.STREAM],
    doc_md=__doc__,
)
def audience_profiles_stream():
    @task(
        pool=WAREHOUSE_POOL,
        retry_delay=dt.timedelta(seconds=2),  # latency matters more here than in the daily build
        execution_timeout=dt.timedelta(minutes=15),
        inlets=[LANDED] if LANDED else [],  # read back: the events this run must look at
    )
    @fails_fast  # a mistake in pipeline.yml's stream section fails at once
    def process_landed_files() -> dict:
        from audience_profiles.stream import landing_event_extras, run_batch, s3_records

        context = get_current_context()
        extras = landing_event_extras(context, LANDED) if LANDED else None
        # A run started by the schedule has no events: it reconciles by listing.
        records = s3_records(extras) if extras is not None else None
        return run_batch(run_id=str(context["run_id"]), records=records)

    process_landed_files()


audience_profiles_stream()
