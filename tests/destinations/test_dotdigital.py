"""The Dotdigital destination against the stand-in API (tests/services/dotdigital_standin.py).

Every test drives the real hook over HTTP on loopback; nothing in the client is mocked. The two
crash tests patch our own code to die at a chosen point, which is what a killed worker does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audience_profiles.config import ConfigError, parse_config
from audience_profiles.destinations import RunInfo, destination_for
from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.dotdigital import DotdigitalImportFailed
from audience_profiles.destinations.sync_state import StateLockedError, SyncStateStore
from audience_profiles.hooks.dotdigital import (
    DotdigitalApiError,
    DotdigitalHook,
    api_base_url,
    retry_wait,
)
from audience_profiles.triggers.dotdigital import DotdigitalImportTrigger, wait_for_imports
from tests.services.dotdigital_standin import DOTDIGITAL_CONN_ID

pytestmark = pytest.mark.services

FANS, PARTNERS = "AP fans", "AP partner offers"
CONSENT_TEXT = "Yes, send me club news."
PARTNER_TEXT = "Yes, send me offers from club partners."
PROFILE_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("email", pa.string()),
        ("external_id", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("optin_1", pa.bool_()),
        ("optin_2", pa.bool_()),
        ("accept_terms", pa.bool_()),
        ("first_seen", pa.timestamp("us")),
        ("last_seen", pa.timestamp("us")),
        ("sessions", pa.int64()),
        ("interactions", pa.int64()),
        ("answers", pa.string()),
        ("optin_1_at", pa.timestamp("us")),
        ("optin_1_source", pa.string()),
        ("optin_2_at", pa.timestamp("us")),
        ("optin_2_source", pa.string()),
    ]
)
SEEN = dt.datetime(2024, 5, 1, 12, 30)


def profile(pid: str, email: str | None, optin_1=True, optin_2=None, **extra) -> dict:
    row = {
        "profile_id": pid,
        "email": email,
        "first_name": pid.upper(),
        "last_name": "Fan",
        "optin_1": optin_1,
        "optin_2": optin_2,
        "last_seen": SEEN,
        "answers": json.dumps({"Favourite team": "Reds"}),
        "optin_1_at": dt.datetime(2024, 4, 1, 9, 0) if optin_1 else None,
        "optin_1_source": "https://club.example/signup",
        "optin_2_at": dt.datetime(2024, 4, 2, 9, 0) if optin_2 else None,
    }
    return row | extra


class Inputs:
    """Writes one run's Parquet exports, the way the build hands them to a destination."""

    def __init__(self, root: Path):
        self.root = root
        self.runs = 0

    def write(self, profiles: list[dict], members: dict[str, list[str]]) -> dict[str, str]:
        self.runs += 1
        folder = self.root / f"run{self.runs}"
        folder.mkdir(parents=True)
        columns = {f.name: [p.get(f.name) for p in profiles] for f in PROFILE_SCHEMA}
        pq.write_table(
            pa.table(columns, schema=PROFILE_SCHEMA), folder / "audience_profiles.parquet"
        )
        rows = [(seg, pid) for seg, pids in members.items() for pid in pids]
        memberships = pa.table(
            {
                "segment_id": [r[0] for r in rows],
                "profile_id": [r[1] for r in rows],
                "since": pa.array([dt.date(2024, 5, 1)] * len(rows), pa.date32()),
            }
        )
        pq.write_table(memberships, folder / "segment_memberships.parquet")
        return {
            "audience_profiles": str(folder / "audience_profiles.parquet"),
            "segment_memberships": str(folder / "segment_memberships.parquet"),
        }


@pytest.fixture
def inputs(tmp_path) -> Inputs:
    return Inputs(tmp_path / "exports")


@pytest.fixture
def sync(tmp_path, dotdigital):
    """``sync(tables, **options)``: deliver one run to the stand-in; returns the DeliveryReport.

    ``sync.destination(**options)`` is the destination with the same configuration."""
    state_path = tmp_path / "state" / "dotdigital.duckdb"
    runs = iter(range(1, 100))

    def make(**options):
        entry = {
            "name": "dotdigital",
            "kind": "dotdigital",
            "conn_id": DOTDIGITAL_CONN_ID,
            "tables": ["segment_memberships", "audience_profiles"],
            "state_path": str(state_path),
            "segments": {
                "fans": {"address_book": FANS},
                "partners": {"address_book": PARTNERS, "partner": True},
            },
            "consent": {"text": CONSENT_TEXT, "partner_text": PARTNER_TEXT},
            "data_fields": {"TEAM": "answers.Favourite team", "LASTINTERACTION": "last_seen"},
            "poll_interval": 0.01,
            "backoff_base": 0.01,
            **options,
        }
        pipeline = parse_config(
            {
                "start_date": "2024-05-01",
                "landing_root": str(tmp_path / "landing"),
                "work_dir": str(tmp_path / "work"),
                "destinations": [entry],
            }
        )
        return destination_for(pipeline.destination("dotdigital"), pipeline)

    def run(tables: dict[str, str], **options):
        n = next(runs)
        return make(**options).deliver(RunInfo(ds=f"2024-05-{n:02d}", run_id=f"run_{n}"), tables)

    run.state_path = state_path
    run.destination = make  # the destination itself, e.g. to erase
    return run


def state_rows(path: Path, sql: str) -> list[tuple]:
    with SyncStateStore(path) as store:
        return store.con.execute(sql).fetchall()


def synced(path: Path, segment: str = "fans") -> set[str]:
    return {
        r[0]
        for r in state_rows(path, f"SELECT email FROM sync_state WHERE segment_id = '{segment}'")
    }


def imported_emails(standin) -> list[str]:
    """Every address any import file carried, in order (duplicates kept)."""
    emails = []
    for job in standin.imports.values():
        emails += [line.split(",")[0] for line in job["text"].splitlines()[1:]]
    return emails


# -- consent ----------------------------------------------------------------------------------


def test_only_explicit_opt_ins_are_sent_and_suppressed_contacts_never_return(
    dotdigital, inputs, sync
):
    dotdigital.suppress("dora@example.com", "Unsubscribed")
    profiles = [
        profile("ann", "Ann@Example.com "),
        profile("bob", "bob@example.com", optin_1=False),
        profile("cid", "cid@example.com", optin_1=None),
        profile("dora", "dora@example.com"),
        profile("eve", None),
        profile("pat", "pat@example.com", optin_1=False, optin_2=True),
        profile("quin", "quin@example.com", optin_1=True, optin_2=None),
    ]
    members = {"fans": ["ann", "bob", "cid", "dora", "eve"], "partners": ["pat", "quin"]}

    report = sync(inputs.write(profiles, members))

    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert dotdigital.members(PARTNERS) == {"pat@example.com"}
    never_sent = {"bob@example.com", "cid@example.com", "dora@example.com", "quin@example.com"}
    assert never_sent.isdisjoint(imported_emails(dotdigital))
    assert report.details["skipped"] == {"no_email": 1, "no_consent": 3, "suppressed": 1}
    # Consent evidence goes with each new opt-in: the wording for that list, time and source.
    assert dotdigital.contact("ann@example.com")["consentRecords"] == [
        {
            "text": CONSENT_TEXT,
            "dateTimeConsented": "2024-04-01T09:00:00Z",
            "url": "https://club.example/signup",
        }
    ]
    assert dotdigital.contact("pat@example.com")["consentRecords"][0]["text"] == PARTNER_TEXT
    assert dotdigital.contact("bob@example.com") is None

    # Ann unsubscribes in Dotdigital: she leaves the list and is not re-added while she opts in.
    dotdigital.suppress("ann@example.com", "Unsubscribed")
    report = sync(inputs.write(profiles, members))
    assert dotdigital.members(FANS) == set()
    assert report.rows["removed"] == 1
    sync(inputs.write(profiles, members))
    assert dotdigital.members(FANS) == set()
    assert imported_emails(dotdigital).count("ann@example.com") == 1
    assert ("ann@example.com",) in state_rows(sync.state_path, "SELECT email FROM suppressed")


def test_a_yes_no_column_maps_to_a_boolean_data_field(dotdigital, inputs, sync):
    """true and false as Dotdigital takes them; an unknown answer is left empty, not false."""
    people = [
        profile("ann", "ann@example.com", optin_2=True),
        profile("bob", "bob@example.com", optin_2=False),
        profile("cid", "cid@example.com", optin_2=None),
    ]
    sync(
        inputs.write(people, {"fans": ["ann", "bob", "cid"]}),
        data_fields={"PARTNEROK": "optin_2"},
    )
    assert dotdigital.data_fields["PARTNEROK"]["type"] == "Boolean"
    fields = {p["email"]: dotdigital.contact(p["email"])["dataFields"] for p in people}
    assert fields["ann@example.com"]["PARTNEROK"] == "true"
    assert fields["bob@example.com"]["PARTNEROK"] == "false"
    assert fields["cid@example.com"].get("PARTNEROK") in (None, "")


