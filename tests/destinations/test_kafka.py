"""Kafka destination against librdkafka's mock cluster (3 brokers, own process), read back by a
consumer in a third process."""

from __future__ import annotations

import functools
import json
import uuid
from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.kafka import KafkaDestination
from audience_profiles.destinations.streams import (
    RecordTooLargeError,
    UndeliveredRecordsError,
    erased_records,
    records_from_export,
)
from tests.destinations.stream_support import (
    RUN,
    record_ids,
    stream_destination,
    write_exports,
)
from tests.services._proc import free_port
from tests.services.kafka_mock import consume

pytestmark = pytest.mark.services

TABLES = ["profile_merges", "audience_profiles", "audience_profile_interactions"]


def kafka_conn(monkeypatch, producer_config: dict) -> str:
    """An Airflow connection whose extra is the producer config, as the Kafka provider keeps it."""
    conn_id = f"kafka_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "kafka", "extra": producer_config}),
    )
    return conn_id


def destination(conn_id: str, topic: str, **options):
    return stream_destination(
        {
            "name": "profile_topic",
            "kind": "kafka",
            "conn_id": conn_id,
            "topic": topic,
            "tables": TABLES,
            **options,
        }
    )


def test_every_record_arrives_keyed_by_profile(kafka_mock_cluster, monkeypatch, tmp_path):
    # 3 interactions twice: identical rows, distinct records (each must arrive, under its own id)
    exports = write_exports(
        tmp_path, profiles=30, interactions=90, merges=4, repeated_interactions=3
    )
    expected = {r.record_id: r for t in TABLES for r in records_from_export(t, exports[t], RUN.ds)}
    # The mock cluster has no CreateTopics; it creates a topic (4 partitions) on first use.
    topic = f"profiles-{uuid.uuid4().hex[:8]}"
    conn_id = kafka_conn(monkeypatch, {"bootstrap.servers": kafka_mock_cluster})

    report = destination(conn_id, topic).deliver(RUN, exports)

    messages = consume(kafka_mock_cluster, topic, count=len(expected))
    assert not [m for m in messages if "unexpected" in m]  # nothing beyond the run's records
    ids = [m["value"]["record_id"] for m in messages]
    assert len(ids) == 127 and set(ids) == set(expected)
    partitions_by_key = defaultdict(set)
    for m in messages:
        record = expected[m["value"]["record_id"]]
        assert m["key"] == record.profile_id == m["value"]["profile_id"]
        assert m["headers"] == {
            "record_id": record.record_id,
            "event_type": record.event_type,
            "as_of": RUN.ds,
            "schema_version": "1",
        }
        assert m["value"]["as_of"] == RUN.ds
        assert m["value"]["payload"] == record.payload
        partitions_by_key[m["key"]].add(m["partition"])
    assert all(len(p) == 1 for p in partitions_by_key.values())  # one profile, one partition
    assert len({m["partition"] for m in messages}) > 1
    assert Counter(m["value"]["event_type"] for m in messages) == {
        "interaction": 93,
        "profile_upsert": 30,
        "profile_merge": 4,
    }
    assert report.rows == {
        "profile_merges": 4,
        "audience_profiles": 30,
        "audience_profile_interactions": 93,
    }


def test_undelivered_records_fail_the_task_naming_them(monkeypatch, tmp_path):
    """No broker answers: librdkafka gives up after message.timeout.ms and reports each message."""
    exports = write_exports(tmp_path, profiles=4, interactions=0, merges=0)
    expected = record_ids(exports, "audience_profiles")
    nobody = f"127.0.0.1:{free_port()}"
    # 3 s: at 1 s, a stall while the four were produced could leave some unproduced (the
    # destination stops producing at the first delivery error)
    conn_id = kafka_conn(monkeypatch, {"bootstrap.servers": nobody, "message.timeout.ms": 3000})
    dest = destination(conn_id, "profiles", tables=["audience_profiles"])

    with pytest.raises(UndeliveredRecordsError) as exc:
        dest.deliver(RUN, exports)

    assert sorted(exc.value.record_ids) == sorted(expected)
    message = str(exc.value)
    assert "4 record(s) not delivered to Kafka topic 'profiles'" in message
    assert "_MSG_TIMED_OUT x4" in message and all(rid in message for rid in expected)


def test_the_connection_must_name_the_brokers(monkeypatch, tmp_path):
    conn_id = kafka_conn(monkeypatch, {"linger.ms": 5})
    with pytest.raises(ValueError, match="at least bootstrap.servers"):
        destination(conn_id, "profiles").deliver(RUN, write_exports(tmp_path))


