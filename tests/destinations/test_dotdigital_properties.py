"""Properties of the Dotdigital diff sync, against the stand-in API (docs/activation.md).

Hypothesis draws a few run dates, each with its profiles (addresses that change, change case
or go missing; names and answers that change; opt-ins yes, no or never asked), the members of
one or two segments and, now and then, someone who unsubscribes in Dotdigital. After every
date's sync each address book holds exactly that date's members who opted in, have an address
and are not suppressed, keyed by the normalised address; their contacts hold that date's data
fields and one consent record per opt-in and wording; no import ever carried anyone who was
not then an opted-in member of its book's segment, no consent record went to anyone who was not
one of some segment; and delivering the same date again sends nothing. Some examples sync
with `defer_imports: true` and one or two active imports at a time: each date is delivered
again, after its imports finish, until nothing is pending; no round but the last removes anyone
or sends consent records, no round adds to a book anyone who had not opted in, and the last
round leaves the same end state. A second property fails one date's sync midway (5xx, 429 past
the wait limit, or the watchdog) and checks that the next sync, a retry or the next date,
converges the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_profiles.destinations.dotdigital import DotdigitalImportFailed
from audience_profiles.hooks.dotdigital import DotdigitalApiError
from audience_profiles.privacy import normalise_identifier
from audience_profiles.triggers.dotdigital import DotdigitalImportTrigger
from tests.destinations import test_dotdigital
from tests.destinations.test_dotdigital import (
    CONSENT_TEXT,
    FANS,
    PARTNER_TEXT,
    PARTNERS,
    deliver_on,
    profile,
)
from tests.services.dotdigital_standin import DOTDIGITAL_CONN_ID

pytestmark = pytest.mark.services


# test_dotdigital.py's fixtures, used here under the same names.
inputs, sync = test_dotdigital.inputs, test_dotdigital.sync


PIDS = ("ann", "bob", "cid", "dan", "eve")
SEEN = (dt.datetime(2024, 5, 1, 12, 30), dt.datetime(2024, 5, 2, 8, 0))
OPTED_AT = (dt.datetime(2024, 4, 1, 9, 0), dt.datetime(2024, 4, 20, 18, 15))
# Fast retries: a failing call fails the sync within a second.
FAST = {"max_attempts": 2, "backoff_base": 0.01, "max_rate_limit_wait": 1}
# Few examples: each is several syncs over HTTP (the file runs in about 20 s). The fixtures are
# the test's, not the example's: every example resets the stand-in and has a state file of its own.
PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def addresses(pid: str):
    """A profile's address on one date: its usual one, the same in other case or padded, a new
    one, or none (blank or missing)."""
    usual = f"{pid}@example.com"
    return st.sampled_from(
        [usual, usual, usual.upper(), f" {pid.title()}@Example.com\t", f"{pid}.new@example.com"]
        + [None, "  "]
    )


@st.composite
def profile_on_a_date(draw, pid: str) -> dict:
    optin_1 = draw(st.sampled_from([True, True, False, None]))
    optin_2 = draw(st.sampled_from([True, False, None]))
    answers = draw(st.sampled_from([{"Favourite team": "Reds"}, {"Favourite team": "Blues"}, {}]))
    return profile(
        pid,
        draw(addresses(pid)),
        optin_1=optin_1,
        optin_2=optin_2,
        first_name=draw(st.sampled_from([pid.upper(), pid.title()])),
        last_seen=draw(st.sampled_from(SEEN)),
        answers=json.dumps(answers),
        optin_1_at=draw(st.sampled_from(OPTED_AT)) if optin_1 else None,
        optin_2_at=draw(st.sampled_from(OPTED_AT)) if optin_2 else None,
    )


@st.composite
def a_date(
    draw, pids: list[str], segments: list[str]
) -> tuple[list[dict], dict[str, list], str | None]:
    profiles = [draw(profile_on_a_date(pid)) for pid in pids]
    members = {seg: sorted(draw(st.sets(st.sampled_from(pids)))) for seg in segments}
    # Now and then someone unsubscribes in Dotdigital before the date's sync.
    unsubscribes = draw(st.sampled_from([None, None, None, *pids]))
    return profiles, members, unsubscribes and f"{unsubscribes}@example.com"


@st.composite
def histories(draw) -> tuple[list[str], list[tuple[list[dict], dict[str, list], str | None]]]:
    segments = ["fans", "partners"][: draw(st.integers(1, 2))]
    pids = sorted(draw(st.sets(st.sampled_from(PIDS), min_size=1, max_size=len(PIDS))))
    dates = draw(st.lists(a_date(pids, segments), min_size=2, max_size=5))
    return segments, dates


BOOKS = {"fans": FANS, "partners": PARTNERS}
CONSENT = {"fans": "optin_1", "partners": "optin_2"}
TEXT = {"fans": CONSENT_TEXT, "partners": PARTNER_TEXT}


def wanted(
    profiles: list[dict], members: dict[str, list], suppressed: set[str]
) -> dict[str, dict[str, dict]]:
    """segment -> normalised address -> profile, as the docs define who may be mailed."""
    by_pid = {p["profile_id"]: p for p in profiles}
    out: dict[str, dict[str, dict]] = {}
    for seg, pids in members.items():
        out[seg] = {}
        for pid in pids:
            p = by_pid[pid]
            address = normalise_identifier(p["email"])
            if address and p[CONSENT[seg]] is True and address not in suppressed:
                out[seg][address] = p
    return out


def data_fields(p: dict) -> dict:
    return {
        "FIRSTNAME": p["first_name"],
        "LASTNAME": p["last_name"],
        "TEAM": json.loads(p["answers"]).get("Favourite team"),
        "LASTINTERACTION": p["last_seen"].strftime("%Y-%m-%dT%H:%M:%S"),
    }


def book_of(standin, book_id: int) -> str:
    return standin.address_books[book_id]["name"]


def sent_since(standin, imports_before: set[str], requests_before: int):
    """(book name, address) of every row imported, and every consent record's address, since."""
    rows = []
    for import_id, job in standin.imports.items():
        if import_id not in imports_before:
            for line in job["text"].splitlines()[1:]:
                rows.append((book_of(standin, job["book"]), line.split(",")[0]))
    patched = [
        m[1]
        for method, path, status, _ in standin.requests[requests_before:]
        if method == "PATCH" and (m := re.fullmatch(r"/contacts/v3/email/(.+)", path))
    ]
    return rows, patched


