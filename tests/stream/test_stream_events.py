"""Which asset events a stream run reads: all the landing events stored since its earliest
triggering one, because Airflow's scheduler gives the events that arrive while a run is queued to
no run at all (see ``stream.landing_event_extras``); and the S3 notifications their SQS
messages carry (``stream.s3_records``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from urllib.parse import unquote_plus

from airflow.sdk import Asset

from audience_profiles.stream import Landing, landing_event_extras, s3_records

LANDED = Asset(name="audience_profiles_landing", uri="audience-profiles://landing")
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


@dataclass
class Event:
    """The fields of the SDK's asset event results the stream reads."""

    timestamp: dt.datetime
    extra: dict


class StoredEvents:
    """The asset's stored events, read like the SDK's ``InletEventsAccessor``."""

    def __init__(self, events: list[Event]):
        self.events = events
        self.asked_after: list[str] = []

    def after(self, after: str) -> list[Event]:
        self.asked_after.append(after)
        return [e for e in self.events if e.timestamp >= dt.datetime.fromisoformat(after)]


def event(seconds: float) -> Event:
    return Event(T0 + dt.timedelta(seconds=seconds), {"payload": {"message_batch": [seconds]}})


def test_a_run_reads_the_events_the_scheduler_left_out_of_every_run():
    # Run 1 was created for the event at 1 s; the events at 2 s and 3 s were stored while it was
    # queued (a burst): the scheduler gave them to no run. Run 2 was queued by the event at 9 s.
    stored = [event(s) for s in (0, 1, 2, 3, 9, 10)]
    inlet = StoredEvents(stored)
    context = {
        "triggering_asset_events": {LANDED: [stored[4]]},
        "inlet_events": {LANDED: inlet},
    }

    extras = landing_event_extras(context, LANDED)

    assert extras == [e.extra for e in stored[4:]]
    assert inlet.asked_after == [stored[4].timestamp.isoformat()]

    # Run 1 itself read everything since its earliest triggering event: the burst included.
    context["triggering_asset_events"] = {LANDED: [stored[0], stored[1]]}
    assert landing_event_extras(context, LANDED) == [e.extra for e in stored]


def test_a_scheduled_run_has_no_events_and_reconciles():
    context = {"triggering_asset_events": {}, "inlet_events": {LANDED: StoredEvents([event(0)])}}
    assert landing_event_extras(context, LANDED) is None


def s3_notification(*keys: str, event_name: str = "ObjectCreated:Put") -> str:
    """An S3 event notification's JSON, as S3 sends it to SQS (the fields the stream reads)."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": event_name,
                    "eventTime": "2024-05-01T12:00:00.000Z",
                    "s3": {"bucket": {"name": "landing"}, "object": {"key": key, "eTag": "e"}},
                }
                for key in keys
            ]
        }
    )


def sns_envelope(message: str) -> str:
    """An SNS notification delivered to SQS: the S3 notification is its ``Message`` string."""
    return json.dumps(
        {"Type": "Notification", "TopicArn": "arn:aws:sns:x:1:landed", "Message": message}
    )


def test_a_message_that_is_not_json_is_skipped_naming_it_and_the_others_are_used(caplog):
    """Something else writing to the queue (or to the SNS topic before it) must not fail the run
    and lose the batch's other notifications: the message is skipped, its id logged."""
    messages = [
        {"MessageId": "m-plain", "Body": s3_notification("interactions/date=2024-05-01/a.csv")},
        {"MessageId": "m-not-json", "Body": "hello from the console"},
        {"MessageId": "m-sns", "Body": sns_envelope(s3_notification("form_entries/x/b.csv"))},
        {"MessageId": "m-sns-not-json", "Body": sns_envelope("a plain SNS message")},
        {
            "MessageId": "m-removed",
            "Body": s3_notification("c.csv", event_name="ObjectRemoved:Delete"),
        },
    ]
    extras = [
        {"from_trigger": True, "payload": {"message_batch": messages[:2]}},
        {"from_trigger": True, "payload": {"message_batch": messages[2:]}},
    ]

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        records = s3_records(extras)

    assert [r["s3"]["object"]["key"] for r in records] == [
        "interactions/date=2024-05-01/a.csv",
        "form_entries/x/b.csv",
    ]
    skipped = [r.getMessage() for r in caplog.records]
    assert skipped == [
        "skipping an SQS message that is not a JSON object: m-not-json",
        "skipping an SQS message that is not a JSON object: m-sns-not-json",
    ]


def test_a_message_that_is_json_but_not_an_object_is_skipped_too(caplog):
    """A list, a string or a number, in the Body or as the SNS Message (published from the
    console, say), raised AttributeError out of s3_records: the run failed, and the files the
    other notifications of its events announced waited for the reconciliation listing."""
    bodies = {
        "m-list": "[]",
        "m-string": '"hello"',
        "m-number": "42",
        "m-sns-string": sns_envelope('"hello"'),
        "m-sns-list": sns_envelope("[1]"),
        "m-sns-number": sns_envelope("42"),
    }
    messages = [{"MessageId": m, "Body": body} for m, body in bodies.items()]
    messages.append({"MessageId": "m-plain", "Body": s3_notification("a.csv")})

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        records = s3_records([{"from_trigger": True, "payload": {"message_batch": messages}}])

    assert [r["s3"]["object"]["key"] for r in records] == ["a.csv"]
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in caplog.records] == list(bodies)


