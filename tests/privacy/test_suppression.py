"""Suppression in the daily build: suppressed people are never built or exported again."""

from __future__ import annotations

import pyarrow.parquet as pq

from audience_profiles import pipeline, report
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.erasure import read_requests, resolve_requests, run_erasure
from audience_profiles.warehouse import open_warehouse
from tests.privacy.people import (
    ANN,
    ANN_SESSION,
    BOB,
    BOB_SESSION,
    DAVID,
    DAYS,
    file_request,
    form,
    interaction,
    mentions,
    query,
)
from tests.support import FORM_HEADER, IDENTITY_HEADER, INTERACTION_HEADER, write_csv

NEXT_DAY = "2022-04-30"


def drop_text(root, ds: str) -> str:
    return "".join(p.read_text() for p in sorted(root.glob(f"output/*/dt={ds}/part-*.csv")))


def land_next_day(landing, ann_session: str, votes: list[tuple[str, int]]) -> None:
    """NEXT_DAY's landing: Ann's and Bob's form entries (Ann's on ``ann_session``) and
    ``votes`` as (session, option)."""
    write_csv(
        landing / "form_entries" / f"date={NEXT_DAY}" / "p.csv",
        FORM_HEADER,
        [
            form(f"{NEXT_DAY}T09:00:00", "Ann", "Lee", ANN, ann_session),
            form(f"{NEXT_DAY}T09:30:00", "Bob", "Stone", BOB, BOB_SESSION),
        ],
    )
    write_csv(
        landing / "interactions" / f"date={NEXT_DAY}" / "p.csv",
        INTERACTION_HEADER,
        [interaction(NEXT_DAY, session, option) for session, option in votes],
    )


def test_a_suppress_request_keeps_the_data_out_of_processing(built, tmp_path):
    landing = tmp_path / "landing"
    ann_rows = query(built, f"SELECT * FROM form_entries WHERE email = '{ANN}'")
    file_request(landing, "r-s", "email", ANN, kind="suppress")

    run_erasure(NEXT_DAY, built)

    # Kept, but only in the restricted tables; nothing built from it.
    assert query(built, f"SELECT * FROM restricted_form_entries WHERE email = '{ANN}'") == ann_rows
    assert query(built, "SELECT count(*) FROM restricted_interactions") == [(2,)]
    assert query(built, "SELECT count(*) FROM restricted_identities") == [(1,)]
    assert {t for t in mentions(built, ANN) if not t.startswith("restricted_")} == set()
    log = query(
        built, "SELECT destination, status FROM erasure_log WHERE request_id = 'r-s' ORDER BY 1"
    )
    assert log == [("local_drop", "skipped"), ("suppression_list", "done"), ("warehouse", "done")]
    assert ANN in drop_text(tmp_path, DAYS[-1])  # suppress does not rewrite what was delivered

    # New data about Ann the next day: restricted as it lands, never built or exported.
    land_next_day(
        landing, "ann-session-2", [("ann-session-2", 0), (ANN_SESSION, 1), (BOB_SESSION, 2)]
    )
    result = run_all(RunWindow.for_date(NEXT_DAY), built)

    assert result["validate"]["suppressed"] == {"form_entries": 1, "interactions": 2}
    # The report says so: valid counted them, the warehouse did not load them.
    sources = result["validate"]["sources"]
    assert (sources["form_entries"]["suppressed"], sources["interactions"]["suppressed"]) == (1, 2)
    run_report = report.build(RunWindow.for_date(NEXT_DAY), {"validate": result["validate"]}, {})
    run_report["checks"] = []  # read from the warehouse by the report task
    assert "of the valid, 3 suppressed (not loaded)" in report.summary_line(run_report)
    assert "of valid: suppressed" in report.render_html(run_report, [])
    assert {t for t in mentions(built, ANN) if not t.startswith("restricted_")} == set()
    assert query(built, "SELECT count(*) FROM restricted_interactions") == [(4,)]
    assert ANN not in drop_text(tmp_path, NEXT_DAY)
    assert BOB in drop_text(tmp_path, NEXT_DAY)
    assert query(built, f"SELECT interactions FROM audience_profiles WHERE email = '{BOB}'") == [
        (2,)
    ]

    # Re-running the day restricts the same rows again, not twice.
    run_all(RunWindow.for_date(NEXT_DAY), built)
    assert query(built, "SELECT count(*) FROM restricted_interactions") == [(4,)]

    # A later delete request for the same person deletes the kept rows too.
    file_request(landing, "r-d", "email", ANN)
    run_erasure(NEXT_DAY, built, run_id="second")
    assert mentions(built, ANN) == {}
    assert ANN not in drop_text(tmp_path, DAYS[-1])


