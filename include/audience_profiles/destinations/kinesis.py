"""``kinesis``: profile events into an Amazon Kinesis data stream, PutRecords in batches.

pipeline.yml::

    - name: profile_stream
      kind: kinesis
      conn_id: aws_default         # Airflow AWS connection
      stream_name: audience-profiles
      max_attempts: 8              # per batch, re-sending only the entries that failed
      tables: [profile_merges, audience_profiles, audience_profile_interactions]

Each call stays within PutRecords' limits: 500 records, 5 MiB, 1 MiB per record, all counting the
partition key (the profile_id, so all events of one profile go to one shard).
Entries that fail (``FailedRecordCount`` > 0, e.g. ProvisionedThroughputExceededException) and
calls throttled as a whole are retried alone, with backoff and jitter (streams.send_with_retries).
"""

from __future__ import annotations

import functools

from airflow.providers.amazon.aws.hooks.kinesis import KinesisHook

from audience_profiles.config import DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import register
from audience_profiles.destinations.streams import (
    MIB,
    BatchedStreamDestination,
    BatchLimits,
    Entry,
    SendBatch,
    aws_batch_failures,
)

PUT_RECORDS_LIMITS = BatchLimits(
    call="Kinesis PutRecords",
    max_records=500,
    max_batch_bytes=5 * MIB,
    max_record_bytes=1 * MIB,
    key_counts=True,
)
# Whole-call errors that clear with time; anything else (missing stream, access denied) fails now.
RETRYABLE_CALL_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


@register("kinesis")
class KinesisDestination(BatchedStreamDestination):
    # stream_name here; the retry keys: streams.RetryPolicy.from_options
    OPTIONS = frozenset({"stream_name", "max_attempts", "retry_base_seconds", "retry_max_seconds"})
    REQUIRED_OPTIONS = frozenset({"stream_name"})
    limits = PUT_RECORDS_LIMITS

    def __init__(self, config: DestinationConfig, pipeline: PipelineConfig):
        super().__init__(config, pipeline)
        self.stream_name = str(config.options["stream_name"])

    @property
    def target(self) -> str:
        return f"Kinesis stream {self.stream_name!r}"

    @functools.cached_property
    def client(self):
        """One boto3 client for the sends and the describe (each client costs ~0.2 s)."""
        return KinesisHook(aws_conn_id=self.conn_id).get_conn()

    def describe_target(self) -> str:
        response = self.client.describe_stream_summary(StreamName=self.stream_name)
        summary = response["StreamDescriptionSummary"]
        return f"{summary['StreamARN']} {summary['StreamCreationTimestamp'].isoformat()}"

    def open_sender(self) -> SendBatch:
        client = self.client

        def send(batch: list[Entry]) -> list[tuple[Entry, str]]:
            return aws_batch_failures(
                batch,
                lambda: client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": entry.data, "PartitionKey": entry.key} for entry in batch],
                ),
                RETRYABLE_CALL_ERRORS,
                failed_count="FailedRecordCount",
                results="Records",
            )

        return send