def test_erasure_sends_one_profile_erased_record_per_profile(kafka_mock_cluster, monkeypatch):
    topic = f"erasures-{uuid.uuid4().hex[:8]}"
    conn_id = kafka_conn(monkeypatch, {"bootstrap.servers": kafka_mock_cluster})
    requests = [
        ErasureRequest("r-1", "2024-05-02 10:00:00", ("p-1", "p-2"), (("email", "a@b.com"),)),
        ErasureRequest("r-2", "2024-05-02 11:00:00", (), (("email", "nobody@b.com"),)),
    ]

    statuses = destination(conn_id, topic).erase(requests)
    destination(conn_id, topic).erase(requests[:1])  # a retried erasure: same record ids

    assert statuses == {
        "r-1": {
            "status": "done",
            "detail": f"2 profile_erased record(s) sent to Kafka topic {topic!r}",
        },
        "r-2": {
            "status": "done",
            "detail": f"0 profile_erased record(s) sent to Kafka topic {topic!r}",
        },
    }
    messages = consume(kafka_mock_cluster, topic, count=4)
    assert len(messages) == 4 and not [m for m in messages if "unexpected" in m]
    values = [m["value"] for m in messages]
    assert {(v["event_type"], v["profile_id"]) for v in values} == {
        ("profile_erased", "p-1"),
        ("profile_erased", "p-2"),
    }
    assert {m["key"] for m in messages} == {"p-1", "p-2"}
    assert len({v["record_id"] for v in values}) == 2  # each sent twice, same id
    assert values[0]["payload"] == {
        "profile_id": values[0]["profile_id"],
        "request_id": "r-1",
        "requested_at": "2024-05-02 10:00:00",
    }
    assert "a@b.com" not in json.dumps(values)


def test_a_retry_goes_on_after_the_records_an_earlier_attempt_got_confirmed(
    kafka_mock_cluster, monkeypatch, tmp_path
):
    """One record's delivery report is an error: the attempt fails, keeping a checkpoint of what
    came back confirmed from the start of each table, and the task's retry sends only the rest
    (it used to send the whole run again). A completed delivery removes the checkpoint."""
    exports = write_exports(tmp_path, profiles=30, interactions=90, merges=4)
    interactions = record_ids(exports, "audience_profile_interactions")
    failing = {interactions[9]}
    produced: list[str] = []
    produce = KafkaDestination._produce

    def produce_reporting_a_failure(self, producer, record, on_delivery):
        # The message really goes to the cluster; its delivery report is turned into an error.
        produced.append(record.record_id)
        if record.record_id in failing:
            on_delivery = functools.partial(
                lambda report, _err, msg: report(KafkaError(KafkaError._MSG_TIMED_OUT), msg),
                on_delivery,
            )
        produce(self, producer, record, on_delivery)

    monkeypatch.setattr(KafkaDestination, "_produce", produce_reporting_a_failure)
    topic = f"profiles-{uuid.uuid4().hex[:8]}"
    dest = destination(kafka_conn(monkeypatch, {"bootstrap.servers": kafka_mock_cluster}), topic)

    with pytest.raises(UndeliveredRecordsError) as failed:
        dest.deliver(RUN, exports)
    assert failed.value.record_ids == [interactions[9]]
    checkpoint = tmp_path / ".delivery-profile_topic.json"
    saved = json.loads(checkpoint.read_text())["tables"]
    assert {t: entry["sent"] for t, entry in saved.items()} == {
        "profile_merges": 4,
        "audience_profiles": 30,
        "audience_profile_interactions": 9,  # the records before the one that failed
    }

    first_attempt = len(produced)
    failing.clear()
    report = dest.deliver(RUN, exports)

    assert produced[first_attempt:] == interactions[9:]
    assert report.details["resumed_after"] == {
        "profile_merges": 4,
        "audience_profiles": 30,
        "audience_profile_interactions": 9,
    }
    assert report.rows == {
        "profile_merges": 4,
        "audience_profiles": 30,
        "audience_profile_interactions": 90,
    }
    assert not checkpoint.exists()
    messages = consume(kafka_mock_cluster, topic, count=len(produced))
    ids = Counter(m["value"]["record_id"] for m in messages)
    expected = {r.record_id for t in TABLES for r in records_from_export(t, exports[t], RUN.ds)}
    assert set(ids) == expected and sum(ids.values()) == len(produced)


class _StubProducer:
    """Refuses its first ``full`` produce calls with BufferError (the local queue is full), or
    every call with ``error``; records what it took."""

    def __init__(self, full: int = 0, error: KafkaException | None = None):
        self.full, self.error = full, error
        self.produced: list[bytes] = []
        self.polls: list[float] = []

    def produce(self, topic, key, value, headers, on_delivery):
        if self.error:
            raise self.error
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.produced.append(value)

    def poll(self, timeout):
        self.polls.append(timeout)


def _one_record():
    request = ErasureRequest(request_id="r1", requested_at="2024-05-01", profile_ids=("p1",))
    return next(erased_records([request], "2024-05-01T10:00:00+00:00"))


def test_a_full_local_queue_waits_and_produces_the_same_record_once():
    stub, record = _StubProducer(full=2), _one_record()
    KafkaDestination._produce(SimpleNamespace(topic="t"), stub, record, lambda *_: None)
    assert stub.produced == [record.encode()]  # not skipped, not doubled
    assert stub.polls == [0.5, 0.5, 0]


def test_a_record_over_the_message_size_limit_fails_naming_it():
    stub = _StubProducer(error=KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    record = _one_record()
    with pytest.raises(RecordTooLargeError, match=record.record_id):
        KafkaDestination._produce(SimpleNamespace(topic="t"), stub, record, lambda *_: None)
    other = _StubProducer(error=KafkaException(KafkaError(KafkaError._TRANSPORT)))
    with pytest.raises(KafkaException):
        KafkaDestination._produce(SimpleNamespace(topic="t"), other, record, lambda *_: None)