def test_a_shared_session_stays_when_only_one_of_its_people_is_suppressed(built, tmp_path):
    landing = tmp_path / "landing"
    file_request(landing, "r-1", "email", DAVID)
    run_erasure(NEXT_DAY, built)
    # A kiosk: David and Carla both sign up on the same session the next day.
    write_csv(
        landing / "form_entries" / f"date={NEXT_DAY}" / "p.csv",
        FORM_HEADER,
        [
            form(f"{NEXT_DAY}T09:00:00", "David", "Wilson", DAVID, "kiosk"),
            form(f"{NEXT_DAY}T09:10:00", "Carla", "Diaz", "carla@example.com", "kiosk"),
        ],
    )
    write_csv(
        landing / "interactions" / f"date={NEXT_DAY}" / "p.csv",
        INTERACTION_HEADER,
        [interaction(NEXT_DAY, "kiosk", 0)],
    )

    result = run_all(RunWindow.for_date(NEXT_DAY), built)

    assert result["validate"]["suppressed"] == {"form_entries": 1}
    assert mentions(built, DAVID) == {}
    assert query(
        built,
        "SELECT email, interactions FROM audience_profiles WHERE sessions > 0 "
        "AND email = 'carla@example.com'",
    ) == [("carla@example.com", 1)]
    assert ("session_id", hash_identifier("kiosk")) not in set(
        query(built, "SELECT identifier_type, identifier_hash FROM suppression_list")
    )