def test_consent_records_are_sent_once_per_opt_in(dotdigital, inputs, sync):
    profiles = [profile("ann", "ann@example.com")]
    sync(inputs.write(profiles, {"fans": ["ann"]}))
    sync(inputs.write(profiles, {"fans": ["ann"]}))
    assert len(dotdigital.contact("ann@example.com")["consentRecords"]) == 1

    # A new opt-in (later timestamp) is new evidence: one more record.
    renewed = [profile("ann", "ann@example.com", optin_1_at=dt.datetime(2024, 6, 1, 8, 0))]
    sync(inputs.write(renewed, {"fans": ["ann"]}))
    records = dotdigital.contact("ann@example.com")["consentRecords"]
    assert [r["dateTimeConsented"] for r in records] == [
        "2024-04-01T09:00:00Z",
        "2024-06-01T08:00:00Z",
    ]


def test_a_member_back_in_a_segment_is_not_sent_their_opt_in_again(dotdigital, inputs, sync):
    """Ann left fans and came back with the same opt-in (a window rule lets fans in and out
    week by week): each return sent the same consent record again, as the state forgot her
    record with her membership; the contact keeps its records when taken out of a book. Bob,
    in fans and then partners with the same wording, has one record too; erased, Ann's
    record is forgotten with her."""
    people = [
        profile("ann", "ann@example.com"),
        profile("bob", "bob@example.com"),
    ]
    same_text = {"fans": {"address_book": FANS}, "partners": {"address_book": PARTNERS}}
    sync(inputs.write(people, {"fans": ["ann", "bob"]}), segments=same_text)
    # a state file from before consent_records: the records its members were sent count
    with SyncStateStore(sync.state_path) as store:
        store.con.execute("DROP TABLE IF EXISTS consent_records")
    sync(inputs.write(people, {"fans": []}), segments=same_text)
    assert dotdigital.members(FANS) == set()
    sync(inputs.write(people, {"fans": ["ann"], "partners": ["bob"]}), segments=same_text)
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert dotdigital.members(PARTNERS) == {"bob@example.com"}
    assert len(dotdigital.contact("ann@example.com")["consentRecords"]) == 1
    assert len(dotdigital.contact("bob@example.com")["consentRecords"]) == 1

    request = ErasureRequest("r-1", "2024-05-04 10:00:00", ("ann",), ())
    sync.destination(segments=same_text).erase([request])
    assert state_rows(
        sync.state_path, "SELECT count(*) FROM consent_records WHERE email = 'ann@example.com'"
    ) == [(0,)]


def test_consent_records_accepted_before_a_failure_are_not_sent_again(
    dotdigital, inputs, sync, monkeypatch
):
    """Accepted records reach the state in batches (one write per contact scanned the state
    each time); a batch is still written when the loop fails, so the retry sends the rest."""
    people = [profile(p, f"{p}@example.com") for p in ("ann", "bob", "cid", "dee")]
    send = DotdigitalHook.add_consent_records
    calls = []

    def fail_on_the_third(self, email, records):
        calls.append(email)
        if len(calls) == 3:
            raise DotdigitalApiError("PATCH", "/contacts/v3/email/x", 503, "unavailable")
        return send(self, email, records)

    monkeypatch.setattr(DotdigitalHook, "add_consent_records", fail_on_the_third)
    with pytest.raises(DotdigitalApiError):
        sync(inputs.write(people, {"fans": ["ann", "bob", "cid", "dee"]}))
    monkeypatch.setattr(DotdigitalHook, "add_consent_records", send)
    sync(inputs.write(people, {"fans": ["ann", "bob", "cid", "dee"]}))
    for person in people:
        assert len(dotdigital.contact(person["email"])["consentRecords"]) == 1, person["email"]
    assert state_rows(sync.state_path, "SELECT count(*) FROM sync_state WHERE consent_pending") == [
        (0,)
    ]


def test_a_consent_record_refused_is_counted_and_stays_owed_without_holding_back_others(
    dotdigital, inputs, sync, monkeypatch
):
    """A 4xx on one contact's consent record is that record's fault: the others go out, the
    refusal is reported, and the record stays pending, so a later run offers it again."""
    people = [profile(p, f"{p}@example.com") for p in ("ann", "bob", "cid")]
    send = DotdigitalHook.add_consent_records

    def refuse_bob(self, email, records):
        if email == "bob@example.com":
            raise DotdigitalApiError("PATCH", "/contacts/v3/email/x", 400, "bad consent")
        return send(self, email, records)

    monkeypatch.setattr(DotdigitalHook, "add_consent_records", refuse_bob)
    report = sync(inputs.write(people, {"fans": ["ann", "bob", "cid"]}))

    assert [len(dotdigital.contact(p["email"])["consentRecords"]) for p in people] == [1, 0, 1]
    assert sum(n for r, n in report.details["reasons"].items() if "consent record" in r) == 1
    pending = "SELECT email FROM sync_state WHERE consent_pending"
    assert state_rows(sync.state_path, pending) == [("bob@example.com",)]
    monkeypatch.setattr(DotdigitalHook, "add_consent_records", send)
    sync(inputs.write(people, {"fans": ["ann", "bob", "cid"]}))
    assert [len(dotdigital.contact(p["email"])["consentRecords"]) for p in people] == [1, 1, 1]
    assert state_rows(sync.state_path, pending) == []


# -- diff sync --------------------------------------------------------------------------------


def test_diff_sync_adds_changes_and_removes_across_runs(dotdigital, inputs, sync):
    people = {p: profile(p, f"{p}@example.com") for p in ("ann", "bob", "cid")}

    report = sync(inputs.write(list(people.values()), {"fans": ["ann", "bob", "cid"]}))
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com", "cid@example.com"}
    assert report.rows == {"added": 3, "changed": 0, "removed": 0, "rejected": 0}
    assert dotdigital.data_fields["TEAM"]["type"] == "String"
    assert dotdigital.data_fields["LASTINTERACTION"]["type"] == "Date"
    assert dotdigital.contact("ann@example.com")["dataFields"] == {
        "FIRSTNAME": "ANN",
        "LASTNAME": "Fan",
        "TEAM": "Reds",
        "LASTINTERACTION": "2024-05-01T12:30:00",
    }

    # Run 2: Bob's name changes and Dan joins; only those two rows are sent.
    people["bob"] = profile("bob", "bob@example.com", first_name="Robert")
    people["dan"] = profile("dan", "dan@example.com")
    report = sync(inputs.write(list(people.values()), {"fans": ["ann", "bob", "cid", "dan"]}))
    assert dotdigital.members(FANS) == {
        "ann@example.com",
        "bob@example.com",
        "cid@example.com",
        "dan@example.com",
    }
    assert report.rows == {"added": 1, "changed": 1, "removed": 0, "rejected": 0}
    last_import = list(dotdigital.imports.values())[-1]["text"]
    assert sorted(line.split(",")[0] for line in last_import.splitlines()[1:]) == [
        "bob@example.com",
        "dan@example.com",
    ]
    assert dotdigital.contact("bob@example.com")["dataFields"]["FIRSTNAME"] == "Robert"

    # Run 3: Ann leaves the segment, Cid withdraws consent: both are taken out of the book.
    people["cid"] = profile("cid", "cid@example.com", optin_1=False)
    report = sync(inputs.write(list(people.values()), {"fans": ["bob", "cid", "dan"]}))
    assert dotdigital.members(FANS) == {"bob@example.com", "dan@example.com"}
    assert report.rows == {"added": 0, "changed": 0, "removed": 2, "rejected": 0}
    assert synced(sync.state_path) == {"bob@example.com", "dan@example.com"}

    # Nothing changed: nothing is imported or removed.
    imports_before = len(dotdigital.imports)
    report = sync(inputs.write(list(people.values()), {"fans": ["bob", "cid", "dan"]}))
    assert len(dotdigital.imports) == imports_before
    assert report.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}

    runs = state_rows(
        sync.state_path,
        "SELECT ds, mode, status, added, changed, removed, rejected FROM sync_runs ORDER BY ds",
    )
    assert runs == [
        ("2024-05-01", "diff", "success", 3, 0, 0, 0),
        ("2024-05-02", "diff", "success", 1, 1, 0, 0),
        ("2024-05-03", "diff", "success", 0, 0, 2, 0),
        ("2024-05-04", "diff", "success", 0, 0, 0, 0),
    ]


def deliver_on(sync, ds: str, tables: dict[str, str], run_id: str | None = None, **options):
    """Deliver ``tables`` as the run of date ``ds`` (the ``sync`` fixture numbers dates itself)."""
    return sync.destination(**options).deliver(RunInfo(ds, run_id or f"scheduled__{ds}"), tables)


