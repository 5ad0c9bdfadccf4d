"""``firehose``: profile events into an Amazon Data Firehose delivery stream, PutRecordBatch.

pipeline.yml::

    - name: profile_firehose
      kind: firehose
      conn_id: aws_default         # Airflow AWS connection
      delivery_stream: audience-profiles
      max_attempts: 8
      tables: [audience_profiles]

Each record is one JSON object ending in a newline, so the objects Firehose concatenates into S3
(or elsewhere) read as JSON Lines. Calls stay within 500 records, 4 MiB and 1,000 KiB per record;
failed entries (``FailedPutCount`` > 0) and throttled calls are retried alone, with backoff and
jitter (streams.send_with_retries).
"""

from __future__ import annotations

import functools

from airflow.providers.amazon.aws.hooks.firehose import FirehoseHook

from audience_profiles.config import DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import register
from audience_profiles.destinations.streams import (
    KIB,
    MIB,
    BatchedStreamDestination,
    BatchLimits,
    Entry,
    SendBatch,
    StreamRecord,
    aws_batch_failures,
)

PUT_RECORD_BATCH_LIMITS = BatchLimits(
    call="Firehose PutRecordBatch",
    max_records=500,
    max_batch_bytes=4 * MIB,
    max_record_bytes=1000 * KIB,
    key_counts=False,  # Firehose has no partition key
)
# Firehose answers ServiceUnavailableException when a stream's throughput is exceeded.
RETRYABLE_CALL_ERRORS = frozenset(
    {
        "ServiceUnavailableException",
        "ThrottlingException",
        "LimitExceededException",
        "InternalFailure",
    }
)


@register("firehose")
class FirehoseDestination(BatchedStreamDestination):
    # delivery_stream here; the retry keys: streams.RetryPolicy.from_options
    OPTIONS = frozenset(
        {"delivery_stream", "max_attempts", "retry_base_seconds", "retry_max_seconds"}
    )
    REQUIRED_OPTIONS = frozenset({"delivery_stream"})
    limits = PUT_RECORD_BATCH_LIMITS

    def __init__(self, config: DestinationConfig, pipeline: PipelineConfig):
        super().__init__(config, pipeline)
        self.delivery_stream = str(config.options["delivery_stream"])

    @property
    def target(self) -> str:
        return f"Firehose delivery stream {self.delivery_stream!r}"

    def encode(self, record: StreamRecord) -> bytes:
        return record.encode() + b"\n"

    @functools.cached_property
    def hook(self) -> FirehoseHook:
        """One hook (and boto3 client) for the sends and the describe."""
        return FirehoseHook(delivery_stream=self.delivery_stream, aws_conn_id=self.conn_id)

    def describe_target(self) -> str:
        description = self.hook.conn.describe_delivery_stream(
            DeliveryStreamName=self.delivery_stream
        )["DeliveryStreamDescription"]
        return f"{description['DeliveryStreamARN']} {description['CreateTimestamp'].isoformat()}"

    def open_sender(self) -> SendBatch:
        hook = self.hook

        def send(batch: list[Entry]) -> list[tuple[Entry, str]]:
            return aws_batch_failures(
                batch,
                lambda: hook.put_records([{"Data": entry.data} for entry in batch]),
                RETRYABLE_CALL_ERRORS,
                failed_count="FailedPutCount",
                results="RequestResponses",
            )

        return send