def test_a_request_filed_while_a_run_builds_is_left_out_at_publish(built, tmp_path):
    """The belt and braces: the run's snapshot was built before the request was resolved."""
    window = RunWindow.for_date(DAYS[-1])
    staged = [pipeline.extract_source(s, window, built) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(window, staged, built)
    pipeline.enrich(window, built)
    pipeline.resolve_identities(window, built)
    pipeline.build_profiles(window, built)
    rs = window.run_schema
    assert query(built, f"SELECT count(*) FROM {rs}.audience_profiles WHERE email = '{ANN}'") == [
        (1,)
    ]

    file_request(tmp_path / "landing", "r-1", "external_id", " sso-ann ")  # trimmed, case kept
    run_erasure(DAYS[-1], built)
    pipeline.check_quality(window, built)
    tables = pipeline.publish(window, built)
    pipeline.cleanup(window, built)

    for table in ("audience_profiles", "audience_profile_interactions", "profile_identifiers"):
        exported = pq.read_table(tables[table]).to_pylist()
        assert exported and not [r for r in exported if ANN in str(r) or ANN_SESSION in str(r)]
    assert mentions(built, ANN) == {} and mentions(built, ANN_SESSION) == {}


def test_a_merge_into_a_profile_listed_while_the_run_builds_is_left_out_at_publish(built, tmp_path):
    """Publish between the erasure's resolve_requests and its remove_from_warehouse (two tasks:
    the daily run's may run between them): the merge row goes with its survivor, though the
    merged-away id is live no more. It names the survivor and one of its identifiers."""
    landing = tmp_path / "landing"
    write_csv(  # Bob enters his address on Ann's session: his profile merges into hers
        landing / "form_entries" / f"date={NEXT_DAY}" / "p.csv",
        FORM_HEADER,
        [form(f"{NEXT_DAY}T09:00:00", "Bob", "Stone", BOB, ANN_SESSION)],
    )
    window = RunWindow.for_date(NEXT_DAY)
    staged = [pipeline.extract_source(s, window, built) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(window, staged, built)
    pipeline.enrich(window, built)
    pipeline.resolve_identities(window, built)
    pipeline.build_profiles(window, built)
    merges = f"SELECT identifier_value FROM {window.run_schema}.profile_merges"
    assert query(built, merges) == [(ANN_SESSION,)]

    file_request(landing, "r-1", "external_id", "sso-ann")
    resolve_requests(read_requests(NEXT_DAY, "erasure-1", built), built)
    pipeline.check_quality(window, built)
    tables = pipeline.publish(window, built)

    assert pq.read_table(tables["profile_merges"]).num_rows == 0
    exported = pq.read_table(tables["audience_profiles"]).to_pylist()
    assert [p["email"] for p in exported] == [DAVID]


def test_an_empty_suppression_list_costs_one_count(built):
    assert query(built, "SELECT count(*) FROM suppression_list") == [(0,)]
    result = run_all(RunWindow.for_date(DAYS[-1]), built)
    assert result["validate"]["suppressed"] == {}


def test_the_suppressed_count_is_of_the_dates_own_rows(built, tmp_path):
    """Suppression also takes a claimed device's votes of earlier partitions: the report counted
    them as this date's valid rows, more suppressed than valid."""
    landing = tmp_path / "landing"
    # a device's votes loaded on 04-29, nobody's yet
    write_csv(
        landing / "interactions" / "date=2022-04-29" / "kiosk.csv",
        INTERACTION_HEADER,
        [
            interaction("2022-04-29", "kiosk-x", 1),
            interaction("2022-04-29", "kiosk-x", 2),
            interaction("2022-04-29", "kiosk-x", 3),
        ],
    )
    run_all(RunWindow.for_date("2022-04-29"), built)
    file_request(landing, "r-s", "email", ANN, kind="suppress")
    run_erasure(NEXT_DAY, built)
    # next day: Ann (suppressed) fills a form on that device; Bob votes once
    land_next_day(landing, "kiosk-x", [(BOB_SESSION, 2)])
    result = run_all(RunWindow.for_date(NEXT_DAY), built)
    src = result["validate"]["sources"]["interactions"]
    assert "suppressed" not in src  # Bob's vote stays; the device's earlier votes are 04-29's
    assert result["validate"]["sources"]["form_entries"]["suppressed"] == 1


def list_as_before_the_check(config, kind: str, requests: dict, entries: list) -> None:
    """Done requests (id -> (type, value)) and list entries ((type, value, request id)) of
    ``kind``, as a warehouse from before requests for placeholders were refused holds them."""
    rows = ", ".join(
        f"('{r}', '{t}', '{hash_identifier(v)}', '{kind}', 'done')"
        for r, (t, v) in requests.items()
    )
    listed = ", ".join(
        f"('{t}', '{hash_identifier(v)}', '{kind}', '{r}', NULL)" for t, v, r in entries
    )
    with open_warehouse(config) as wh:
        wh.execute_script(
            "INSERT INTO erasure_requests (request_id, identifier_type, identifier_hash, type,"
            f" status) VALUES {rows}; INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES {listed}"
        )


def land_logins(landing, logins: list[tuple[str, str, str, str, str]]) -> None:
    """NEXT_DAY's SSO logins: (time, session, external_id, email, first name)."""
    write_csv(
        landing / "identities" / f"date={NEXT_DAY}" / "p.csv",
        IDENTITY_HEADER,
        [[f"{NEXT_DAY}T{t}", s, x, e, name, ""] for t, s, x, e, name in logins],
    )


def test_a_placeholder_listed_before_requests_were_checked_comes_off_the_list(
    built, tmp_path, caplog
):
    """A request for "null" accepted before requests.sql refused placeholders left "null" on the
    list. Since SSO logins with a "null" email are kept, every such login would be taken out and
    its SSO id listed. The next run takes the placeholder off; what the request listed through
    logins stays (it may be a real person's: here Ann's, whose own request came later)."""
    ann_sso = hash_identifier("sso-ann")
    list_as_before_the_check(
        built,
        "delete",
        {"r-null": ("email", "null"), "r-ann": ("external_id", "sso-ann")},
        # Ann once signed in with a "null" email: her SSO id was listed under r-null, so her own
        # request for it later added no entry of its own
        [("email", "null", "r-null"), ("external_id", "sso-ann", "r-null")],
    )
    land_logins(
        tmp_path / "landing",
        [
            ("10:00:00", "sx-1", "u-7", "NULL", "Xena"),
            ("11:00:00", "sx-2", "u-8", "null", "Yan"),
            ("12:00:00", "sx-3", "sso-ann", "", "Ann"),
        ],
    )

    result = run_all(RunWindow.for_date(NEXT_DAY), built)

    assert result["validate"]["suppressed"] == {"identities": 1}  # Ann's login, not theirs
    strangers = "SELECT first_name FROM audience_profiles WHERE external_id IS NOT NULL"
    assert sorted(query(built, strangers)) == [("Xena",), ("Yan",)]
    # Ann's entry stays, and takes her new session with it
    assert set(query(built, "SELECT identifier_hash FROM suppression_list")) == {
        (ann_sso,),
        (hash_identifier("sx-3"),),
    }
    assert query(built, "SELECT request_id, status, reason FROM erasure_requests ORDER BY 1") == [
        ("r-ann", "done", None),
        ("r-null", "invalid", "identifier_value: names no one (identity.yml blocks it)"),
    ]
    assert (
        "took 1 suppression-list entr(ies) for values identity.yml blocks off the list; request(s)"
        " r-null named such a value, which names no one: now invalid. 1 other entr(ies) they made"
        " stay listed" in caplog.text
    )
    # Once done, later runs find nothing to do (and say nothing).
    caplog.clear()
    run_all(RunWindow.for_date(NEXT_DAY), built)
    assert "identity.yml blocks" not in caplog.text


def test_a_later_delete_takes_over_no_stranger_a_placeholder_listed(built, tmp_path):
    """What a "null" request listed through logins stays listed after it is refused: each entry
    may be a different person's. A delete by one of them (Abe) takes over his own entry, not
    every entry of that request (Bea asked for nothing)."""
    list_as_before_the_check(
        built,
        "suppress",
        {"r-null": ("email", "null")},
        [
            ("email", "null", "r-null"),
            ("external_id", "u-a", "r-null"),
            ("external_id", "u-b", "r-null"),
        ],
    )
    land_logins(
        tmp_path / "landing",
        [
            ("10:00:00", "sa-1", "u-a", "null", "Abe"),
            ("11:00:00", "sb-1", "u-b", "bea@example.com", "Bea"),
        ],
    )
    run_all(RunWindow.for_date(NEXT_DAY), built)
    restricted = "SELECT external_id FROM restricted_identities ORDER BY 1"
    assert query(built, restricted) == [("u-a",), ("u-b",)]  # kept aside, as listed
    file_request(tmp_path / "landing", "r-abe", "external_id", "u-a")

    run_erasure(NEXT_DAY, built)

    assert query(built, restricted) == [("u-b",)]
    kinds = "SELECT kind, request_id FROM suppression_list WHERE identifier_hash = '{}' ORDER BY 1"
    # The old entry stays beside Abe's: listed before exact hashes, it may be another case's
    # (U-A, someone else's SSO account), whom dropping it would bring back.
    assert query(built, kinds.format(hash_identifier("u-a"))) == [
        ("delete", "r-abe"),
        ("suppress", "r-null"),
    ]
    assert query(built, kinds.format(hash_identifier("u-b"))) == [("suppress", "r-null")]


def test_sso_ids_differing_only_in_case_are_two_people_to_an_erasure(built, tmp_path):
    """identity.yml compares SSO ids case and all: `SSO-CASE-1` and `sso-case-1` are two accounts,
    two profiles. A request for one took the other too (the list's hash was lower-cased), and
    every later run then listed the other's email and session under it. It takes one of them."""
    landing = tmp_path / "landing"
    land_logins(
        landing,
        [
            ("10:00:00", "s-alice", "SSO-CASE-1", "alice.case@example.org", "Alice"),
            ("11:00:00", "s-bob", "sso-case-1", "bob.case@example.org", "Bob"),
        ],
    )
    run_all(RunWindow.for_date(NEXT_DAY), built)
    people = "SELECT external_id FROM audience_profiles WHERE lower(external_id) = 'sso-case-1' ORDER BY 1"
    assert query(built, people) == [("SSO-CASE-1",), ("sso-case-1",)]
    file_request(landing, "r-bob", "external_id", " sso-case-1 ")

    run_erasure(NEXT_DAY, built)
    assert query(built, people) == [("SSO-CASE-1",)]
    run_all(RunWindow.for_date(NEXT_DAY), built)  # the list applied to the partition again

    assert query(built, people) == [("SSO-CASE-1",)]
    assert mentions(built, "bob.case@example.org") == {} and mentions(built, "s-bob") == {}
    assert query(built, "SELECT count(*) FROM identities WHERE external_id = 'SSO-CASE-1'") == [
        (1,)
    ]
    listed = "SELECT count(*) FROM suppression_list WHERE exact_hash = '{}'"
    assert query(built, listed.format(hash_identifier("alice.case@example.org"))) == [(0,)]


def test_an_email_is_one_person_whatever_its_case(built, tmp_path):
    """Emails stay case-insensitive: a request for `ANN@...` takes Ann's lower-cased address."""
    file_request(tmp_path / "landing", "r-ann", "email", ANN.upper())

    run_erasure(NEXT_DAY, built)

    assert mentions(built, ANN) == {}


def test_a_request_for_an_id_in_another_case_erases_no_one_and_says_so(built, tmp_path, caplog):
    """Ann's SSO id is `sso-ann`: a request for `SSO-Ann` names another account, so nobody's
    profile goes, and the log says some profile holds it in another case (a typo, perhaps)."""
    file_request(tmp_path / "landing", "r-typo", "external_id", "SSO-Ann")

    run_erasure(NEXT_DAY, built)

    assert mentions(built, ANN) != {}
    assert (
        "request r-typo: no profile holds its identifier as written, 1 in another case"
        in caplog.text
    )