def test_an_older_date_never_rolls_back_a_newer_sync(dotdigital, inputs, sync):
    """Re-delivering an old date (a cleared task, a backfill, catch-up out of order) used to
    sync it over the newer one: Ann, who opted out on 05-02, was added back."""
    day1 = inputs.write(
        [profile("ann", "ann@example.com"), profile("bob", "bob@example.com")], {"fans": ["ann"]}
    )
    day2 = inputs.write(
        [profile("ann", "ann@example.com", optin_1=False), profile("bob", "bob@example.com")],
        {"fans": ["ann", "bob"]},
    )
    deliver_on(sync, "2024-05-01", day1)
    assert dotdigital.members(FANS) == {"ann@example.com"}
    deliver_on(sync, "2024-05-02", day2)
    assert dotdigital.members(FANS) == {"bob@example.com"}
    posts_before = dotdigital.calls("POST")

    report = deliver_on(sync, "2024-05-01", day1, run_id="manual__rerun-05-01")

    # Neither Ann's opt-out nor Bob's joining is undone; nothing was imported or removed.
    assert dotdigital.members(FANS) == {"bob@example.com"}
    assert dotdigital.calls("POST") == posts_before
    assert synced(sync.state_path) == {"bob@example.com"}
    assert report.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}
    assert report.details["snapshots_kept_newer"] == ["fans", "partners"]
    assert report.details["last_synced_ds"] == "2024-05-02"
    assert report.failures == []
    # Also with a full re-sync or a dry run configured: an old date never syncs over a newer one.
    assert deliver_on(sync, "2024-04-30", day1, full_resync=True).details[
        "snapshots_kept_newer"
    ] == ["fans", "partners"]
    assert dotdigital.members(FANS) == {"bob@example.com"}
    dry = deliver_on(sync, "2024-05-01", day1, dry_run=True)
    assert dry.details["snapshots_kept_newer"] == ["fans", "partners"]

    # The same date again syncs as usual (retries, deferred rounds, a manual re-run)...
    report = deliver_on(sync, "2024-05-02", day2, run_id="manual__rerun-05-02")
    assert report.details["snapshots_kept_newer"] == []
    assert report.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}
    # ...and a newer date moves on: Ann opts in again.
    day3 = inputs.write(
        [profile("ann", "ann@example.com"), profile("bob", "bob@example.com")],
        {"fans": ["ann", "bob"]},
    )
    report = deliver_on(sync, "2024-05-03", day3)
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    assert report.details["last_synced_ds"] == "2024-05-03"

    runs = state_rows(sync.state_path, "SELECT ds, mode, status FROM sync_runs ORDER BY started_at")
    assert runs == [
        ("2024-05-01", "diff", "success"),
        ("2024-05-02", "diff", "success"),
        ("2024-05-01", "diff", "kept_newer"),
        ("2024-04-30", "full_resync", "kept_newer"),
        ("2024-05-01", "dry_run", "dry_run"),
        ("2024-05-02", "diff", "success"),
        ("2024-05-03", "diff", "success"),
    ]


def test_an_older_date_still_finishes_a_newer_dates_imports_and_consent(dotdigital, inputs, sync):
    """A newer date deferred on its imports; an older date delivered meanwhile confirms them
    and sends the consent records they owe (nothing there moves backwards), but syncs nothing
    of its own. The newer date's next round (same date) then finishes the sync."""
    day1 = inputs.write([profile("cid", "cid@example.com")], {"fans": ["cid"]})
    day2 = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    first = deliver_on(sync, "2024-05-02", day2, defer_imports=True)
    assert first.details["pending_imports"]
    wait_for_imports(
        DotdigitalHook(DOTDIGITAL_CONN_ID), first.details["pending_imports"], poll_interval=0.01
    )

    older = deliver_on(sync, "2024-05-01", day1, defer_imports=True)

    assert older.details["snapshots_kept_newer"] == ["fans", "partners"]
    assert older.details["pending_imports"] == []
    assert older.rows["added"] == 1  # the newer date's import, confirmed
    assert dotdigital.members(FANS) == {"ann@example.com"}  # Cid (05-01 only) was not added
    assert synced(sync.state_path) == {"ann@example.com"}
    assert len(dotdigital.contact("ann@example.com")["consentRecords"]) == 1
    assert state_rows(sync.state_path, "SELECT count(*) FROM import_rows") == [(0,)]

    again = deliver_on(sync, "2024-05-02", day2, defer_imports=True)
    assert again.details["snapshots_kept_newer"] == []
    assert again.details["pending_imports"] == []
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert len(dotdigital.contact("ann@example.com")["consentRecords"]) == 1


def test_state_from_before_the_run_date_watermark_keeps_working(dotdigital, inputs, sync):
    """State files without ``last_synced_ds`` take the latest successful or pending run's date
    from ``sync_runs``; with no such run, nothing counts as synced yet."""
    with SyncStateStore(sync.state_path) as store:
        assert store.last_synced_ds() is None
        store.record_run(
            sync_id="old-failed", destination="dotdigital", run_id="r", ds="2024-05-09",
            mode="diff", status="failed", started_at=dt.datetime(2024, 5, 9),
            finished_at=dt.datetime(2024, 5, 9), added=0, changed=0, removed=0, rejected=0,
        )  # fmt: skip
        assert store.last_synced_ds() is None  # a failed run may have sent nothing
    day1 = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    day2 = inputs.write([profile("ann", "ann@example.com", optin_1=False)], {"fans": ["ann"]})
    deliver_on(sync, "2024-05-01", day1)
    deliver_on(sync, "2024-05-02", day2)
    with SyncStateStore(sync.state_path) as store:  # as an older version left it
        store.con.execute("DELETE FROM sync_meta WHERE key = 'last_synced_ds'")
        assert store.last_synced_ds() == dt.date(2024, 5, 2)

    report = deliver_on(sync, "2024-05-01", day1)

    assert dotdigital.members(FANS) == set()
    assert report.details["snapshots_kept_newer"] == ["fans", "partners"]
    assert report.details["last_synced_ds"] == "2024-05-02"


def test_state_from_before_the_watermark_stores_it_when_its_latest_date_syncs_again(
    dotdigital, inputs, sync
):
    """The first delivery on an old state file is its latest date again (a retry, a cleared
    task): the date stands in sync_runs, so it is claimed as it is, stored as the watermark,
    and an older date is then kept from syncing over it."""
    day1 = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    day2 = inputs.write([profile("ann", "ann@example.com", optin_1=False)], {"fans": ["ann"]})
    deliver_on(sync, "2024-05-01", day1)
    deliver_on(sync, "2024-05-02", day2)
    with SyncStateStore(sync.state_path) as store:  # as an older version left it
        store.con.execute("DELETE FROM sync_meta WHERE key = 'last_synced_ds'")

    again = deliver_on(sync, "2024-05-02", day2, run_id="manual__rerun-05-02")

    assert again.details["snapshots_kept_newer"] == []
    assert again.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}
    assert state_rows(
        sync.state_path, "SELECT value FROM sync_meta WHERE key = 'last_synced_ds'"
    ) == [("2024-05-02",)]
    older = deliver_on(sync, "2024-05-01", day1, run_id="manual__rerun-05-01")
    assert older.details["snapshots_kept_newer"] == ["fans", "partners"]
    assert older.details["last_synced_ds"] == "2024-05-02"
    assert dotdigital.members(FANS) == set()  # Ann's opt-out of 05-02 stands


def test_rejected_rows_are_kept_and_retried(dotdigital, inputs, sync):
    dotdigital.fault_emails = {"bob@example.com": "Failures"}
    profiles = [
        profile("ann", "ann@example.com"),
        profile("bob", "bob@example.com"),
        profile("typo", "typo@example"),
    ]
    tables = inputs.write(profiles, {"fans": ["ann", "bob", "typo"]})

    report = sync(tables)
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert report.rows["rejected"] == 2
    assert report.failures == []  # handled: the task does not fail (and retry) over them
    assert report.details["reasons"] == {"Failures": 1, "Invalid Entries": 1}
    failures = state_rows(
        sync.state_path, "SELECT email, reason, attempts FROM sync_failures ORDER BY email"
    )
    assert failures == [("bob@example.com", "Failures", 1), ("typo@example", "Invalid Entries", 1)]
    (reasons,) = state_rows(sync.state_path, "SELECT reasons FROM sync_runs")[0]
    assert json.loads(reasons) == {"Failures": 1, "Invalid Entries": 1}

    dotdigital.fault_emails = {}
    report = sync(tables)
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    assert report.rows == {"added": 1, "changed": 0, "removed": 0, "rejected": 1}
    assert state_rows(sync.state_path, "SELECT email, attempts FROM sync_failures") == [
        ("typo@example", 2)
    ]


