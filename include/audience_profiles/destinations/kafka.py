"""``kafka``: profile events into a Kafka topic through an idempotent confluent-kafka producer.

pipeline.yml::

    - name: profile_topic
      kind: kafka
      conn_id: kafka_default       # Airflow connection; its extra is the producer config
      topic: audience-profiles
      tables: [profile_merges, audience_profiles, audience_profile_interactions]

The connection's extra is the librdkafka producer configuration, as the Apache Kafka provider
reads it (``{"bootstrap.servers": "broker:9092", "security.protocol": "SASL_SSL", ...}``), so
credentials stay in the connection. The producer is always idempotent with ``acks=all``:
librdkafka retries inside ``delivery.timeout.ms`` without duplicates or reordering within a
partition. The message key is the profile_id (one profile, one partition); headers carry
record_id, event_type, as_of and schema_version.

Every delivery report is checked: the first error stops producing, everything queued is flushed,
and the task fails naming each record_id that was not delivered. Messages are tracked by their
position in the run, not by record_id, so no two messages can ever be mistaken for one.

A retry goes on after what an earlier attempt got confirmed (``streams.DeliveryCheckpoint``):
delivery reports come back out of order across partitions, so what is kept per table is the
longest run of records from its start that were all confirmed; confirmed records after the
first unconfirmed one are sent again.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk import BaseHook
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from audience_profiles.config import ConfigError, DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import (
    DeliveryReport,
    Destination,
    ErasureRequest,
    RunInfo,
    register,
)
from audience_profiles.destinations.streams import (
    PROFILE_ERASED,
    SCHEMA_VERSION,
    DeliveryCheckpoint,
    RecordTooLargeError,
    StreamRecord,
    UndeliveredRecordsError,
    erased_records,
    erased_statuses,
    run_records,
    stream_tables,
)

log = logging.getLogger(__name__)

# Delivery guarantees we rely on; they override whatever the connection sets.
REQUIRED_PRODUCER_CONFIG = {"enable.idempotence": True, "acks": "all"}
# How often (in messages) a delivery's checkpoint is brought up to date.
SAVE_EVERY = 10_000
# librdkafka reports every message within delivery.timeout.ms (default 300 s); wait a bit longer.
DEFAULT_FLUSH_TIMEOUT_SECONDS = 330.0


@register("kafka")
class KafkaDestination(Destination):
    OPTIONS = frozenset({"topic", "flush_timeout_seconds"})
    REQUIRED_OPTIONS = frozenset({"topic"})
    STREAMED = True

    def __init__(self, config: DestinationConfig, pipeline: PipelineConfig):
        super().__init__(config, pipeline)
        self.tables = stream_tables(config, pipeline)
        self.topic = str(config.options["topic"])
        self.conn_id = config.conn_id or "kafka_default"
        self.flush_timeout = float(
            config.options.get("flush_timeout_seconds", DEFAULT_FLUSH_TIMEOUT_SECONDS)
        )

    @property
    def target(self) -> str:
        return f"Kafka topic {self.topic!r}"

    def producer_config(self) -> dict[str, Any]:
        extra = BaseHook.get_connection(self.conn_id).extra_dejson
        if not extra.get("bootstrap.servers"):
            raise ConfigError(
                f"connection {self.conn_id!r} (destination {self.name!r}): its extra must hold "
                "the producer config, with at least bootstrap.servers"
            )
        return {**extra, **REQUIRED_PRODUCER_CONFIG}

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        report = self.report()
        checkpoint, streams = run_records(self, run, tables)
        report.rows = self._produce_all(streams, checkpoint)
        report.details = {"target": self.target}
        if checkpoint.resumed:
            report.details["resumed_after"] = checkpoint.resumed
        checkpoint.remove()
        return report

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        """Send a ``profile_erased`` record per erased profile (consumers delete theirs)."""
        self._produce_all([(PROFILE_ERASED, erased_records(requests))])
        return erased_statuses(requests, self.target)

    def _produce_all(
        self,
        streams: Iterable[tuple[str, Iterable[StreamRecord]]],
        checkpoint: DeliveryCheckpoint | None = None,
    ) -> dict[str, int]:
        """Produce every record, checking every delivery report; records delivered per stream
        (with ``checkpoint``: skipping, and counting, what an earlier attempt got confirmed)."""
        producer = Producer(self.producer_config(), logger=log)
        # Keyed by each message's number in this call, not by record_id: two messages with one id
        # (a caller's duplicate records) must not hide each other's missing delivery report.
        outstanding: dict[int, str] = {}  # produced, no delivery report yet -> record_id
        errors: dict[int, tuple[str, str]] = {}  # -> (record_id, error name)
        confirmed = _ConfirmedPrefix()

        def on_delivery(number: int, err: KafkaError | None, _msg: Message) -> None:
            record_id = outstanding.pop(number)
            if err is not None:
                errors[number] = (record_id, err.name())
            else:
                confirmed.add(number)

        number = 0  # the next message's
        # Per stream: (records an earlier attempt confirmed, the number of its first message).
        starts: dict[str, tuple[int, int]] = {}
        rows: dict[str, int] = {}

        def save(write: bool = False) -> None:
            for name, (skipped, first) in starts.items():
                done = min(max(confirmed.below - first, 0), rows[name] - skipped)
                checkpoint.confirm(name, skipped + done, write=write)

        try:
            for name, records in streams:
                if errors:
                    break
                skipped = checkpoint.sent(name) if checkpoint else 0
                starts[name] = (skipped, number)
                rows[name] = skipped
                for record in itertools.islice(records, skipped, None):
                    if errors:
                        break  # the cluster is refusing records: stop and report, do not pile on
                    outstanding[number] = record.record_id
                    self._produce(producer, record, functools.partial(on_delivery, number))
                    number += 1
                    rows[name] += 1
                    if checkpoint and number % SAVE_EVERY == 0:
                        save()  # written when FLUSH_SECONDS have passed
        finally:
            # Deliver (or time out) everything queued, also when producing stopped early.
            producer.flush(self.flush_timeout)
            if checkpoint:
                save(write=True)
        if errors or outstanding:
            causes = Counter(error for _, error in errors.values())
            if outstanding:
                causes["no delivery report within flush_timeout_seconds"] = len(outstanding)
            raise UndeliveredRecordsError(
                self.target,
                [record_id for record_id, _ in errors.values()] + list(outstanding.values()),
                causes,
                "after the producer's retries",
            )
        return rows

    def _produce(self, producer: Producer, record: StreamRecord, on_delivery) -> None:
        while True:
            try:
                producer.produce(
                    self.topic,
                    key=record.profile_id.encode("utf-8"),
                    value=record.encode(),
                    headers=[
                        ("record_id", record.record_id),
                        ("event_type", record.event_type),
                        ("as_of", record.as_of),
                        ("schema_version", str(SCHEMA_VERSION)),
                    ],
                    on_delivery=on_delivery,
                )
            except BufferError:
                producer.poll(0.5)  # local queue full: serve delivery reports to make room
                continue
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLargeError(
                        f"record {record.record_id} ({record.event_type}, profile_id "
                        f"{record.profile_id!r}) is larger than the producer's message.max.bytes"
                    ) from exc
                raise
            producer.poll(0)  # serve delivery reports as we go
            return


class _ConfirmedPrefix:
    """Message numbers 0, 1, 2, ... confirmed out of order: ``below`` is the first one not (yet)
    confirmed, so every number under it was."""

    def __init__(self) -> None:
        self.below = 0
        self._ahead: set[int] = set()  # confirmed, above a gap

    def add(self, number: int) -> None:
        self._ahead.add(number)
        while self.below in self._ahead:
            self._ahead.remove(self.below)
            self.below += 1
