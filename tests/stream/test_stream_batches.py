"""Micro-batches respect what the daily run respects: the suppression list while an erasure is
half done, retention, a file dated ahead of the clock, and an as_of that never goes down.

No moto: a fake stream destination captures the records (streams.records_from_export)."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import logging
import os
import time

import duckdb
import pytest
import zstandard

from audience_profiles import pipeline, stream
from audience_profiles.destinations.base import DeliveryReport
from audience_profiles.destinations.streams import records_from_export
from audience_profiles.landing import LandingError
from audience_profiles.privacy import erasure, hash_identifier
from audience_profiles.privacy.retention import apply_retention
from tests.stream.support import (
    TABLES,
    daily_build,
    form_row,
    query,
    write_forms,
    write_interactions,
)
from tests.support import (
    ELEMENT_HEADER,
    FORM_HEADER,
    IDENTITY_HEADER,
    INTERACTION_HEADER,
    SEED_SESSION,
    break_validation,
    write_config,
    write_csv,
    write_seed_example,
)

DAVID = "david.wilson@example.com"


class FakeStream:
    def __init__(self, config, sent: list[dict]):
        self.config = config
        self.sent = sent

    def deliver(self, run, tables):
        for table in TABLES:
            self.sent += [r.as_dict() for r in records_from_export(table, tables[table], run.ds)]
        return DeliveryReport(self.config.name, "kinesis", rows={})


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    records: list[dict] = []
    monkeypatch.setattr(stream, "destination_for", lambda d, config: FakeStream(d, records))
    return records


def make_config(root, **overrides):
    destination = {
        "name": "profile_stream",
        "kind": "kinesis",
        "conn_id": "aws_unused",
        "stream_name": "s",
        "tables": TABLES,
    }
    return write_config(root, destinations=[destination], **overrides)


def batch(config, sent, run_id):
    before = len(sent)
    summary = stream.run_batch(config, run_id=run_id)
    return summary, sent[before:]


def streaming(tmp_path, sent):
    """(config, landing root): the seed example built daily up to 2022-04-29, and a first batch
    run, so the stream's watermarks exist."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29"])
    batch(config, sent, "b0")
    return config, landing


def test_a_batch_between_resolve_and_removal_emits_nothing_of_a_suppressed_person(tmp_path, sent):
    config, landing = streaming(tmp_path, sent)
    (david_id,) = {
        p
        for (p,) in query(
            config, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{DAVID}'"
        )
    }
    write_csv(
        landing / "erasure_requests" / "r.csv",
        ["request_id", "identifier_type", "identifier_value", "requested_at", "type"],
        [["GDPR-1", "email", DAVID, "2022-04-30T00:00:00", "suppress"]],
    )
    erasure.resolve_requests(erasure.read_requests("2022-04-30", "e1", config), config)
    # before remove_from_warehouse: Eve fills in a form on the kiosk session David used
    write_forms(
        landing,
        "2022-04-30",
        "eve.csv",
        [form_row("2022-04-30T10:00:00", "Eve", "eve@x.org", SEED_SESSION)],
    )
    _, new = batch(config, sent, "b1")
    assert not [r for r in new if david_id in (r.get("profile_id"), *r["payload"].values())]
    assert not [r for r in new if DAVID in str(r) or "2022-01-11" in str(r["payload"])]
    # and the stream attached nothing to David's profile
    assert query(
        config, f"SELECT count(*) FROM stream_identifiers WHERE profile_id = '{david_id}'"
    ) == [(0,)]


def test_a_file_in_a_partition_past_retention_is_counted_not_loaded_or_emitted(tmp_path, sent):
    config = make_config(tmp_path, retention={"interactions_days": 30})
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-01-11", "2022-04-29", "2022-04-30"])
    apply_retention("2022-04-30", "ret", config)
    batch(config, sent, "b0")
    write_interactions(landing, "2022-01-12", "old.csv", [("2022-01-12", SEED_SESSION, 3)])
    summary, new = batch(config, sent, "b1")
    assert new == []
    assert summary["sources"]["interactions"] == {
        "files": 1,
        "read": 1,
        "quarantined": 0,
        "aged_out": 1,
    }
    assert query(config, "SELECT count(*) FROM interactions WHERE dt < DATE '2022-03-31'") == [(0,)]
    # taken (in the ledger), so it is not tried again
    assert batch(config, sent, "b2")[0]["files"] == 0