def test_a_member_another_segment_of_the_book_wants_stays_in_it(dotdigital, inputs, sync):
    """Two segments syncing to one address book: Ann, who left fans but is still in partners,
    was taken out of the book by fans' removals (and by a full re-sync's strays), and partners'
    state, saying she was synced, never put her back."""
    shared = {"fans": {"address_book": FANS}, "partners": {"address_book": FANS, "partner": True}}
    ann = [profile("ann", "ann@example.com", optin_2=True), profile("bob", "bob@example.com")]
    day1 = inputs.write(ann, {"fans": ["ann", "bob"], "partners": ["ann"]})
    deliver_on(sync, "2024-05-01", day1, segments=shared)
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}

    day2 = inputs.write(ann, {"fans": ["bob"], "partners": ["ann"]})
    report = deliver_on(sync, "2024-05-02", day2, segments=shared)
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    assert report.rows["removed"] == 0
    assert synced(sync.state_path, "fans") == {"bob@example.com"}

    deliver_on(sync, "2024-05-03", day2, segments=shared, full_resync=True)
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}

    day4 = inputs.write(ann, {"fans": ["bob"]})
    report = deliver_on(sync, "2024-05-04", day4, segments=shared)
    assert dotdigital.members(FANS) == {"bob@example.com"}
    assert report.rows["removed"] == 1


def test_a_segment_moving_out_of_a_shared_book_leaves_the_other_segments_members(
    dotdigital, inputs, sync
):
    """Fans and partners shared a book; fans moved to a book of its own. Its move took every
    fans member out of the old book, partners' book, partners' members too."""
    shared = {"fans": {"address_book": FANS}, "partners": {"address_book": FANS, "partner": True}}
    people = [profile("ann", "ann@example.com", optin_2=True), profile("bob", "bob@example.com")]
    tables = inputs.write(people, {"fans": ["ann", "bob"], "partners": ["ann"]})
    deliver_on(sync, "2024-05-01", tables, segments=shared)

    moved = shared | {"fans": {"address_book": "AP fans 2025"}}
    deliver_on(sync, "2024-05-02", tables, segments=moved)

    assert dotdigital.members("AP fans 2025") == {"ann@example.com", "bob@example.com"}
    assert dotdigital.members(FANS) == {"ann@example.com"}


def test_full_resync_resends_everything_and_removes_strays(dotdigital, inputs, sync, tmp_path):
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    sync(tables)
    stray = tmp_path / "stray.csv"
    stray.write_text("Email\nstray@example.com\n")
    hook = DotdigitalHook(DOTDIGITAL_CONN_ID)
    stray_import = hook.import_contacts(dotdigital.book(FANS)["id"], stray)["id"]
    wait_for_imports(hook, [stray_import], poll_interval=0.01)
    sync(tables)  # a diff sync leaves what it never sent alone...
    assert dotdigital.members(FANS) == {"ann@example.com", "stray@example.com"}

    report = sync(tables, full_resync=True)  # ...a full re-sync makes the book match exactly
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert report.rows == {"added": 0, "changed": 1, "removed": 1, "rejected": 0}
    assert report.details["mode"] == "full_resync"


def test_large_segments_are_split_into_several_imports(dotdigital, inputs, sync):
    people = [profile(f"p{i:03d}", f"p{i:03d}@example.com") for i in range(60)]
    report = sync(
        inputs.write(people, {"fans": [p["profile_id"] for p in people]}),
        max_file_mb=0.002,
        max_active_imports=2,
    )
    assert len(dotdigital.imports) > 2
    assert max(len(i["text"].encode()) for i in dotdigital.imports.values()) <= 0.002 * 2**20
    assert dotdigital.members(FANS) == {p["email"] for p in people}
    assert report.rows["added"] == 60
    assert sorted(imported_emails(dotdigital)) == sorted(p["email"] for p in people)


def test_a_contact_row_over_the_import_limit_fails_saying_so(dotdigital, inputs, sync, monkeypatch):
    """No file can carry it: the sync fails, not retried, naming the segment, and imports
    nothing. (It halved its file size target for ever before.)"""
    from audience_profiles.destinations import dotdigital as module
    from audience_profiles.errors import NotRetryable

    monkeypatch.setattr(module, "MAX_IMPORT_BYTES", 40)  # an email and two names are more
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    with pytest.raises(NotRetryable, match="segment fans: one contact's row of import file"):
        sync(tables, max_file_mb=0.00001)
    assert not dotdigital.imports


# -- failure modes ----------------------------------------------------------------------------


def test_a_429_storm_waits_for_the_reset_and_completes(dotdigital, inputs, sync):
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    dotdigital.rate_limit_for(1.0)

    sync(tables)

    assert dotdigital.members(FANS) == {"ann@example.com"}
    # Honouring x-ratelimit-reset means one 429, then silence until the reset. Back-off alone
    # (0.01s base here) would have spent all attempts inside the storm and failed.
    assert len(dotdigital.rate_limited_at) == 1
    answered = [r for r in dotdigital.requests if r[2] != 429]
    assert min(r[3] for r in answered) >= dotdigital.rate_limit_until


def test_a_429_storm_outlasts_a_clock_ahead_of_dotdigitals(dotdigital, inputs, sync, monkeypatch):
    """With the worker's clock 1.5 s ahead, the retry at the reset came too early, and
    the next 429's reset, already past on this clock, was waited 0.05 s: every attempt was
    spent inside the storm and the delivery failed (DotdigitalApiError 429)."""
    import types

    import audience_profiles.hooks.dotdigital as hook_module

    real = hook_module.time
    ahead = types.SimpleNamespace(time=lambda: real.time() + 1.5, sleep=real.sleep)
    monkeypatch.setattr(hook_module, "time", ahead)
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    dotdigital.rate_limit_for(1.0)

    sync(tables, backoff_base=0.3)

    assert dotdigital.members(FANS) == {"ann@example.com"}


def test_server_errors_are_retried_with_backoff(dotdigital, inputs, sync):
    dotdigital.fail_next(3)
    sync(inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]}))
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert [r[2] for r in dotdigital.requests[:3]] == [503, 503, 503]


def test_watchdog_rejection_fails_clearly_and_the_next_run_repairs(dotdigital, inputs, sync):
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    dotdigital.watchdog = True

    with pytest.raises(DotdigitalImportFailed, match="RejectedByWatchdog"):
        sync(tables)
    assert dotdigital.members(FANS) == set()
    assert synced(sync.state_path) == set()
    assert state_rows(sync.state_path, "SELECT count(*) FROM import_rows") == [(0,)]
    status, error = state_rows(sync.state_path, "SELECT status, error FROM sync_runs")[0]
    assert status == "failed" and "RejectedByWatchdog" in error

    dotdigital.watchdog = False
    report = sync(tables)
    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert synced(sync.state_path) == {"ann@example.com"}
    assert report.rows["added"] == 1


class SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize("crash_point", ["after_import_call", "before_state_update"])
def test_a_crash_between_import_and_state_update_loses_and_doubles_nothing(
    dotdigital, inputs, sync, monkeypatch, crash_point
):
    people = [profile(p, f"{p}@example.com") for p in ("ann", "bob", "cid")]
    tables = inputs.write(people, {"fans": ["ann", "bob", "cid"]})
    real_import = DotdigitalHook.import_contacts

    def import_then_die(self, *args, **kwargs):
        real_import(self, *args, **kwargs)
        raise SimulatedCrash

    def die(*args, **kwargs):
        raise SimulatedCrash

    with monkeypatch.context() as patch:
        if crash_point == "after_import_call":
            patch.setattr(DotdigitalHook, "import_contacts", import_then_die)
        else:
            patch.setattr(SyncStateStore, "apply_import", die)
        with pytest.raises(SimulatedCrash):
            sync(tables)
    assert synced(sync.state_path) == set()  # the state never ran ahead of Dotdigital
    # Dotdigital finishes the orphaned import meanwhile: the contacts are there before the re-run.
    wait_for_imports(
        DotdigitalHook(DOTDIGITAL_CONN_ID), list(dotdigital.imports), poll_interval=0.01
    )
    assert len(dotdigital.members(FANS)) == 3

    sync(tables)
    expected = {"ann@example.com", "bob@example.com", "cid@example.com"}
    assert dotdigital.members(FANS) == expected
    assert synced(sync.state_path) == expected
    addresses = [c["email"] for c in dotdigital.contacts.values()]
    assert sorted(addresses) == sorted(expected)  # one contact each, none doubled
    assert state_rows(sync.state_path, "SELECT count(*) FROM import_rows") == [(0,)]
    # Recorded imports are finished, not re-sent; an unrecorded one is sent again (an upsert).
    assert len(dotdigital.imports) == (1 if crash_point == "before_state_update" else 2)