def test_a_message_whose_records_are_not_s3_event_records_is_skipped_naming_it(caplog):
    """A JSON object with a Records key that S3 did not write (Records a dict or a string, a
    record without its bucket, key or time) raised out of s3_records or from_s3_record: the run
    failed and the other notifications of its events waited for the reconciliation listing."""
    good = json.loads(s3_notification("a.csv"))["Records"][0]

    def without(*path: str) -> dict:
        record = json.loads(json.dumps(good))
        *parents, leaf = path
        node = record
        for name in parents:
            node = node[name]
        del node[leaf]
        return record

    malformed = {
        "m-records-dict": {"Records": {"eventName": "ObjectCreated:Put"}},
        "m-records-string": {"Records": "ObjectCreated:Put"},
        "m-record-string": {"Records": ["ObjectCreated:Put"]},
        "m-no-event-name": {"Records": [without("eventName")]},
        "m-no-s3": {"Records": [without("s3")]},
        "m-no-bucket": {"Records": [without("s3", "bucket")]},
        "m-no-key": {"Records": [without("s3", "object", "key")]},
        "m-no-time": {"Records": [without("eventTime")]},
        "m-bad-time": {"Records": [{**good, "eventTime": "yesterday"}]},
        "m-sns-records-list-of-numbers": None,
    }
    messages = [{"MessageId": m, "Body": json.dumps(body)} for m, body in malformed.items() if body]
    messages.append(
        {"MessageId": "m-sns-records-list-of-numbers", "Body": sns_envelope('{"Records": [1]}')}
    )
    messages.insert(3, {"MessageId": "m-plain", "Body": s3_notification("b.csv")})

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        records = s3_records([{"from_trigger": True, "payload": {"message_batch": messages}}])

    assert [r["s3"]["object"]["key"] for r in records] == ["b.csv"]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping an SQS message whose Records are not S3 event records: {m}" for m in malformed
    ]


def test_a_message_without_records_is_skipped_with_a_warning_unless_it_is_s3s_test_event(caplog):
    """S3's s3:TestEvent (sent when notifications are set up) is skipped quietly; any other
    object without Records (another sender's) was skipped with no word, so a queue wired to the
    wrong source streamed nothing and said nothing."""
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "landing"}
    messages = [
        {"MessageId": "m-test", "Body": json.dumps(test_event)},
        {"MessageId": "m-other", "Body": json.dumps({"detail-type": "Order Placed"})},
        {"MessageId": "m-empty", "Body": "{}"},
        {"MessageId": "m-plain", "Body": s3_notification("b.csv")},
    ]

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        records = s3_records([{"from_trigger": True, "payload": {"message_batch": messages}}])

    assert [r["s3"]["object"]["key"] for r in records] == ["b.csv"]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping an SQS message that holds no S3 event notification: {m}"
        for m in ("m-other", "m-empty")
    ]


def eventbridge_event(key: str, detail_type: str = "Object Created", **envelope) -> str:
    """An S3 event as an EventBridge rule sends it to SQS (AWS's documented example, trimmed):
    the key as it is, not form-encoded; ``etag``; the envelope's ``time`` to the second."""
    return json.dumps(
        {
            "version": "0",
            "detail-type": detail_type,
            "source": "aws.s3",
            "time": "2024-05-01T12:00:00Z",
            "resources": ["arn:aws:s3:::landing"],
            "detail": {
                "version": "0",
                "bucket": {"name": "landing"},
                "object": {"key": key, "size": 5, "etag": "b1946ac9", "sequencer": "617f"},
                "reason": "PutObject",
            },
            **envelope,
        }
    )


def test_an_s3_event_sent_through_eventbridge_is_read_as_its_record(caplog):
    """S3 events routed to the queue by an EventBridge rule were skipped (another shape), so
    such a set-up streamed only what the reconciliation listing found. Now an Object Created
    event is the record it stands for; other S3 events are skipped (as a notification's other
    records are), and broken ones with a warning naming them."""
    key = "landing/interactions/date=2024-05-01/part 1:a+b.csv"
    messages = [
        {"MessageId": "m-created", "Body": eventbridge_event(key)},
        {"MessageId": "m-moto", "Body": eventbridge_event("b.csv", time=1714564800.5)},
        {"MessageId": "m-deleted", "Body": eventbridge_event("c.csv", "Object Deleted")},
        {"MessageId": "m-no-time", "Body": eventbridge_event("d.csv", time=None)},
        {"MessageId": "m-far-time", "Body": eventbridge_event("e.csv", time=1e20)},
    ]

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        records = s3_records([{"from_trigger": True, "payload": {"message_batch": messages}}])

    assert [unquote_plus(r["s3"]["object"]["key"]) for r in records] == [key, "b.csv"]
    assert [r["eventTime"] for r in records] == [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.500000Z",
    ]
    assert records[0]["eventName"] == "ObjectCreated:PutObject"
    assert records[0]["s3"]["object"]["eTag"] == "b1946ac9"
    landed = Landing("s3://landing/landing", None).from_s3_record(records[0])
    assert landed.name == f"s3://landing/{key}" and landed.source == "interactions"
    assert landed.ds == "2024-05-01" and landed.modified == dt.datetime(2024, 5, 1, 12)
    assert [r.getMessage() for r in caplog.records] == [
        "skipping an SQS message whose S3 Object Created event (EventBridge) has no bucket, key "
        f"or time: {m}"
        for m in ("m-no-time", "m-far-time")
    ]