@pytest.mark.parametrize(
    ("lose", "where"),
    [
        # a row validation kept that then went missing from the table
        (
            {"sql": "DELETE FROM interactions WHERE _file LIKE '%b.csv' AND _line = 2;"},
            r"\(2 valid, 1 in interactions; 0 quarantined, 0 in quarantine\)$",
        ),
        # a row staged that validation never saw (lost before its per-file counts)
        (
            {"staged": "(SELECT * FROM {staged} WHERE _file NOT LIKE '%b.csv' OR _line <> 2)"},
            r"\(2 staged, 1 read by validation\)$",
        ),
    ],
    ids=["lost-after-validation", "lost-before-validation"],
)
def test_a_row_lost_in_a_batch_fails_it_naming_the_file(tmp_path, sent, monkeypatch, lose, where):
    """Read = kept + quarantined + aged out, in a batch as in a daily run: a validation that
    loses a row (the interactions' script changed) fails the batch, naming the file whose rows
    are not where validation counted them, and nothing is sent."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1)])
    write_interactions(landing, ds, "b.csv", [(ds, SEED_SESSION, 2), (ds, SEED_SESSION, 3)])
    break_validation(monkeypatch, "interactions", **lose)
    before = len(sent)
    with pytest.raises(
        pipeline.ReconciliationError,
        match=r"^stream batch, interactions 2022-04-30: read 3 row\(s\) but kept 2, .*; in 1 "
        r"file\(s\): \S+/b\.csv " + where,
    ):
        batch(config, sent, "b1")
    assert sent[before:] == []


def test_a_file_dated_ahead_of_the_clock_does_not_hide_later_files(tmp_path, sent):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    skewed = write_forms(
        landing,
        "2022-05-01",
        "skewed.csv",
        [form_row("2022-05-01T09:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    future = time.time() + 3600
    os.utime(skewed, (future, future))
    assert batch(config, sent, "b1")[0]["files"] == 1
    (mark,) = query(config, "SELECT max(watermark) FROM stream_watermarks")[0]
    assert mark <= stream._now()
    write_forms(
        landing,
        "2022-05-01",
        "normal.csv",
        [form_row("2022-05-01T10:00:00", "Bob", "bob@x.org", "s-bob")],
    )
    assert batch(config, sent, "b2")[0]["files"] == 1
    files = {f.rsplit("/", 1)[-1] for (f,) in query(config, "SELECT file FROM stream_files")}
    assert {"skewed.csv", "normal.csv"} <= files


def test_a_file_modified_at_the_watermark_is_taken_with_no_lookback(tmp_path, sent):
    """The watermark is the newest modification time a listing covered; a file landing after
    that listing with the same time (S3 keeps whole seconds, a file system a clock tick) is not
    covered by it. With ``lookback_seconds: 0`` it was never listed again: lost to the stream."""
    config = make_config(tmp_path, stream={"lookback_seconds": 0})
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    ds = "2022-05-01"
    first = write_forms(
        landing, ds, "a.csv", [form_row(f"{ds}T09:00:00", "Ann", "ann@x.org", "s-a")]
    )
    assert batch(config, sent, "b1")[0]["files"] == 1
    second = write_forms(
        landing, ds, "b.csv", [form_row(f"{ds}T09:00:01", "Bo", "bo@x.org", "s-b")]
    )
    tick = first.stat().st_mtime_ns
    os.utime(second, ns=(tick, tick))

    summary, new = batch(config, sent, "b2")

    assert summary["files"] == 1
    assert {r["payload"]["email"] for r in new if r["event_type"] == "profile_upsert"} == {
        "bo@x.org"
    }
    assert batch(config, sent, "b3")[0]["files"] == 0  # and once


def test_as_of_never_goes_down_for_a_late_file(tmp_path, sent):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_forms(
        landing,
        "2022-05-02",
        "ann.csv",
        [form_row("2022-05-02T09:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    _, first = batch(config, sent, "b1")
    assert {r["as_of"] for r in first} == {"2022-05-02"}
    write_interactions(landing, "2022-05-01", "late.csv", [("2022-05-01", "s-ann", 2)])
    _, late = batch(config, sent, "b2")
    upserts = [r for r in late if r["event_type"] == "profile_upsert"]
    assert upserts and {r["as_of"] for r in late} == {"2022-05-02"}
    assert upserts[0]["payload"]["interactions"] == 1


def test_as_of_is_never_before_the_latest_published_date(tmp_path, sent):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-01-11", "2022-04-29", "2022-04-30"])
    batch(config, sent, "b0")
    write_interactions(landing, "2022-04-29", "late.csv", [("2022-04-29", SEED_SESSION, 2)])
    _, new = batch(config, sent, "b1")
    assert new and {r["as_of"] for r in new} == {"2022-04-30"}


def test_a_daily_build_delivered_after_a_batch_does_not_roll_its_profiles_back(tmp_path, sent):
    """A late file of the date the daily DAG is building, streamed after the build read the
    warehouse: the build is delivered later and does not have it. With the same as_of, a
    consumer following docs/streams.md (apply on a tie) took the build's older state over the
    batch's, until the next day's build."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_forms(landing, ds, "ann.csv", [form_row(f"{ds}T09:00:00", "Ann", "ann@x.org", "s-ann")])
    write_interactions(landing, ds, "a.csv", [(ds, "s-ann", 1)])
    _, first = batch(config, sent, "b1")
    window = pipeline.RunWindow.for_date(ds)
    pipeline.validate(window, _extract(config, ds), config)
    pipeline.enrich(window, config)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    write_interactions(landing, ds, "late.csv", [(ds, "s-ann", 2)])
    _, late = batch(config, sent, "b2")  # between two tasks of the daily run: the pool is free
    pipeline.build_segments(window, config)
    pipeline.check_quality(window, config)
    tables = pipeline.publish(window, config)
    daily = [r.as_dict() for r in records_from_export("audience_profiles", tables["audience_profiles"], ds)]  # fmt: skip

    held: dict[str, dict] = {}  # the consumer rule of docs/streams.md, "State and as_of"
    for record in [*first, *late, *daily]:
        kept = held.get(record["profile_id"])
        if record["event_type"] == "profile_upsert" and (
            kept is None or record["as_of"] >= kept["as_of"]
        ):
            held[record["profile_id"]] = record
    (ann,) = [r for r in held.values() if r["payload"]["email"] == "ann@x.org"]
    assert ann["payload"]["interactions"] == 2
    assert {r["as_of"] for r in first} == {ds} and {r["as_of"] for r in late} == {"2022-05-01"}
    pipeline.cleanup(window, config)
    write_interactions(landing, ds, "later.csv", [(ds, "s-ann", 3)])
    assert {r["as_of"] for r in batch(config, sent, "b3")[1]} == {"2022-05-01"}  # never down