def check_converged(standin, segments: list[str], want: dict[str, dict[str, dict]]) -> None:
    for seg in segments:
        assert standin.members(BOOKS[seg]) == set(want[seg]), seg
        for address, p in want[seg].items():
            contact = standin.contact(address)
            assert contact["dataFields"] == data_fields(p), (seg, address)
            # One consent record per opt-in and wording, the current one among them.
            records = [(r["text"], r["dateTimeConsented"]) for r in contact["consentRecords"]]
            assert len(records) == len(set(records)), (address, records)
            opted_at = p[f"{CONSENT[seg]}_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
            assert (TEXT[seg], opted_at) in records, (seg, address, records)
    if "partners" not in segments:
        assert standin.book(PARTNERS) is None


def check_only_consenting_sent(standin, want, imports_before, requests_before) -> None:
    rows, patched = sent_since(standin, imports_before, requests_before)
    by_book = {BOOKS[seg]: set(emails) for seg, emails in want.items()}
    for book, address in rows:
        assert address in by_book[book], (book, address)
    everyone = set().union(*by_book.values())
    for address in patched:
        assert address in everyone, address


# Deferred rounds: at most this many imports at a time (None: no deferral), each file holding
# every row of its segment (20 MiB) or one row (a 0.0001 MiB target is under any row).
DEFERRALS = (None, 1, 2)
FILE_MB = (20, 0.0001)
DELETE = re.compile(r"/v2/address-books/\d+/contacts/delete")


class Run:
    """One example's syncs: a state file of its own, dates 2024-06-01 on; with ``deferred``
    (1 or 2), ``defer_imports: true`` and that ``max_active_imports``."""

    def __init__(
        self,
        standin,
        sync,
        segments: list[str],
        state: Path,
        deferred: int | None = None,
        file_mb: float = 20,
    ):
        standin.reset()
        self.standin, self.sync = standin, sync
        self.segments = segments
        self.deferred = deferred
        self.options = {
            "state_path": str(state),
            "segments": {
                seg: {"address_book": BOOKS[seg], "partner": seg == "partners"} for seg in segments
            },
            "max_file_mb": file_mb,
            **FAST,
        }
        if deferred:
            self.options |= {"defer_imports": True, "max_active_imports": deferred}

    def deliver(self, day: int, tables: dict[str, str]):
        ds = f"2024-06-{day:02d}"
        return deliver_on(self.sync, ds, tables, **self.options)

    def deliver_and_check(self, day: int, tables, want) -> None:
        imports_before, requests_before = set(self.standin.imports), len(self.standin.requests)
        members_before = {seg: self.standin.members(BOOKS[seg]) for seg in self.segments}
        report = self.deliver(day, tables)
        while pending := report.details["pending_imports"]:
            # A deferred round (docs/activation.md, "Deferred imports").
            assert self.deferred and len(pending) <= self.deferred, pending
            self.wait_on_trigger(pending)
            self.check_round(want, members_before, requests_before)
            requests_before = len(self.standin.requests)
            report = self.deliver(day, tables)
        check_only_consenting_sent(self.standin, want, imports_before, requests_before)
        check_converged(self.standin, self.segments, want)

    def wait_on_trigger(self, pending: list[str]) -> None:
        """What the deferred task does between rounds: wait on the trigger's first event."""
        trigger = DotdigitalImportTrigger(DOTDIGITAL_CONN_ID, pending, 0.01)
        event = asyncio.run(anext(trigger.run()))
        assert set(event.payload["imports"].values()) == {"Finished"}, event.payload

    def check_round(self, want, members_before, requests_before: int) -> None:
        """A round before the last: it removed no one, sent no consent record, and its imports
        added to each book only members who had opted in on the date."""
        for method, path, _, _ in self.standin.requests[requests_before:]:
            assert method != "PATCH" and not DELETE.fullmatch(path), (method, path)
        for seg in self.segments:
            added = self.standin.members(BOOKS[seg]) - members_before[seg]
            assert added <= set(want[seg]), (seg, added)

    def rerun_sends_nothing(self, day: int, tables, want) -> None:
        imports_before, requests_before = set(self.standin.imports), len(self.standin.requests)
        report = self.deliver(day, tables)
        assert report.details["pending_imports"] == []
        assert set(self.standin.imports) == imports_before
        sent = [r[:2] for r in self.standin.requests[requests_before:] if r[0] != "GET"]
        assert sent == [], sent
        assert report.rows == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}
        check_converged(self.standin, self.segments, want)