def test_dry_run_prints_the_diff_and_calls_nothing(dotdigital, inputs, sync, capsys):
    people = [profile(p, f"{p}@example.com") for p in ("ann", "bob")]
    sync(inputs.write(people, {"fans": ["ann", "bob"]}))
    calls_before = len(dotdigital.requests)
    state_before = state_rows(sync.state_path, "SELECT * FROM sync_state ORDER BY email")

    people.append(profile("cid", "cid@example.com"))
    people[1] = profile("bob", "bob@example.com", last_name="Builder")
    capsys.readouterr()
    report = sync(inputs.write(people, {"fans": ["bob", "cid"]}), dry_run=True)

    assert len(dotdigital.requests) == calls_before  # not a single call, read or write
    assert state_rows(sync.state_path, "SELECT * FROM sync_state ORDER BY email") == state_before
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    out = capsys.readouterr().out
    assert "+1 added, ~1 changed, -1 removed" in out
    assert "    + cid" in out and "    ~ bob" in out and "    - ann" in out
    assert "@example.com" not in out  # profile ids, not addresses, go to the logs
    assert report.rows == {"added": 1, "changed": 1, "removed": 1, "rejected": 0}
    assert state_rows(sync.state_path, "SELECT mode, status FROM sync_runs ORDER BY ds")[-1] == (
        "dry_run",
        "dry_run",
    )


# -- the hook and the trigger -----------------------------------------------------------------


def test_trigger_polls_the_import_until_it_is_terminal(dotdigital, tmp_path):
    dotdigital.polls_before_finish = 3
    book = DotdigitalHook(DOTDIGITAL_CONN_ID).ensure_address_book(FANS)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Email\nann@example.com\n")
    hook = DotdigitalHook(DOTDIGITAL_CONN_ID)
    finished = hook.import_contacts(book["id"], csv_file)["id"]
    dotdigital.watchdog = True
    rejected = hook.import_contacts(book["id"], csv_file)["id"]

    trigger = DotdigitalImportTrigger(
        DOTDIGITAL_CONN_ID, [finished, rejected], poll_interval=0.01, max_attempts=3
    )
    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    revived = getattr(importlib.import_module(module), name)(**kwargs)
    assert (revived.max_attempts, revived.backoff_base, revived.max_rate_limit_wait) == (3, 1, 900)

    async def first_event():
        return await anext(revived.run())

    event = asyncio.run(first_event())
    assert event.payload == {
        "status": "done",
        "imports": {finished: "Finished", rejected: "RejectedByWatchdog"},
    }
    polls = [r for r in dotdigital.requests if r[1] == f"/v2/contacts/import/{finished}"]
    assert len(polls) == 4  # three NotFinished answers, then Finished


def test_trigger_reports_a_timeout(dotdigital, tmp_path):
    dotdigital.polls_before_finish = 10_000
    hook = DotdigitalHook(DOTDIGITAL_CONN_ID)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Email\nann@example.com\n")
    import_id = hook.import_contacts(hook.ensure_address_book(FANS)["id"], csv_file)["id"]
    trigger = DotdigitalImportTrigger(
        DOTDIGITAL_CONN_ID, [import_id], poll_interval=0.01, timeout=0.05
    )
    event = asyncio.run(anext(trigger.run()))
    assert event.payload["status"] == "timeout"
    assert import_id in event.payload["message"]


def test_trigger_retries_with_the_destinations_settings(dotdigital, tmp_path):
    hook = DotdigitalHook(DOTDIGITAL_CONN_ID)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Email\nann@example.com\n")
    import_id = hook.import_contacts(hook.ensure_address_book(FANS)["id"], csv_file)["id"]

    def first_event(**retry):
        trigger = DotdigitalImportTrigger(DOTDIGITAL_CONN_ID, [import_id], 0.01, **retry)
        return asyncio.run(anext(trigger.run())).payload

    dotdigital.fail_next(2)
    assert first_event(max_attempts=2, backoff_base=0.01)["status"] == "error"
    dotdigital.fail_next(2)
    assert first_event(max_attempts=3, backoff_base=0.01)["status"] == "done"


def test_deferred_delivery_waits_on_the_trigger_then_finishes(dotdigital, inputs, sync):
    people = [profile(f"p{i:02d}", f"p{i:02d}@example.com") for i in range(8)]
    tables = inputs.write(people, {"fans": [p["profile_id"] for p in people]})
    options = {"defer_imports": True, "max_file_mb": 0.001, "max_active_imports": 2}

    sent = 0  # requests before the round
    reports = [sync(tables, **options)]
    while pending := reports[-1].details["pending_imports"]:
        assert len(pending) <= 2
        assert synced(sync.state_path) <= {p["email"] for p in people}
        # consent records and removals wait for the last round (docs/activation.md)
        assert not [r[:2] for r in dotdigital.requests[sent:] if r[0] == "PATCH"]
        sent = len(dotdigital.requests)
        event = asyncio.run(anext(DotdigitalImportTrigger(DOTDIGITAL_CONN_ID, pending, 0.01).run()))
        assert set(event.payload["imports"].values()) == {"Finished"}
        reports.append(sync(tables, **options))

    # The segment needs more files than may be active at once, so at least one deferral happens;
    # how many depends on how fast the stand-in finishes imports, so it is not pinned here.
    assert len(reports) >= 2
    assert dotdigital.members(FANS) == {p["email"] for p in people}
    assert synced(sync.state_path) == {p["email"] for p in people}
    assert sum(r.rows["added"] for r in reports) == 8
    consent = [r for r in dotdigital.requests[sent:] if r[0] == "PATCH"]
    assert len(consent) == 8  # the last round sends each opted-in member's record
    statuses = [
        r[0] for r in state_rows(sync.state_path, "SELECT status FROM sync_runs ORDER BY ds")
    ]
    assert statuses == ["pending"] * (len(reports) - 1) + ["success"]


def test_runs_of_one_destination_cannot_overlap(tmp_path):
    path = tmp_path / "state.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StateLockedError, match="must not overlap"):
            SyncStateStore(path)
    finally:
        holder.kill()
        holder.wait()


def test_hook_errors_filename_rule_credentials_and_no_addresses_in_messages(
    dotdigital, monkeypatch
):
    hook = DotdigitalHook(DOTDIGITAL_CONN_ID)
    book = hook.ensure_address_book(FANS)
    with pytest.raises(DotdigitalApiError, match="file must be valid") as err:
        hook.request(
            "POST",
            f"/v2/address-books/{book['id']}/contacts/import",
            files={"file": (None, b"Email\nann@example.com\n", "text/csv")},
        )
    assert err.value.status == 400

    with pytest.raises(DotdigitalApiError) as err:
        hook.add_consent_records("fan.name@example.c", [{"text": CONSENT_TEXT}])
    assert err.value.status == 400
    assert "fan.name" not in str(err.value) and "<email>" in str(err.value)  # no PII in logs

    connection = json.loads(os.environ[f"AIRFLOW_CONN_{DOTDIGITAL_CONN_ID.upper()}"])
    connection["password"] = "wrong"
    monkeypatch.setenv(f"AIRFLOW_CONN_{DOTDIGITAL_CONN_ID.upper()}", json.dumps(connection))
    with pytest.raises(DotdigitalApiError) as err:
        DotdigitalHook(DOTDIGITAL_CONN_ID).list_address_books()
    assert err.value.status == 401