def test_a_partition_dated_in_the_future_is_refused(tmp_path, sent, caplog):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    write_forms(
        landing,
        "2202-05-01",
        "typo.csv",
        [form_row("2022-05-01T09:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    summary, new = batch(config, sent, "b1")
    assert new == [] and summary["files"] == 0
    assert [f.rsplit("/", 1)[-1] for f in summary["refused"]] == ["typo.csv"]
    assert "date=2202-05-01" in caplog.text
    assert query(
        config, "SELECT count(*) FROM stream_identifiers WHERE dt > DATE '2100-01-01'"
    ) == [(0,)]
    write_forms(
        landing,
        "2022-05-01",
        "ann.csv",
        [form_row("2022-05-01T09:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    _, new = batch(config, sent, "b2")
    assert new and {r["as_of"] for r in new} == {"2022-05-01"}


def _extract(config, ds: str) -> list[dict]:
    window = pipeline.RunWindow.for_date(ds)
    return [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]


def test_a_file_streamed_between_the_daily_extract_and_validate_is_not_lost(tmp_path, sent):
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1)])
    staged = _extract(config, ds)
    # The extract has listed the partition; then files land and a stream batch merges them before
    # the daily validate gets the warehouse: late.csv (one good row, one bad), and wrong.csv,
    # which the operator then moves to its right partition.
    late = write_interactions(landing, ds, "late.csv", [(ds, "s-late", 2), (ds, "s-bad", "x")])
    wrong = write_interactions(landing, ds, "wrong.csv", [("2022-05-01", "s-wrong", 3)])
    assert batch(config, sent, "b1")[0]["files"] == 3  # a.csv too: the stream took it as well
    wrong.unlink()

    counts = pipeline.validate(pipeline.RunWindow.for_date(ds), staged, config)

    rows = f"SELECT _file, session_id FROM interactions WHERE dt = DATE '{ds}' ORDER BY 1"
    assert [(f.rsplit("/", 1)[-1], s) for f, s in query(config, rows)] == [
        ("a.csv", SEED_SESSION),  # the stream took it too, after the listing: its rows, once
        ("late.csv", "s-late"),  # as the stream merged it
    ]
    assert query(config, f"SELECT file FROM quarantine WHERE dt = DATE '{ds}'") == [(str(late),)]
    assert counts["sources"]["interactions"] == {
        "read": 1,
        "valid": 0,
        "quarantined": 0,
        "kept_as_streamed": 1,
    }
    pipeline.enrich(pipeline.RunWindow.for_date(ds), config)
    enriched = f"SELECT count(*) FROM interactions_enriched WHERE dt = DATE '{ds}'"
    assert query(config, enriched) == [(2,)]
    assert late_files(config, ds) == []  # what the stream merged is held: not late
    # each held file with what validation made of its rows: the stream batch's counts (a.csv's
    # too: the batch's row of it is kept)
    files = (
        "SELECT source, file, rows_read, rows_valid, rows_quarantined FROM landed_files "
        f"WHERE dt = DATE '{ds}'"
    )
    assert sorted(
        (s, f.rsplit("/", 1)[-1] if f else None, *n) for s, f, *n in query(config, files)
    ) == [
        ("form_entries", None, 0, 0, 0),  # no file: one row, file NULL
        ("identities", None, 0, 0, 0),
        ("interactions", "a.csv", 1, 1, 0),
        ("interactions", "late.csv", 2, 1, 1),
    ]


def late_files(config, ds: str) -> list:
    return [(e["date"], e["names"]) for e in pipeline.late_landings(config, ds)]


def test_a_file_replaced_after_the_listing_keeps_the_version_the_stream_took(tmp_path, sent):
    """The extract read a.csv's first version; a second landed and was streamed before the
    validate: the ledger says it is done, so the newer rows must stay."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1)])
    staged = _extract(config, ds)
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1), (ds, SEED_SESSION, 2)])
    batch(config, sent, "b1")

    pipeline.validate(pipeline.RunWindow.for_date(ds), staged, config)

    rows = f"SELECT option FROM interactions WHERE dt = DATE '{ds}' ORDER BY 1"
    assert query(config, rows) == [(1,), (2,)]
    assert batch(config, sent, "b2")[0]["files"] == 0
    assert late_files(config, ds) == []  # the version held is the stream's, as on landing
    # A file landing after the daily validate is late until a stream batch merges it.
    b = write_interactions(landing, ds, "b.csv", [(ds, SEED_SESSION, 3)])
    assert late_files(config, ds) == [(ds, [str(b)])]
    assert batch(config, sent, "b3")[0]["files"] == 1
    assert late_files(config, ds) == []


def test_a_suppressed_persons_rows_in_a_late_file_are_kept_as_the_daily_run_keeps_them(
    tmp_path, sent
):
    """The stream's batch keeps a `suppress` request's rows in its own restricted tables; a late
    file the daily validate leaves as merged is not re-read, so the merge keeps them too."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29"])
    write_csv(
        landing / "erasure_requests" / "r.csv",
        ["request_id", "identifier_type", "identifier_value", "requested_at", "type"],
        [["GDPR-1", "email", DAVID, "2022-04-30T00:00:00", "suppress"]],
    )
    erasure.run_erasure("2022-04-30", config, run_id="e1")
    batch(config, sent, "b0")
    ds = "2022-04-30"
    staged = _extract(config, ds)
    write_forms(landing, ds, "late.csv", [form_row(f"{ds}T10:00:00", "David", DAVID, "s-new")])
    batch(config, sent, "b1")

    pipeline.validate(pipeline.RunWindow.for_date(ds), staged, config)

    kept = f"SELECT session_id FROM restricted_form_entries WHERE dt = DATE '{ds}'"
    assert query(config, kept) == [("s-new",)]
    assert query(config, f"SELECT count(*) FROM form_entries WHERE email = '{DAVID}'") == [(0,)]


def test_validate_replaces_what_the_stream_took_before_the_extract_listed(tmp_path, sent):
    """A file the stream merged before the listing (then removed from landing) is not kept."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29"])
    ds = "2022-04-30"
    gone = write_interactions(landing, ds, "gone.csv", [(ds, "s-gone", 1)])
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1)])
    batch(config, sent, "b0")
    gone.unlink()
    # the stream took both well before this listing
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("UPDATE stream_files SET processed_at = processed_at - INTERVAL 1 HOUR")
    counts = pipeline.validate(pipeline.RunWindow.for_date(ds), _extract(config, ds), config)
    rows = f"SELECT session_id FROM interactions WHERE dt = DATE '{ds}'"
    assert query(config, rows) == [(SEED_SESSION,)]
    assert counts["sources"]["interactions"] == {"read": 1, "valid": 1, "quarantined": 0}


def test_a_file_the_pipeline_does_not_read_is_named_not_skipped_quietly(tmp_path, sent, caplog):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    partition = landing / "interactions" / "date=2022-05-01"
    partition.mkdir(parents=True)
    (partition / "part-0.csv.7z").write_bytes(b"7z\xbc\xaf\x27\x1c")
    (partition / "_SUCCESS").write_text("")  # a writer's marker: ignored, as by the extract
    # and what the extract does not look at: a writer's sub-folder, the source's own folder
    (partition / "_temporary" / "0").mkdir(parents=True)
    (partition / "_temporary" / "0" / "part-1.csv.7z").write_bytes(b"7z\xbc\xaf\x27\x1c")
    (landing / "interactions" / "README.txt").write_text("how files land")
    # what the daily extract fails on besides: a misnamed partition folder (its month without
    # the zero, a day February does not have) and a data file beside the partitions
    misnamed = [
        landing / "interactions" / d / "part-0.csv"
        for d in ("date=2022-5-1", "date=2022-02-30", "dt=2022-05-01", "date=2022-05-01/hour=10")
    ]
    beside = landing / "interactions" / "interactions.csv"
    for path in [*misnamed, beside]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("event_id,session_id\n")

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        summary, new = batch(config, sent, "b1")

    assert summary["unread"] == sorted(map(str, [partition / "part-0.csv.7z", *misnamed, beside]))
    assert "6 file(s) under" in caplog.text and "part-0.csv.7z" in caplog.text
    assert "(it reads *.csv, *.json, *.ndjson, *.jsonl, each also compressed: " in caplog.text
    assert "_SUCCESS" not in caplog.text and new == []


def test_a_link_out_of_the_landing_folder_is_not_streamed(tmp_path, sent, caplog):
    """As the daily extract refuses it (test_landing): a link to a file the worker can read
    elsewhere would put that file's rows in the stream."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    ds = "2022-05-01"
    elsewhere = tmp_path / "other-tenant"
    write_forms(elsewhere, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Eve", "eve@x.org", "s-eve")])
    link = landing / "form_entries" / f"date={ds}" / "f.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere / "form_entries" / f"date={ds}" / "f.csv")

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        summary, new = batch(config, sent, "b1")

    assert new == [] and summary["files"] == 0
    assert "f.csv: leads outside the landing folder" in caplog.text


def test_a_source_folder_linked_out_of_the_landing_folder_is_not_streamed(tmp_path, sent, caplog):
    """The source's folder itself a link elsewhere: the listing follows no link below it, so
    the folder is checked as a whole. Nothing of it is streamed, the other sources are, and the
    daily extract of a date it holds fails on it, as the warning says."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    ds = "2022-05-01"
    elsewhere = tmp_path / "other-tenant" / "identities"
    write_csv(
        elsewhere / f"date={ds}" / "ids.csv",
        IDENTITY_HEADER,
        [[f"{ds}T09:00:00", "s-eve", "crm-eve", "eve@x.org", "Eve", "Other"]],
    )
    (landing / "identities").symlink_to(elsewhere, target_is_directory=True)
    write_forms(landing, ds, "bo.csv", [form_row(f"{ds}T10:00:00", "Bo", "bo@x.org", "s-bo")])

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        summary, new = batch(config, sent, "b1")

    assert f"{landing / 'identities'}: leads outside the landing folder" in caplog.text
    assert summary["files"] == 1 and summary["sources"].keys() == {"form_entries"}
    emails = {r["payload"].get("email") for r in new if r["event_type"] == "profile_upsert"}
    assert emails == {"bo@x.org"}
    assert "eve@x.org" not in str(new) and "crm-eve" not in str(new)
    ledger = query(config, "SELECT file FROM stream_files WHERE file LIKE '%identities%'")
    assert ledger == []
    with pytest.raises(LandingError, match=r"ids\.csv: leads outside the landing folder"):
        pipeline.extract_source("identities", pipeline.RunWindow.for_date(ds), config)


def test_a_batch_stages_in_the_scratch_folder_the_sweep_empties(tmp_path, sent, monkeypatch):
    """A killed batch leaves its staged rows (plain emails) behind: only the scratch folder is
    swept of such leftovers (pipeline.sweep_scratch)."""
    config = make_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    folders = []
    stage = stream._stage
    monkeypatch.setattr(
        stream,
        "_stage",
        lambda landing_, files, folder: folders.append(folder) or stage(landing_, files, folder),
    )

    batch(config, sent, "b0")

    assert [f.parent for f in folders] == [config.scratch_root] and not folders[0].exists()


def test_an_unreadable_file_is_left_out_and_does_not_hold_back_the_others(tmp_path, sent):
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    ds = "2022-05-01"
    bad = landing / "form_entries" / "date=2022-05-02" / "bad.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("2022-05-01T09:00:00,Ann,Fan,ann@x.org,Yes,No,Yes,s-ann,Quiz,7\n")  # no header
    write_forms(landing, ds, "good.csv", [form_row(f"{ds}T10:00:00", "Bo", "bo@x.org", "s-bo")])

    summary, new = batch(config, sent, "b1")

    assert summary["unreadable"] == [str(bad)] and summary["files"] == 1
    assert {r["as_of"] for r in new} == {ds}  # not the unreadable file's later date
    assert {r["payload"].get("email") for r in new if r["event_type"] == "profile_upsert"} == {
        "bo@x.org"
    }
    # not in the ledger: fixed, it is a new version and is taken
    bad.write_text(",".join(FORM_HEADER) + "\n" + bad.read_text())
    summary, new = batch(config, sent, "b2")
    assert summary["files"] == 1 and "unreadable" not in summary


@pytest.mark.parametrize(
    ("name", "compress"),
    [("f.CSV.GZ", gzip.compress), ("f.csv.bz2", bz2.compress), ("f.Csv.Zst", zstandard.compress)],
    ids=["gz", "bz2", "zst"],
)
def test_a_compressed_file_is_streamed_as_a_plain_one(tmp_path, sent, caplog, name, compress):
    # It was "not read" (a warning each batch), never streamed, and the daily extract failed.
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    ds = "2022-05-01"
    plain = write_forms(
        landing, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Bo", "bo@x.org", "s-bo")]
    )
    packed = plain.with_name(name)
    packed.write_bytes(compress(plain.read_bytes()))
    plain.unlink()

    with caplog.at_level(logging.WARNING, logger="audience_profiles.stream"):
        summary, new = batch(config, sent, "b1")

    assert summary["files"] == 1 and "unread" not in summary and "unreadable" not in summary
    assert "not read" not in caplog.text
    assert {r["payload"].get("email") for r in new if r["event_type"] == "profile_upsert"} == {
        "bo@x.org"
    }
    # in the ledger under its landed name and the compressed file's version: not taken again
    assert query(config, "SELECT file, version FROM stream_files WHERE ds = DATE '2022-05-01'") == [
        (str(packed), landing_version(packed))
    ]
    assert batch(config, sent, "b2")[0]["files"] == 0


def landing_version(path) -> str:
    from audience_profiles.landing import local_version

    return local_version(path.stat())


def test_interactions_streamed_before_their_element_are_enriched_once_it_arrives(tmp_path, sent):
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    rows = [[ds, "event-1", "77777", "s-new", 1, 1]]
    write_csv(landing / "interactions" / f"date={ds}" / "i.csv", INTERACTION_HEADER, rows)
    batch(config, sent, "b1")  # poll 77777 is not in the catalogue yet
    element = [["77777", "Man of the match?", 1, "B"]]
    write_csv(landing / "elements" / "more.csv", ELEMENT_HEADER, element)
    batch(config, sent, "b2")
    write_forms(landing, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Ann", "ann@x.org", "s-new")])

    _, new = batch(config, sent, "b3")  # the form claims the session's history

    [vote] = [r for r in new if r["event_type"] == "interaction"]
    assert (vote["payload"]["attribute"], vote["payload"]["option"]) == ("Man of the match?", "B")


def test_a_session_the_batch_makes_a_kiosk_leaves_its_profile(tmp_path, sent):
    """Three more people sign up on David's session in one batch (over the shared-device limit):
    the next daily build links it to nobody, so the batch must not send the kiosk's votes, or
    its new users, under David's profile."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    (david,) = query(
        config, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{DAVID}'"
    )
    people = ["Eve", "Fay", "Gus"]
    rows = [form_row(f"{ds}T1{i}:00:00", n, f"{n.lower()}@x.org", SEED_SESSION) for i, n in enumerate(people)]  # fmt: skip
    write_forms(landing, ds, "kiosk.csv", rows)
    write_interactions(landing, ds, "kiosk-votes.csv", [(ds, SEED_SESSION, 3)])

    _, new = batch(config, sent, "b1")

    assert [r for r in new if r["event_type"] == "interaction"] == []
    upserts = {(r["profile_id"], r["payload"]["email"]) for r in new if r["event_type"] == "profile_upsert"}  # fmt: skip
    assert {email for profile, email in upserts if profile == david[0]} <= {DAVID}
    assert {email for _, email in upserts} >= {"eve@x.org", "fay@x.org", "gus@x.org"}

    # A later batch with only votes on the kiosk keeps the verdict (it went out under David's
    # profile again), until the daily build that has it.
    write_interactions(landing, ds, "more-kiosk-votes.csv", [(ds, SEED_SESSION, 2)])
    _, new = batch(config, sent, "b2")
    assert [r for r in new if r["event_type"] == "interaction"] == []
    kept = "SELECT session_id FROM stream_shared_sessions"
    assert query(config, kept) == [(SEED_SESSION,)]
    daily_build(config, [ds])
    assert query(config, kept) == []


def test_a_placeholder_email_brings_in_no_one_elses_history(tmp_path, sent):
    """SSO platforms send "NULL" for users without an email: the logins are kept, and a batch
    with one more of them sends that login's profile alone, not every earlier login that
    carried the same placeholder."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"

    def login(name: str, *people: str) -> list[dict]:
        rows = [[f"{ds}T10:00:00", f"s-{p}", f"u-{p}", "NULL", p.title(), ""] for p in people]
        write_csv(landing / "identities" / f"date={ds}" / name, IDENTITY_HEADER, rows)
        _, new = batch(config, sent, name)
        return [r for r in new if r["event_type"] == "profile_upsert"]

    assert len(login("a.csv", "ann", "bob", "cat")) == 3
    (upsert,) = login("b.csv", "dan")
    assert upsert["payload"]["first_name"] == "Dan" and upsert["payload"]["email"] is None


def test_a_placeholder_listed_before_requests_were_checked_takes_out_no_one(tmp_path, sent):
    """An entry for "null" left by a request accepted before such requests were refused: the batch
    takes it off the warehouse's list first, so a login with a "null" email is streamed, not
    suppressed (tests/privacy/test_suppression.py: the daily run)."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    null = hash_identifier("null")
    with duckdb.connect(config.warehouse.path) as con:
        con.execute(
            "INSERT INTO erasure_requests (request_id, identifier_type, identifier_hash, type,"
            f" status) VALUES ('r-null', 'email', '{null}', 'delete', 'done');"
            f" INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('email', '{null}', 'delete', 'r-null', NULL)"
        )
    rows = [[f"{ds}T10:00:00", "s-xena", "u-xena", "NULL", "Xena", ""]]
    write_csv(landing / "identities" / f"date={ds}" / "x.csv", IDENTITY_HEADER, rows)

    _, new = batch(config, sent, "b1")

    assert [r["payload"]["first_name"] for r in new if r["event_type"] == "profile_upsert"] == [
        "Xena"
    ]
    assert query(config, "SELECT count(*) FROM suppression_list") == [(0,)]
    assert query(config, "SELECT status FROM erasure_requests") == [("invalid",)]


def test_a_publish_keeps_the_stream_entries_its_build_did_not_have(tmp_path, sent):
    """A partition-D form entry observed early on D+1 (its writer's clock is behind UTC) is in no
    build of D: the D publish keeps the stream's entry, or the session would drop out of the
    state and its new interactions not be streamed; the D+1 publish takes it over."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_forms(
        landing, ds, "ann.csv", [form_row("2022-05-01T01:00:00", "Ann", "ann@x.org", "s-a")]
    )
    batch(config, sent, "b1")
    with duckdb.connect(config.warehouse.path) as con:  # the daily run comes an hour later
        con.execute("UPDATE stream_files SET processed_at = processed_at - INTERVAL 1 HOUR")
        con.execute("UPDATE stream_identifiers SET recorded_at = recorded_at - INTERVAL 1 HOUR")

    daily_build(config, [ds])

    entries = "SELECT identifier_value FROM stream_identifiers ORDER BY 1"
    assert query(config, entries) == [("ann@x.org",), ("s-a",)]
    write_interactions(landing, ds, "ann-votes.csv", [(ds, "s-a", 1)])
    _, new = batch(config, sent, "b2")
    assert [r["event_type"] for r in new if r["event_type"] == "interaction"] == ["interaction"]
    daily_build(config, ["2022-05-01"])
    assert query(config, entries) == []


def test_a_publish_keeps_a_merge_the_stream_made_from_a_row_after_the_date(tmp_path, sent):
    """The build of D has Ann's identifiers, under her own profile: the stream's merge into
    David's, from a row of D observed after D, is in no build of D and must stay."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_forms(landing, "2022-04-29", "ann.csv", [form_row("2022-04-29T09:00:00", "Ann", "ann@x.org", "s-a")])  # fmt: skip
    daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29"])
    batch(config, sent, "b0")
    ds = "2022-04-30"
    write_forms(landing, ds, "late.csv", [form_row("2022-05-01T01:00:00", "David", DAVID, "s-a")])
    batch(config, sent, "b1")
    with duckdb.connect(config.warehouse.path) as con:  # the daily run comes an hour later
        con.execute("UPDATE stream_files SET processed_at = processed_at - INTERVAL 1 HOUR")
        con.execute("UPDATE stream_identifiers SET recorded_at = recorded_at - INTERVAL 1 HOUR")
    (david,) = query(
        config, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{DAVID}'"
    )

    daily_build(config, [ds])

    write_interactions(landing, ds, "ann-votes.csv", [(ds, "s-a", 1)])
    _, new = batch(config, sent, "b2")
    assert {r["profile_id"] for r in new if r["event_type"] == "interaction"} == {david[0]}


def test_a_batch_that_read_an_older_version_does_not_replace_the_staged_one(
    tmp_path, sent, monkeypatch
):
    """The batch read a.csv's first version, then the second landed and the daily extract staged
    it, then the batch committed (after the listing): the daily validate keeps the staged rows."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1)])
    staged = {}
    emit = stream._emit

    def extract_while_the_batch_delivers(*args, **kwargs):
        out = emit(*args, **kwargs)
        write_interactions(landing, ds, "a.csv", [(ds, SEED_SESSION, 1), (ds, SEED_SESSION, 2)])
        staged["all"] = _extract(config, ds)
        return out

    monkeypatch.setattr(stream, "_emit", extract_while_the_batch_delivers)
    batch(config, sent, "b1")
    monkeypatch.undo()

    pipeline.validate(pipeline.RunWindow.for_date(ds), staged["all"], config)

    rows = f"SELECT option FROM interactions WHERE dt = DATE '{ds}' ORDER BY 1"
    assert query(config, rows) == [(1,), (2,)]


def test_a_retitled_element_reaches_the_interactions_no_daily_run_has_built(tmp_path, sent):
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"  # not published yet
    catalogue = landing / "elements" / "more.csv"
    write_csv(catalogue, ELEMENT_HEADER, [["77777", "Old title?", 1, "A"]])
    batch(config, sent, "b1")
    rows = [[ds, "event-1", "77777", "s-new", 1, 1]]
    write_csv(landing / "interactions" / f"date={ds}" / "i.csv", INTERACTION_HEADER, rows)
    batch(config, sent, "b2")
    write_csv(catalogue, ELEMENT_HEADER, [["77777", "New title?", 1, "B"]])
    batch(config, sent, "b3")
    write_forms(landing, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Ann", "ann@x.org", "s-new")])

    _, new = batch(config, sent, "b4")

    [vote] = [r for r in new if r["event_type"] == "interaction"]
    assert (vote["payload"]["attribute"], vote["payload"]["option"]) == ("New title?", "B")


def test_a_catalogue_of_only_quarantined_rows_does_not_empty_the_stream_s(tmp_path, sent):
    # every row of the re-landed catalogue bad: the batch replaced the catalogue by none, and
    # every interaction it enriched had no title
    config, landing = streaming(tmp_path, sent)
    before = query(config, "SELECT count(*) FROM elements")
    assert before != [(0,)]
    catalogue = landing / "elements" / "elements.csv"
    header, *rows = catalogue.read_text().splitlines()
    catalogue.write_text("\n".join([header, *(",".join(["", *r.split(",")[1:]]) for r in rows)]))
    batch(config, sent, "b1")
    assert query(config, "SELECT count(*) FROM elements") == before


def test_a_batch_of_only_unreadable_files_sends_nothing_and_takes_them_once_fixed(tmp_path, sent):
    """Every new file unreadable: the batch ends without a batch (nothing staged to send), and
    the files stay out of the ledger, so the fixed version goes out with the next batch."""
    config = make_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    batch(config, sent, "b0")
    bad = landing / "form_entries" / "date=2022-05-02" / "bad.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("2022-05-02T09:00:00,Ann,Fan,ann@x.org,Yes,No,Yes,s-ann,Quiz,7\n")  # no header

    summary, new = batch(config, sent, "b1")

    assert summary["unreadable"] == [str(bad)] and summary["files"] == 0 and new == []
    bad.write_text(",".join(FORM_HEADER) + "\n" + bad.read_text())
    summary, new = batch(config, sent, "b2")
    assert summary["files"] == 1 and "unreadable" not in summary
    assert {r["payload"].get("email") for r in new if r["event_type"] == "profile_upsert"} == {
        "ann@x.org"
    }


def test_an_unreadable_element_file_holds_back_the_whole_catalogue_until_fixed(tmp_path, sent):
    """The catalogue is replaced whole: with one of its files unreadable, none goes in (a good
    one alone would drop the other's elements), and both are taken once it is fixed."""
    config, landing = streaming(tmp_path, sent)
    ds = "2022-04-30"
    write_csv(landing / "elements" / "good.csv", ELEMENT_HEADER, [["77777", "MOTM?", 1, "B"]])
    bad = landing / "elements" / "bad.csv"
    bad.write_text("88888,Best goal?,1,C\n")  # no header
    write_forms(landing, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Ann", "ann@x.org", "s-new")])

    summary, new = batch(config, sent, "b1")

    assert summary["unreadable"] == [str(bad)] and summary["files"] == 1  # the form alone
    assert {r["payload"].get("email") for r in new if r["event_type"] == "profile_upsert"} == {
        "ann@x.org"
    }
    bad.write_text(",".join(ELEMENT_HEADER) + "\n" + bad.read_text())
    summary, _ = batch(config, sent, "b2")
    assert summary["files"] == 2 and "unreadable" not in summary
    ids = "SELECT poll_id FROM elements WHERE poll_id IN ('77777', '88888')"
    assert sorted(r[0] for r in query(config, ids)) == ["77777", "88888"]


def test_a_late_file_of_a_date_a_later_one_has_passed_keeps_that_date_s_catalogue(tmp_path, sent):
    """The catalogue changed and a later date recorded it: a file landing late for the earlier
    date is sent with the titles that date's daily run gives it (catalogue/_macros.sql,
    for_stream), not the catalogue the stream holds now; the unpublished-date re-enrich of a
    catalogue batch leaves the date alone too."""
    config, landing = streaming(tmp_path, sent)
    catalogue = landing / "elements" / "elements.csv"
    old_title = "Which team do you support?"
    catalogue.write_text(catalogue.read_text().replace(old_title, "Which club?"))
    daily_build(config, ["2022-04-30"])  # records the new title from 2022-04-30
    ds = "2022-04-29"
    rows = [[ds, "event-late", "54663", SEED_SESSION, 2, 1]]
    write_csv(landing / "interactions" / f"date={ds}" / "late.csv", INTERACTION_HEADER, rows)

    _, new = batch(config, sent, "b1")

    [vote] = [r for r in new if r["event_type"] == "interaction"]
    assert vote["payload"]["attribute"] == old_title
    streamed = query(config, "SELECT title FROM interactions_enriched WHERE _file LIKE '%late.csv'")
    daily_build(config, [ds])  # the date's daily re-run agrees
    assert (
        query(config, "SELECT title FROM interactions_enriched WHERE _file LIKE '%late.csv'")
        == streamed
        == [(old_title,)]
    )


def test_an_unpublished_date_a_later_one_has_recorded_past_keeps_its_catalogue(tmp_path, sent):
    """A date loaded but not published (its run failed after enrich) with a later date recorded
    since: its daily retry records nothing and keeps the catalogue in force on it, so a late file
    of it goes out with those titles, and a catalogue batch leaves its rows alone
    (catalogue/_macros.sql, records_on)."""
    config, landing = streaming(tmp_path, sent)
    ds, old_title = "2022-04-30", "Which team do you support?"
    rows = [[ds, "event-a", "54663", SEED_SESSION, 1, 1]]
    write_csv(landing / "interactions" / f"date={ds}" / "a.csv", INTERACTION_HEADER, rows)
    window = pipeline.RunWindow.for_date(ds)
    quiet = dataclasses.replace(config, destinations=())
    staged = [pipeline.extract_source(s, window, quiet) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(window, staged, quiet)
    pipeline.enrich(window, quiet)  # then failed: not published
    catalogue = landing / "elements" / "elements.csv"
    catalogue.write_text(catalogue.read_text().replace(old_title, "Which club?"))
    daily_build(config, ["2022-05-01"])  # records the new title from 2022-05-01
    rows = [[ds, "event-b", "54663", SEED_SESSION, 2, 1]]
    write_csv(landing / "interactions" / f"date={ds}" / "b.csv", INTERACTION_HEADER, rows)

    _, new = batch(config, sent, "b1")  # the new catalogue and the late file

    votes = [r for r in new if r["event_type"] == "interaction"]
    assert votes and {v["payload"]["attribute"] for v in votes} == {old_title}
    assert query(
        config, f"SELECT DISTINCT title FROM interactions_enriched WHERE dt = DATE '{ds}'"
    ) == [(old_title,)]