examples = iter(range(1_000_000))


def land(dotdigital, inputs, suppressed: set[str], profiles, members, unsubscribes):
    """A date's tables and the members its books must hold; its unsubscribe (if any) is made in
    the stand-in first and stays suppressed for the dates after."""
    if unsubscribes:
        dotdigital.suppress(unsubscribes)
        suppressed.add(unsubscribes)
    return inputs.write(profiles, members), wanted(profiles, members, suppressed)


@PROPERTY_SETTINGS
@given(
    history=histories(),
    deferred=st.sampled_from(DEFERRALS),
    file_mb=st.sampled_from(FILE_MB),
)
def test_every_date_leaves_exactly_its_opted_in_members_and_a_rerun_sends_nothing(
    history, deferred, file_mb, dotdigital, inputs, sync, tmp_path
):
    segments, dates = history
    state = tmp_path / f"state{next(examples)}.duckdb"
    run = Run(dotdigital, sync, segments, state, deferred, file_mb)
    suppressed: set[str] = set()
    for day, (profiles, members, unsubscribes) in enumerate(dates, start=1):
        tables, want = land(dotdigital, inputs, suppressed, profiles, members, unsubscribes)
        run.deliver_and_check(day, tables, want)
        run.rerun_sends_nothing(day, tables, want)


FAULTS = ("5xx", "429", "watchdog")


def switch_on(standin, fault: str) -> None:
    if fault == "5xx":
        standin.fail_next(1000)  # more than max_attempts: the call fails
    elif fault == "429":
        standin.rate_limit_for(30)  # a reset 30 s away, past max_rate_limit_wait
    else:
        standin.watchdog = True  # imports submitted from now on end RejectedByWatchdog


def switch_off(standin) -> None:
    standin.failures_left, standin.storm_seconds, standin.rate_limit_until = 0, None, 0.0
    standin.watchdog = False


@PROPERTY_SETTINGS
@given(
    history=histories(),
    failing=st.integers(0, 4),
    fault=st.sampled_from(FAULTS),
    after_calls=st.integers(0, 12),
    retry_same_date=st.booleans(),
)
def test_a_sync_failing_midway_is_repaired_by_the_next_one(
    history, failing, fault, after_calls, retry_same_date, dotdigital, inputs, sync, tmp_path
):
    segments, dates = history
    failing = min(failing, len(dates) - 1)
    run = Run(dotdigital, sync, segments, tmp_path / f"state{next(examples)}.duckdb")
    handle = dotdigital.handle
    suppressed: set[str] = set()
    try:
        for day, (profiles, members, unsubscribes) in enumerate(dates, start=1):
            tables, want = land(dotdigital, inputs, suppressed, profiles, members, unsubscribes)
            if day - 1 != failing:
                run.deliver_and_check(day, tables, want)
                continue
            calls = iter(range(1_000_000))
            switched: list[str] = []

            def faulty(*args, _calls=calls, _switched=switched):
                if next(_calls) == after_calls:
                    switch_on(dotdigital, fault)
                    _switched.append(fault)
                return handle(*args)

            dotdigital.handle = faulty  # the fault comes at the sync's call number after_calls
            imports_before, requests_before = set(dotdigital.imports), len(dotdigital.requests)
            failed = None
            try:
                run.deliver(day, tables)
            except (DotdigitalApiError, DotdigitalImportFailed) as exc:
                failed = exc
            finally:
                dotdigital.handle = handle
                switch_off(dotdigital)
            # A 5xx or 429 past the limits fails the sync's next call; the watchdog fails it
            # only if an import is submitted after it came (a sync with calls to spare is
            # over before the fault).
            if switched and fault != "watchdog":
                assert failed is not None
            # Even a failing sync sends no one who had not opted in on its date.
            check_only_consenting_sent(dotdigital, want, imports_before, requests_before)
            if retry_same_date or day == len(dates):  # the last date: only a retry is left
                run.deliver_and_check(day, tables, want)
                run.rerun_sends_nothing(day, tables, want)
    finally:
        dotdigital.handle = handle
        switch_off(dotdigital)