def test_an_unreachable_api_never_logs_a_contact_address(monkeypatch, capfd, caplog):
    """The v3 contact calls carry the address in their path; a connection error's text holds it."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_DD_CLOSED",
        json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{closed}", "login": "u"}),
    )
    hook = DotdigitalHook("dd_closed", max_attempts=2, backoff_base=0.01)
    with caplog.at_level("DEBUG"), pytest.raises(DotdigitalApiError) as err:
        hook.add_consent_records("jane.doe@example.com", [{"text": "t"}])
    assert err.value.status is None
    logged = caplog.text + "".join(capfd.readouterr())
    assert "connection error, retrying" in logged  # the hook's own, redacted warning
    assert "jane.doe" not in logged + str(err.value)
    # a failed task logs its traceback with every chained error's text: none is chained
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"segments": {}}, "segments must map"),
        ({"data_fields": {"team": "answers.Team"}}, "upper case"),
        ({"max_active_imports": 30}, "max_active_imports"),
        ({"max_file_mb": 60}, "below 47.6"),
        ({"max_file_mb": 48}, r"below 47\.6 \(MiB: Dotdigital's import limit is 50 MB\)"),
        ({"full_resync": "maybe"}, "true or false"),
        ({"data_fields": {"SCORE": "score"}}, "not a profile column"),
        ({"segments": {"fans": {"consent_column": "optin_9"}}}, "optin_9"),
        # typos one level down: the book would be named after the segment, consent sent bare
        (
            {"segments": {"fans": {"adress_book": "AP - fans"}}},
            r"segments\.fans\.adress_book: unknown key .*did you mean 'address_book'",
        ),
        ({"consent": {"txt": "Yes please"}}, r"consent\.txt: unknown key .*did you mean 'text'"),
        ({"segments": {"fans": "AP - fans"}}, "segments.fans must be a mapping"),
        # ignored, names would go out under a setting that says to withhold them
        ({"pii": "omit"}, "pii: 'omit' cannot apply to Dotdigital"),
        ({"pii": "hashed"}, "pii: 'hashed' cannot apply to Dotdigital"),
    ],
)
def test_configuration_mistakes_name_the_option(dotdigital, inputs, sync, options, message):
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    with pytest.raises(ConfigError, match=message):
        sync(tables, **options)
    assert dotdigital.calls("POST") == []


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"full_resync": "yes"}, "full_resync must be true or false (unquoted), not 'yes'"),
        ({"dry_run": "false"}, "dry_run must be true or false (unquoted), not 'false'"),
        ({"defer_imports": 1}, "defer_imports must be true or false (unquoted), not 1"),
        ({"dry_run": None}, "dry_run must be true or false (unquoted), not None"),
        (
            {"segments": {"fans": {"partner": "on"}}},
            "segments.fans: partner must be true or false (unquoted), not 'on'",
        ),
    ],
)
def test_yes_no_options_are_a_bare_true_or_false(options, said):
    # as config._flag reads every other yes/no: 'no', 'off' and '0' were read here as false
    from audience_profiles.destinations.dotdigital import DotdigitalOptions

    entry = {"name": "dd", "kind": "dotdigital", "conn_id": "d", "segments": {"fans": {}}}
    config = parse_config(
        {"start_date": "2024-01-01", "landing_root": "x", "destinations": [entry | options]},
        "p.yml",
    )
    with pytest.raises(ConfigError) as err:
        DotdigitalOptions.from_config(config.destinations[0], config)
    assert str(err.value) == f"p.yml: destination 'dd': {said}"
    flags = {"full_resync": True, "dry_run": False, "defer_imports": True}
    config = parse_config({**config.raw, "destinations": [entry | flags]}, "p.yml")
    read = DotdigitalOptions.from_config(config.destinations[0], config)
    assert (read.full_resync, read.dry_run, read.defer_imports) == (True, False, True)


def test_a_number_option_left_null_takes_its_default():
    """pipeline.yml's load passes a null number as left out (max_file_mb already read it so);
    the others failed here with a bare TypeError (float(None)) in wait_for_landing."""
    from audience_profiles.destinations.dotdigital import DotdigitalOptions

    numbers = {
        "max_file_mb": 20.0,
        "max_active_imports": 10,
        "poll_interval": 10.0,
        "import_timeout": 3600.0,
        "max_attempts": 6,
        "backoff_base": 1.0,
        "max_rate_limit_wait": 900.0,
    }
    entry = {"name": "dd", "kind": "dotdigital", "conn_id": "d", "segments": {"fans": {}}}
    raw = {"start_date": "2024-01-01", "landing_root": "x"}
    nulls = dict.fromkeys(numbers)
    config = parse_config({**raw, "destinations": [entry | nulls]}, "p.yml")
    read = DotdigitalOptions.from_config(config.destinations[0], config)
    assert {key: getattr(read, key) for key in numbers} == numbers


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (
            {"segments": {"fans": {"consent_column": "optin_3"}}},
            "segments.fans.consent_column: 'optin_3' is not a yes/no column of audience_profiles "
            "(accept_terms, optin_1, optin_2)",
        ),
        (
            {"consent": {"partner_column": "optin_two"}},
            "consent.partner_column: 'optin_two' is not a yes/no column of audience_profiles",
        ),
        # a column, but not a yes/no one: the sync's IS TRUE failed on the first address
        ({"consent": {"column": "email"}}, "consent.column: 'email' is not a yes/no column"),
        (
            {"data_fields": {"TEAM": "favourite_team"}},
            "data_fields.TEAM: 'favourite_team' is neither an audience_profiles column "
            "(accept_terms, ",
        ),
    ],
)
def test_profile_columns_are_checked_before_the_build(options, said):
    # Found by the delivery, after the whole build; wait_for_landing calls the check.
    from audience_profiles.destinations.dotdigital import check_profile_columns

    entry = {"name": "dd", "kind": "dotdigital", "conn_id": "d", "segments": {"fans": {}}}
    config = parse_config(
        {"start_date": "2024-01-01", "landing_root": "x", "destinations": [entry | options]},
        "p.yml",
    )
    with pytest.raises(ConfigError) as err:
        check_profile_columns(config.destinations[0], config)
    assert str(err.value).startswith(f"p.yml: destination 'dd': {said}")
    good = {
        "consent": {"column": "accept_terms", "partner_column": "optin_1"},
        "segments": {"fans": {"consent_column": "optin_2"}},
        "data_fields": {"TEAM": "answers.Which team?", "SEEN": "last_seen"},
    }
    config = parse_config({**config.raw, "destinations": [entry | good]}, "p.yml")
    check_profile_columns(config.destinations[0], config)


def test_region_and_retry_headers():
    assert api_base_url(None, None, None, {"region": "r2"}) == "https://r2-api.dotdigital.com"
    assert api_base_url("http://127.0.0.1", None, 8080, {"region": "r1"}) == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="region"):
        api_base_url(None, None, None, {"region": "eu-west"})
    assert retry_wait(429, {"Retry-After": "7"}, 1, 1.0) == 7.0
    assert retry_wait(429, {"Retry-After": "1.5"}, 1, 1.0) == 1.5
    assert 9 < retry_wait(429, {"x-ratelimit-reset": "10"}, 1, 1.0) < 11
    soon = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    assert 25 < retry_wait(429, {"Retry-After": soon}, 1, 1.0) <= 30
    # A reset already past (the clocks disagree: it still answered 429) backs off.
    past = str(int(time.time()) - 5)
    assert 0.5 <= retry_wait(429, {"x-ratelimit-reset": past}, 2, 1.0) <= 2.0
    # A date without a zone ("-0000") is UTC, not a crash comparing naive and aware times.
    assert retry_wait(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, 1, 1.0) == 0.0
    # Neither a number nor a date: back off as for a 5xx instead of failing on the header.
    for junk in ({"Retry-After": "soon"}, {"x-ratelimit-reset": "n/a"}, {"Retry-After": "nan"}):
        assert 0.5 <= retry_wait(429, junk, 2, 1.0) <= 2.0
    # An unreadable reset falls back to Retry-After.
    assert retry_wait(429, {"x-ratelimit-reset": "later", "Retry-After": "3"}, 1, 1.0) == 3.0
    assert retry_wait(400, {}, 1, 1.0) is None
    assert 0.5 <= retry_wait(503, {}, 2, 1.0) <= 2.0


def test_state_file_is_separate_from_the_warehouse(tmp_path, inputs, dotdigital):
    """The default state path is under work_dir/state, named after the destination."""
    pipeline = parse_config(
        {
            "start_date": "2024-05-01",
            "landing_root": str(tmp_path / "landing"),
            "work_dir": str(tmp_path / "work"),
            "destinations": [
                {
                    "name": "dd_main",
                    "kind": "dotdigital",
                    "conn_id": DOTDIGITAL_CONN_ID,
                    "segments": {"fans": {"address_book": FANS}},
                    "poll_interval": 0.01,
                }
            ],
        }
    )
    destination = destination_for(pipeline.destination("dd_main"), pipeline)
    tables = inputs.write([profile("ann", "ann@example.com")], {"fans": ["ann"]})
    report = destination.deliver(RunInfo(ds="2024-05-01", run_id="r1"), tables)
    state_path = tmp_path / "work" / "state" / "dd_main.duckdb"
    assert report.details["state_path"] == str(state_path)
    with duckdb.connect(str(state_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM sync_state").fetchone() == (1,)


# -- erasure ----------------------------------------------------------------------------------


def test_erasure_takes_people_out_of_every_address_book_and_the_state(dotdigital, inputs, sync):
    people = [profile(f"p{i:02d}", f"p{i:02d}@example.com", optin_2=True) for i in range(4)]
    ids = [p["profile_id"] for p in people]
    sync(inputs.write(people, {"fans": ids, "partners": ids[:2]}))
    assert dotdigital.members(PARTNERS) == {"p00@example.com", "p01@example.com"}
    requests = [
        # By profile: the state knows its address.
        ErasureRequest("r-1", "2024-05-02 10:00:00", ("p00",), (("session_id", "s-0"),)),
        # By address only (no profile was resolved).
        ErasureRequest("r-2", "2024-05-02 10:00:00", (), (("email", "p02@example.com"),)),
    ]

    statuses = sync.destination().erase(requests)

    assert statuses == {
        "r-1": {"status": "done", "detail": "removed from 2 address book membership(s)"},
        "r-2": {"status": "done", "detail": "removed from 1 address book membership(s)"},
    }
    assert dotdigital.members(FANS) == {"p01@example.com", "p03@example.com"}
    assert dotdigital.members(PARTNERS) == {"p01@example.com"}
    assert synced(sync.state_path) == {"p01@example.com", "p03@example.com"}
    # Erasing again finds nothing to remove.
    assert sync.destination().erase(requests[:1])["r-1"]["detail"].startswith("removed from 0")
    # The next sync (exports without them, as suppression leaves them out) changes nothing else.
    report = sync(
        inputs.write(people[1:2] + people[3:], {"fans": ["p01", "p03"], "partners": ["p01"]})
    )
    assert report.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}


def test_erasure_waits_for_an_unconfirmed_import_of_the_person(dotdigital, inputs, sync):
    people = [profile("p00", "p00@example.com")]
    tables = inputs.write(people, {"fans": ["p00"]})
    pending = sync(tables, defer_imports=True).details["pending_imports"]
    assert pending
    request = ErasureRequest("r-1", "2024-05-02 10:00:00", ("p00",), ())

    first = sync.destination(defer_imports=True).erase([request])
    sync(tables)  # the next delivery confirms the import
    second = sync.destination().erase([request])

    assert first["r-1"]["status"] == "failed"
    assert second["r-1"] == {
        "status": "done",
        "detail": "removed from 1 address book membership(s)",
    }
    assert dotdigital.members(FANS) == set()


def test_a_renamed_book_is_emptied_once_its_members_are_confirmed_in_the_new_one(
    dotdigital, inputs, sync
):
    """The old book kept every member for good: a fan who opted out in the run of the rename,
    and everyone erased later, stayed in a book marketing may still mail."""
    renamed = {"fans": {"address_book": "AP fans 2025"}}
    people = [profile("ann", "ann@example.com"), profile("bob", "bob@example.com")]
    deliver_on(sync, "2024-05-01", inputs.write(people, {"fans": ["ann", "bob"]}))
    people[0] = profile("ann", "ann@example.com", optin_1=False)  # in the run of the rename
    tables = inputs.write(people, {"fans": ["ann", "bob"]})

    report = deliver_on(sync, "2024-05-02", tables, defer_imports=True, segments=renamed)
    # Bob's import into the new book is not confirmed yet: he stays in the old one till it is.
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    wait_for_imports(
        DotdigitalHook(DOTDIGITAL_CONN_ID), report.details["pending_imports"], poll_interval=0.01
    )
    report = deliver_on(sync, "2024-05-02", tables, defer_imports=True, segments=renamed)

    assert dotdigital.members("AP fans 2025") == {"bob@example.com"}
    assert dotdigital.members(FANS) == set()
    # Ann left the segment, from the book she was recorded in; Bob's move is not a removal.
    assert report.rows["removed"] == 1
    assert state_rows(sync.state_path, "SELECT count(*) FROM retired_address_books") == [(0,)]


def test_a_renamed_book_is_kept_while_a_member_waits_in_it(dotdigital, inputs, sync):
    renamed = {"fans": {"address_book": "AP fans 2025"}}
    people = [profile("ann", "ann@example.com"), profile("bob", "bob@example.com")]
    tables = inputs.write(people, {"fans": ["ann", "bob"]})
    deliver_on(sync, "2024-05-01", tables)
    dotdigital.fault_emails = {"ann@example.com": "Failures"}  # her move is refused this time

    deliver_on(sync, "2024-05-02", tables, segments=renamed)
    assert dotdigital.members(FANS) == {"ann@example.com"}  # Bob moved, Ann waits
    assert state_rows(sync.state_path, "SELECT count(*) FROM retired_address_books") == [(1,)]

    request = ErasureRequest("r-1", "2024-05-03 10:00:00", (), (("email", "ann@example.com"),))
    assert sync.destination(segments=renamed).erase([request])["r-1"]["status"] == "done"
    assert dotdigital.members(FANS) == set()


def test_a_book_deleted_in_dotdigital_is_made_again_and_filled(dotdigital, inputs, sync):
    """The deleted book's id was retired and every later sync failed listing its members
    (404 ERROR_ADDRESSBOOK_NOT_FOUND), for good: no member was synced again."""
    people = [profile("ann", "ann@example.com"), profile("bob", "bob@example.com")]
    deliver_on(sync, "2024-05-01", inputs.write(people, {"fans": ["ann", "bob"]}))
    with dotdigital.lock:
        del dotdigital.address_books[dotdigital.book(FANS)["id"]]

    report = deliver_on(sync, "2024-05-02", inputs.write(people, {"fans": ["ann"]}))

    assert dotdigital.members(FANS) == {"ann@example.com"}
    assert synced(sync.state_path) == {"ann@example.com"}
    assert report.rows["removed"] == 0
    assert state_rows(sync.state_path, "SELECT count(*) FROM retired_address_books") == [(0,)]


def test_erasure_clears_books_of_dropped_segments_and_renamed_books(dotdigital, inputs, sync):
    people = [profile(f"p{i:02d}", f"p{i:02d}@example.com", optin_2=True) for i in range(3)]
    ids = [p["profile_id"] for p in people]
    sync(inputs.write(people, {"fans": ids, "partners": ids}))
    # The partners segment left pipeline.yml and the fans book was renamed since.
    dest = sync.destination(segments={"fans": {"address_book": "AP fans 2025"}})

    statuses = dest.erase(
        [
            ErasureRequest("r-1", "2024-05-02 10:00:00", ("p00",), ()),
            # By address only: sync_state knows which books it was sent to.
            ErasureRequest("r-2", "2024-05-02 10:00:00", (), (("email", "p01@example.com"),)),
        ]
    )

    assert statuses == {
        "r-1": {"status": "done", "detail": "removed from 2 address book membership(s)"},
        "r-2": {"status": "done", "detail": "removed from 2 address book membership(s)"},
    }
    assert dotdigital.members(FANS) == {"p02@example.com"}
    assert dotdigital.members(PARTNERS) == {"p02@example.com"}
    assert synced(sync.state_path, "fans") == {"p02@example.com"}
    assert synced(sync.state_path, "partners") == {"p02@example.com"}


def test_an_import_in_flight_fails_only_its_own_erasure(dotdigital, inputs, sync):
    p00, p01 = profile("p00", "p00@example.com"), profile("p01", "p01@example.com")
    sync(inputs.write([p01], {"fans": ["p01"]}))
    tables = inputs.write([p00, p01], {"fans": ["p00", "p01"]})
    assert sync(tables, defer_imports=True).details["pending_imports"]  # p00 in flight
    requests = [
        ErasureRequest("r-1", "2024-05-02 10:00:00", ("p01",), ()),
        ErasureRequest("r-2", "2024-05-02 10:00:00", ("p00",), ()),
    ]

    statuses = sync.destination(defer_imports=True).erase(requests)

    assert statuses["r-1"] == {
        "status": "done",
        "detail": "removed from 1 address book membership(s)",
    }
    assert statuses["r-2"]["status"] == "failed"
    assert "unconfirmed import" in statuses["r-2"]["detail"]
    assert "p01@example.com" not in dotdigital.members(FANS)
    assert "p01@example.com" not in synced(sync.state_path)


def test_a_dry_run_destination_skips_erasure(dotdigital, sync):
    request = ErasureRequest("r-1", "2024-05-02 10:00:00", ("p00",), ())
    assert sync.destination(dry_run=True).erase([request])["r-1"]["status"] == "skipped"
    assert dotdigital.calls() == []


def test_the_sync_state_is_bounded_as_every_delivery_side_duckdb(tmp_path):
    # Unbounded, it could take 80% of the worker's memory beside the warehouse and deliveries.
    with SyncStateStore(tmp_path / "state.duckdb") as store:
        (limit,) = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit == "488.2 MiB"  # DELIVERY_MEMORY_LIMIT, 512MB


def test_the_triggerer_sends_the_credentials_as_the_workers_do(monkeypatch):
    """The worker's calls (requests) encode basic auth as Latin-1, as aiohttp.BasicAuth did: the
    triggerer's header must too, or a password with an accented letter works on the worker and
    fails every poll of a deferred import with 401."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers["Authorization"])
            body = json.dumps({"id": "i-1", "status": "Finished"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = {
            "conn_type": "http",
            "host": f"http://127.0.0.1:{server.server_address[1]}",
            "login": "apiuser-1@apiconnector.com",
            "password": "Pässwörd1",
        }
        monkeypatch.setenv("AIRFLOW_CONN_DD_LATIN", json.dumps(connection))
        hook = DotdigitalHook("dd_latin")
        assert hook.get_import_status("i-1") == "Finished"
        assert asyncio.run(hook.aget_import_statuses(["i-1"])) == {"i-1": "Finished"}
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 2 and seen[0] == seen[1], seen


def test_a_segment_dropped_from_the_config_is_taken_out_of_its_book(
    dotdigital, inputs, sync, capsys
):
    """Partners left pipeline.yml (its segment removed from segments.yml, or no longer synced):
    its book kept every member for good, Ann who withdrew her partner opt-in since included,
    and no later run took anyone out. A member another segment still syncs to that book stays.
    """
    shared = {
        "fans": {"address_book": FANS},
        "partners": {"address_book": PARTNERS, "partner": True},
        "vips": {"address_book": PARTNERS, "partner": True},
    }
    people = [
        profile("ann", "ann@example.com", optin_2=True),
        profile("bob", "bob@example.com", optin_2=True),
    ]
    day1 = inputs.write(people, {"fans": ["ann", "bob"], "partners": ["ann", "bob"], "vips": []})
    deliver_on(sync, "2024-05-01", day1, segments=shared)
    assert dotdigital.members(PARTNERS) == {"ann@example.com", "bob@example.com"}

    people[0] = profile("ann", "ann@example.com", optin_2=False)
    remaining = {"fans": shared["fans"], "vips": shared["vips"]}
    day2 = inputs.write(people, {"fans": ["ann", "bob"], "vips": ["bob"]})
    capsys.readouterr()
    deliver_on(sync, "2024-05-02", day2, segments=remaining, dry_run=True)
    assert dotdigital.members(PARTNERS) == {"ann@example.com", "bob@example.com"}
    assert "  segment partners (no longer synced): -1 removed\n    - ann\n" in (
        capsys.readouterr().out
    )
    report = deliver_on(sync, "2024-05-02", day2, segments=remaining)

    assert dotdigital.members(PARTNERS) == {"bob@example.com"}  # vips still wants Bob
    assert dotdigital.members(FANS) == {"ann@example.com", "bob@example.com"}
    assert report.details["segments"]["partners"]["removed"] == 1
    assert synced(sync.state_path, "partners") == set()
    assert state_rows(
        sync.state_path, "SELECT count(*) FROM address_books WHERE segment_id = 'partners'"
    ) == [(0,)]


# -- personal data in errors ------------------------------------------------------------------

ZEB = "zeb.fan@example.com"
ZEB_VALUES = ("zebedee", "crm-77812", "zeb.fan")  # a name, an external id, an address
WITH_EXTERNAL_ID = {"data_fields": {"EXTERNALID": "external_id", "TEAM": "answers.Favourite team"}}


def zeb(**extra) -> dict:
    return profile("zeb", ZEB, first_name="Zebedee", external_id="CRM-77812", **extra)


def assert_unnamed(*texts: str) -> None:
    """None of Zeb's values in any of ``texts`` (the task log is read at INFO, its level: at
    DEBUG urllib3 logs every request line, a v3 call's address in its path included)."""
    for text in texts:
        assert not [v for v in ZEB_VALUES if v in text.lower()], text


def test_an_import_refused_quoting_its_row_names_no_one_in_the_state_log_or_error(
    dotdigital, inputs, sync, caplog
):
    """Dotdigital's answer quotes the row it refuses (the stand-in: every column of it); the
    hook takes out addresses only: the name and external id went to sync_runs and the task log."""
    dotdigital.refuse(r"POST /v2/address-books/\d+/contacts/import")
    with caplog.at_level("INFO"), pytest.raises(DotdigitalApiError) as err:
        sync(inputs.write([zeb()], {"fans": ["zeb"]}), **WITH_EXTERNAL_ID)

    (error,) = state_rows(sync.state_path, "SELECT error FROM sync_runs")[0]
    assert_unnamed(error, str(err.value), err.value.message, caplog.text)
    assert "FIRSTNAME=<FIRSTNAME>; LASTNAME=<LASTNAME>" in error  # still says what was refused
    assert "EXTERNALID=<EXTERNALID>" in error and "Email=<email>" in error
    assert err.value.status == 400 and str(err.value) == error


def test_an_import_report_refused_quoting_its_row_names_no_one_in_the_state_log_or_error(
    dotdigital, inputs, sync, caplog
):
    """The import went; reading what it did fails with an answer quoting its row."""
    dotdigital.refuse(r"GET /v2/contacts/import/[0-9a-f-]+/report-faults")
    with caplog.at_level("INFO"), pytest.raises(DotdigitalApiError) as err:
        sync(inputs.write([zeb()], {"fans": ["zeb"]}), **WITH_EXTERNAL_ID)

    (error,) = state_rows(sync.state_path, "SELECT error FROM sync_runs")[0]
    assert_unnamed(error, str(err.value), caplog.text)
    assert "FIRSTNAME=<FIRSTNAME>" in error and "EXTERNALID=<EXTERNALID>" in error
    assert state_rows(sync.state_path, "SELECT count(*) FROM import_rows") == [(1,)]  # kept


def test_a_consent_record_refused_quoting_the_contact_names_no_one_in_the_reasons(
    dotdigital, inputs, sync, caplog
):
    """A refused record is counted by Dotdigital's message (report, sync_runs.reasons, the
    task's warning): the answer quotes the contact's fields as the account holds them."""
    dotdigital.refuse(r"PATCH /contacts/v3/email/.+")
    with caplog.at_level("INFO"):
        report = sync(inputs.write([zeb()], {"fans": ["zeb"]}), **WITH_EXTERNAL_ID)

    (reasons,) = state_rows(sync.state_path, "SELECT reasons FROM sync_runs")[0]
    assert_unnamed(reasons, json.dumps(report.details["reasons"]), caplog.text)
    (reason,) = [r for r in report.details["reasons"] if r.startswith("consent record")]
    assert "'FIRSTNAME': '<FIRSTNAME>'" in reason and "<EXTERNALID>" in reason


def test_a_removal_refused_quoting_the_contact_names_no_one_nor_its_contact_id(
    dotdigital, inputs, sync, caplog
):
    sync(inputs.write([zeb(), profile("ann", "ann@example.com")], {"fans": ["zeb", "ann"]}))
    contact_id = str(dotdigital.contact(ZEB)["id"])
    dotdigital.refuse(r"POST /v2/address-books/\d+/contacts/delete")
    with caplog.at_level("INFO"), pytest.raises(DotdigitalApiError) as err:
        sync(inputs.write([zeb(), profile("ann", "ann@example.com")], {"fans": ["ann"]}))

    (error,) = state_rows(sync.state_path, "SELECT error FROM sync_runs WHERE status = 'failed'")[0]
    assert_unnamed(error, str(err.value), caplog.text)
    assert contact_id not in error + str(err.value)
    assert "contact <contact_id> (<email>, {'FIRSTNAME': '<FIRSTNAME>'" in error
    assert dotdigital.members(FANS) == {"ann@example.com", ZEB}  # and the next run tries again


def test_an_error_not_from_dotdigital_is_stored_and_raised_without_addresses(
    dotdigital, inputs, sync
):
    """DuckDB quotes the answers it cannot read (a profile's own words): no longer raw in
    sync_runs, nor in the error the task log and alert show."""
    broken = zeb(answers="not json, write to zeb.fan@example.com")
    with pytest.raises(duckdb.Error) as err:
        sync(inputs.write([broken], {"fans": ["zeb"]}))

    (error,) = state_rows(sync.state_path, "SELECT error FROM sync_runs")[0]
    assert "zeb.fan" not in error + str(err.value)
    assert "Malformed JSON" in error and "<email>" in error


def test_an_error_whose_text_cannot_be_edited_is_raised_as_a_redacted_copy():
    """An OSError's text comes from its parts, not its args: a redacted copy goes instead."""
    from audience_profiles.destinations.dotdigital import DotdigitalDeliveryError, redacted
    from audience_profiles.errors import NotRetryable

    class Unreadable(NotRetryable, OSError):
        pass

    known = [("FIRSTNAME", "Zebedee")]
    error = redacted(Unreadable(2, "No such file", "/tmp/zebedee.csv"), known)
    assert isinstance(error, DotdigitalDeliveryError) and isinstance(error, NotRetryable)
    assert str(error) == "Unreadable: [Errno 2] No such file: '/tmp/<FIRSTNAME>.csv'"

    try:
        try:
            raise KeyError("Zebedee")
        except KeyError:
            raise ValueError("no row") from None
    except ValueError as exc:
        raised = exc
    assert redacted(raised, known) is raised and raised.__context__ is None  # it quoted them
