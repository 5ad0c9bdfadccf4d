"""Erasure requests through the warehouse and a local drop (no services; the erasure DAG's steps)."""

from __future__ import annotations

import datetime
import json
import logging
import re
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from audience_profiles.destinations.base import Destination, ErasureRequest
from audience_profiles.destinations.local import LocalDestination
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.erasure import (
    ErasureIncompleteError,
    cleanup,
    compact_warehouse,
    read_requests,
    resolve_requests,
    run_erasure,
    work_folder,
)
from audience_profiles.warehouse import open_warehouse
from tests.privacy.people import (
    ANN,
    ANN_SESSION,
    BOB,
    DAVID,
    DAYS,
    export_mentions,
    file_request,
    form,
    interaction,
    log_rows,
    mentions,
    query,
)
from tests.support import (
    FORM_HEADER,
    INTERACTION_HEADER,
    SEED_SESSION,
    write_config,
    write_csv,
    write_ndjson,
)

ERASE_DAY = "2022-04-30"


def test_a_delete_request_takes_the_person_out_of_every_table_and_nobody_else(built, tmp_path):
    before = {
        name: query(built, f"SELECT * FROM {name} WHERE email <> '{DAVID}' ORDER BY ALL")
        for name in ("audience_profiles", "form_entries")
    }
    ann_interactions = query(
        built, f"SELECT * FROM interactions WHERE session_id = '{ANN_SESSION}' ORDER BY ALL"
    )
    assert mentions(built, DAVID) and mentions(built, SEED_SESSION)
    assert export_mentions(built, DAVID)
    # The address as a person types it: spaces and capitals are normalised away.
    file_request(tmp_path / "landing", "r-1", "email", "  David.Wilson@EXAMPLE.com ")

    result = run_erasure(ERASE_DAY, built)

    assert result["record"] == {"completed": ["r-1"], "pending": 0}
    assert mentions(built, DAVID) == {}
    assert mentions(built, SEED_SESSION) == {}
    # Nor can re-delivering an old run bring him back: its kept exports were rewritten.
    assert export_mentions(built, DAVID) == [] and export_mentions(built, SEED_SESSION) == []
    assert export_mentions(built, ANN)
    assert query(built, "SELECT count(*) FROM erasure_subjects") == [(0,)]
    assert {
        name: query(built, f"SELECT * FROM {name} ORDER BY ALL")
        for name in ("audience_profiles", "form_entries")
    } == before
    assert ann_interactions == query(
        built, f"SELECT * FROM interactions WHERE session_id = '{ANN_SESSION}' ORDER BY ALL"
    )
    # What stays is hashes: the request, and the suppression list of every identifier.
    assert query(built, "SELECT identifier_hash, status FROM erasure_requests") == [
        (hash_identifier(DAVID), "done")
    ]
    assert set(
        query(built, "SELECT identifier_type, identifier_hash, kind FROM suppression_list")
    ) == {
        ("email", hash_identifier(DAVID), "delete"),
        ("session_id", hash_identifier(SEED_SESSION), "delete"),
    }
    log = log_rows(built, "r-1")
    assert set(log) == {"local_drop", "suppression_list", "warehouse"}
    assert all(status == "done" and attempts == 1 for status, _, attempts in log.values())
    assert re.fullmatch(
        r"\d+ row\(s\) removed from \d+ file\(s\) in 9 partition\(s\)", log["local_drop"][1]
    )


def test_compacting_after_an_erasure_takes_the_bytes_the_deleted_rows_left(built, tmp_path):
    """DuckDB frees the erased rows' blocks without overwriting them: the address stayed in the
    file (not through SQL) until the erasure DAG's compact_warehouse copied the warehouse."""
    with pytest.raises(
        AirflowSkipException, match=r"no rows freed since the last compaction \(none"
    ):
        compact_warehouse(built)  # no request finished yet, no retention
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)
    warehouse = Path(built.warehouse.path)
    assert mentions(built, DAVID) == {}
    assert DAVID.encode() in warehouse.read_bytes()

    compacted = compact_warehouse(built)

    assert compacted["bytes_after"] < compacted["bytes_before"]
    assert DAVID.encode() not in warehouse.read_bytes()
    assert SEED_SESSION.encode() not in warehouse.read_bytes()
    assert ANN.encode() in warehouse.read_bytes()
    # once: the next erasure run, with nothing finished since, copies nothing
    with pytest.raises(AirflowSkipException, match="no rows freed since the last compaction"):
        compact_warehouse(built)
    # the next run builds on the copy, and the person stays out
    run_all(RunWindow.for_date(DAYS[-1]), built)
    assert mentions(built, DAVID) == {}


def test_a_request_a_run_finished_without_compacting_is_compacted_for_by_the_next(built, tmp_path):
    """compact_warehouse does not run after a failed record_erasures (the run must fail), which
    may have finished other requests: the next run compacts for them, as it decides from the
    warehouse (requests finished since the last copy), not from its own run's tasks."""
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)  # its steps up to record_erasures: no compaction
    (finished,) = query(built, "SELECT completed_at FROM erasure_requests")[0]

    assert compact_warehouse(built)["freed_at"] == finished.isoformat(" ")
    assert DAVID.encode() not in Path(built.warehouse.path).read_bytes()


@pytest.mark.parametrize(
    "marker",
    [
        '{"path": "/elsewhere/warehouse.duckdb", "through": "2999-01-01 00:00:00"}',
        '{"through": "2999-01-01 00:00:00"}',  # which file, unsaid
        "{not json",
    ],
)
def test_a_marker_of_another_warehouse_or_unreadable_does_not_skip_it(built, tmp_path, marker):
    """AUDIENCE_PROFILES_WAREHOUSE pointed elsewhere since: judged against the other file's
    compactions, this one's freed rows were never copied out."""
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)
    state = Path(built.work_dir) / "state"
    state.mkdir(exist_ok=True)
    (state / "warehouse-compacted.json").write_text(marker)

    assert compact_warehouse(built)["freed_at"]
    assert DAVID.encode() not in Path(built.warehouse.path).read_bytes()


def test_retention_that_removed_rows_compacts(built):
    with open_warehouse(built) as wh:
        wh.execute_script(
            "INSERT INTO retention_log VALUES (DATE '2022-05-01', 'r', 'interactions_days', "
            "'interactions', DATE '2022-01-01', 3, TIMESTAMP '2022-05-01 01:00:00')"
        )
    assert compact_warehouse(built)["freed_at"] == "2022-05-01 01:00:00"


def test_retention_that_removed_only_run_folders_does_not_compact(built):
    # files under work_dir: the warehouse freed nothing (retention_log names them too)
    from audience_profiles.privacy.retention import RUN_FOLDERS

    with open_warehouse(built) as wh:
        wh.execute_script(
            f"INSERT INTO retention_log VALUES (DATE '2022-05-01', 'r', 'snapshots_days', "
            f"'{RUN_FOLDERS}', DATE '2022-01-01', 4, TIMESTAMP '2022-05-01 01:00:00')"
        )
    with pytest.raises(AirflowSkipException, match="no rows freed since the last compaction"):
        compact_warehouse(built)


def test_compact_warehouse_can_be_turned_off(tmp_path):
    config = write_config(
        tmp_path,
        warehouse={"path": str(tmp_path / "wh.duckdb"), "compact_after_erasure": False},
    )
    with pytest.raises(AirflowSkipException, match="compact_after_erasure is false"):
        compact_warehouse(config)
    assert not (tmp_path / "wh.duckdb").exists()


def test_a_quarantined_line_with_the_email_padded_by_a_no_break_space_is_erased(built, tmp_path):
    """The line's words are cut at every white space character, not only ASCII ones: the
    daily suppression found David in it (its tokens are hashed trimmed), the erasure did not."""
    write_csv(
        tmp_path / "landing" / "form_entries" / "date=2022-04-29" / "q.csv",
        FORM_HEADER,
        [form("2022-04-29T08:40:00", "Dave", "W", DAVID + "\u00a0", "stray-2", optin="Maybe")],
    )
    run_all(RunWindow.for_date("2022-04-29"), built)
    assert mentions(built, DAVID)["quarantine"] and export_mentions(built, DAVID)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    run_erasure(ERASE_DAY, built)

    assert mentions(built, DAVID) == {} and export_mentions(built, DAVID) == []


def test_a_quarantined_json_line_with_the_email_padded_by_an_escaped_space_is_erased(
    built, tmp_path
):
    """A JSON writer escapes the padding ("\\u00a0", "\\t"): the line's word was the address
    with the escape in it, which named nobody, so the line stayed in the warehouse, the run
    export and the drop after David's erasure (found by test_erasure_properties.py)."""
    entries = [
        {"entry_datetime": "2022-04-29T08:40:00", "email": DAVID + "\u00a0", "optin_1": "Maybe",
         "session_id": "stray-2", "form_name": "Quiz", "form_id": 7},
        {"entry_datetime": "2022-04-29T08:41:00", "email": "\t" + DAVID.upper(),
         "optin_1": "Maybe", "session_id": "stray-3", "form_name": "Quiz", "form_id": 7},
    ]  # fmt: skip
    write_ndjson(tmp_path / "landing" / "form_entries" / "date=2022-04-29" / "q.json", entries)
    run_all(RunWindow.for_date("2022-04-29"), built)
    escaped = query(built, "SELECT raw FROM quarantine WHERE raw LIKE '%stray-%'")
    assert len(escaped) == 2 and all("\\u00a0" in r or "\\t" in r for (r,) in escaped)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    run_erasure(ERASE_DAY, built)

    assert mentions(built, DAVID) == {} and export_mentions(built, DAVID) == []
    assert query(built, "SELECT count(*) FROM quarantine WHERE raw LIKE '%stray-%'") == [(0,)]
    drop = [p for p in (tmp_path / "output").rglob("part-*") if "stray-" in p.read_text()]
    assert drop == []


def test_a_quarantined_json_line_with_the_email_escaped_by_the_json_writer_is_erased(
    built, tmp_path
):
    """json.dumps escapes every non-ASCII character ("jos\\u00e9@example.com"): the line's word
    was the address with the escape in it, which named nobody, so José's quarantined entry (a
    malformed email: validation's pattern is ASCII-only) stayed in the warehouse, the run export
    and the drop after his erasure."""
    entry = {"entry_datetime": "2022-04-29T08:42:00", "email": "josé@example.com",
             "optin_1": "Yes", "session_id": "stray-jose", "form_name": "Quiz", "form_id": 7}  # fmt: skip
    write_ndjson(tmp_path / "landing" / "form_entries" / "date=2022-04-29" / "jose.json", [entry])
    run_all(RunWindow.for_date("2022-04-29"), built)
    quarantined = query(built, "SELECT raw FROM quarantine WHERE raw LIKE '%stray-jose%'")
    assert [r for (r,) in quarantined] == [json.dumps(entry)]
    assert "jos\\u00e9@example.com" in quarantined[0][0]
    file_request(tmp_path / "landing", "r-1", "email", "José@Example.com")

    run_erasure(ERASE_DAY, built)

    assert query(built, "SELECT count(*) FROM quarantine WHERE raw LIKE '%stray-jose%'") == [(0,)]
    assert export_mentions(built, "stray-jose") == []
    drop = [p for p in (tmp_path / "output").rglob("part-*") if "stray-jose" in p.read_text()]
    assert drop == []


def test_running_again_changes_nothing(built, tmp_path):
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)
    state = {
        t: query(built, f"SELECT * FROM {t} ORDER BY ALL")
        for t in ("erasure_log", "erasure_requests", "suppression_list", "audience_profiles")
    }
    drop = sorted(p.read_bytes() for p in (tmp_path / "output").rglob("*") if p.is_file())

    result = run_erasure(ERASE_DAY, built, run_id="second")

    assert result["resolve"] == {"new": 0, "pending": 0}
    assert result["warehouse"] == {"requests": 0, "rows_removed": {}, "exports_rewritten": []}
    assert result["destinations"] == [{"destination": "local_drop", "statuses": {}}]
    assert state == {t: query(built, f"SELECT * FROM {t} ORDER BY ALL") for t in state}
    assert drop == sorted(p.read_bytes() for p in (tmp_path / "output").rglob("*") if p.is_file())


def test_invalid_requests_are_recorded_without_their_identifier_and_retried_once_fixed(
    built, tmp_path, caplog
):
    landing = tmp_path / "landing"
    file_request(landing, "r-bad", "phone", "+44 7700 900123")
    file_request(landing, "r-dup", "email", BOB)
    file_request(landing, "r-dup", "email", ANN)  # same id again: the first one wins
    file_request(landing, "", "email", ANN)  # no id: reported, never acted on
    # only a no-break space: no identifier at all (it stayed pending for ever, owed to nobody)
    file_request(landing, "r-nbsp", "email", "\u00a0")
    # a value identity.yml blocks names no one: listed, it erased and suppressed every stranger
    # whose rows carried it (their form entries, their SSO logins' other identifiers)
    file_request(landing, "r-test", "email", " Test@Test.com ")
    file_request(landing, "r-null", "session_id", "NULL")
    caplog.set_level(logging.INFO)

    run_erasure(ERASE_DAY, built)

    placeholder = "identifier_value: names no one (identity.yml blocks it)"
    assert query(built, "SELECT request_id, status, reason FROM erasure_requests ORDER BY 1") == [
        ("r-bad", "invalid", "identifier_type: not email, session_id or external_id"),
        ("r-dup", "done", None),
        ("r-nbsp", "invalid", "identifier_value: missing"),
        ("r-null", "invalid", placeholder),
        ("r-test", "invalid", placeholder),
    ]
    listed = "SELECT count(*) FROM suppression_list WHERE identifier_hash IN ('{}', '{}')"
    assert query(
        built, listed.format(hash_identifier("test@test.com"), hash_identifier("null"))
    ) == [(0,)]
    assert query(built, f"SELECT count(*) FROM form_entries WHERE email = '{BOB}'") == [(0,)]
    assert query(built, f"SELECT count(*) FROM form_entries WHERE email = '{ANN}'") == [(1,)]
    assert "+44 7700 900123" not in caplog.text and ANN not in caplog.text
    assert "invalid request r-bad" in caplog.text

    # The customer fixes the request under the same id: the next run acts on it.
    (landing / "erasure_requests" / "requests.csv").write_text(
        "request_id,identifier_type,identifier_value,requested_at,type\n"
        f"r-bad,email,{ANN},2022-04-30T15:00:00+02:00,delete\n"
    )
    run_erasure(ERASE_DAY, built, run_id="second")

    # an offset is applied, as for every other timestamp (it was dropped: 15:00 stored)
    assert query(built, "SELECT requested_at FROM erasure_requests WHERE request_id = 'r-bad'") == [
        (datetime.datetime(2022, 4, 30, 13, 0),)
    ]

    assert query(built, "SELECT request_id, status FROM erasure_requests ORDER BY 1") == [
        ("r-bad", "done"),
        ("r-dup", "done"),
        ("r-nbsp", "invalid"),
        ("r-null", "invalid"),
        ("r-test", "invalid"),
    ]
    assert mentions(built, ANN) == {} and mentions(built, ANN_SESSION) == {}


def test_a_placeholder_request_still_owed_to_destinations_is_dropped(built):
    """A "null" request accepted before such requests were refused, its warehouse part done and
    destinations still owed: the next erasure run makes it invalid before anything else, so no
    destination is asked to erase every "null" row."""
    null = hash_identifier("null")
    with open_warehouse(built) as wh:
        wh.execute_script(
            "INSERT INTO erasure_requests (request_id, identifier_type, identifier_hash, type,"
            f" status, resolved_at) VALUES ('r-null', 'email', '{null}', 'delete', 'pending',"
            " TIMESTAMP '2022-04-30 10:00:00');"
            " INSERT INTO erasure_subjects VALUES ('r-null', 'email', 'null', NULL);"
            " INSERT INTO erasure_log (request_id, destination, status, attempts)"
            " VALUES ('r-null', 'warehouse', 'done', 1);"
            f" INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('email', '{null}', 'delete', 'r-null', NULL)"
        )

    result = run_erasure(ERASE_DAY, built)

    assert result["destinations"] == [{"destination": "local_drop", "statuses": {}}]
    assert query(built, "SELECT status FROM erasure_requests") == [("invalid",)]
    assert query(built, "SELECT count(*) FROM erasure_subjects") == [(0,)]
    assert query(built, "SELECT count(*) FROM suppression_list") == [(0,)]


def test_a_retried_resolve_lists_a_requests_subjects_once(built, tmp_path):
    """On Snowflake the first insert of a request's subjects commits on its own (DDL follows it):
    if the rest of the script failed, the retry found the request new again and listed every
    subject a second time, and destinations were handed each twice."""
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    staged = read_requests(ERASE_DAY, "first", built)
    with open_warehouse(built) as wh:  # what the failed attempt's committed insert left
        wh.execute_script(f"INSERT INTO erasure_subjects VALUES ('r-1', 'email', '{DAVID}', NULL)")

    resolve_requests(staged, built)

    assert (
        query(
            built,
            "SELECT request_id, identifier_type, identifier_value, profile_id, count(*) "
            "FROM erasure_subjects GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
        )
        == []
    )
    assert (DAVID,) in query(built, "SELECT identifier_value FROM erasure_subjects")


def test_a_failed_destination_is_logged_and_tried_again_next_run(built, tmp_path, monkeypatch):
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    real_erase = LocalDestination.erase

    def broken(self, requests):
        raise OSError(f"disk full while rewriting a file of {DAVID}")

    monkeypatch.setattr(LocalDestination, "erase", broken)
    with pytest.raises(ErasureIncompleteError, match="r-1 in local_drop"):
        run_erasure(ERASE_DAY, built)

    log = log_rows(built, "r-1")
    assert log["local_drop"] == (
        "failed",
        "OSError: disk full while rewriting a file of <email>",
        1,
    )
    assert log["warehouse"][0] == "done"
    assert query(built, "SELECT status FROM erasure_requests") == [("pending",)]
    # The drop still holds David; what destinations need to find him is kept until they confirm.
    assert query(built, "SELECT count(*) > 0 FROM erasure_subjects") == [(True,)]

    monkeypatch.setattr(LocalDestination, "erase", real_erase)
    run_erasure(ERASE_DAY, built, run_id="second")

    log = log_rows(built, "r-1")
    assert log["local_drop"][0] == "done" and log["local_drop"][2] == 2
    assert log["warehouse"][2] == 1  # done once, not redone
    assert query(built, "SELECT status FROM erasure_requests") == [("done",)]
    assert query(built, "SELECT count(*) FROM erasure_subjects") == [(0,)]
    assert not [p for p in (tmp_path / "output").rglob("part-*") if DAVID in p.read_text()]


def test_a_destination_that_cannot_erase_says_so():
    class Mailer(Destination):
        kind = "mailer"

        def deliver(self, run, tables):
            raise NotImplementedError

    request = ErasureRequest("r-1", "2022-04-30 12:00:00", ("p1",), (("email", DAVID),))
    assert Mailer(None, None).erase([request]) == {
        "r-1": {"status": "not_supported", "detail": "mailer destinations cannot erase"}
    }


def test_a_request_for_someone_not_seen_yet_keeps_them_out_when_they_arrive(built, tmp_path):
    landing = tmp_path / "landing"
    file_request(landing, "r-new", "email", "Newcomer@Example.com")
    run_erasure(ERASE_DAY, built)
    assert log_rows(built, "r-new")["local_drop"][0] == "done"

    write_csv(
        landing / "form_entries" / "date=2022-05-01" / "p.csv",
        FORM_HEADER,
        [form("2022-05-01T10:00:00", "New", "Comer", "newcomer@example.com", "new-session")],
    )
    write_csv(
        landing / "interactions" / "date=2022-05-01" / "p.csv",
        INTERACTION_HEADER,
        [interaction("2022-05-01", "new-session", 0), interaction("2022-05-01", ANN_SESSION, 3)],
    )
    result = run_all(RunWindow.for_date("2022-05-01"), built)

    assert result["validate"]["suppressed"] == {"form_entries": 1, "interactions": 1}
    assert mentions(built, "newcomer@example.com") == {}
    assert mentions(built, "new-session") == {}
    # The session is the newcomer's (no one else used it): it joins the list.
    assert ("session_id", hash_identifier("new-session")) in set(
        query(built, "SELECT identifier_type, identifier_hash FROM suppression_list")
    )
    assert query(
        built, f"SELECT count(*) FROM interactions WHERE session_id = '{ANN_SESSION}'"
    ) == [(3,)]


def test_an_erasure_waits_for_a_delivery_under_way_then_cleans_up_after_it(built, tmp_path):
    """A delivery was writing its parts when the erasure rewrote the export and cleaned the
    drop: the parts written after held the person, and were cut from the shorter file (other
    people's rows lost, the manifest counting rows no part held)."""
    import json
    import threading

    from audience_profiles import pipeline
    from audience_profiles.destinations.drop import LocalSink

    day = "2022-04-29"
    window = RunWindow.for_date(day)
    exports = pipeline.run_dir(built, window) / "export"
    tables = json.loads((exports / pipeline.PUBLISHED_MARKER).read_text())["tables"]
    put, writing, go_on = LocalSink.put, threading.Event(), threading.Event()

    def slow_upload(self, local_path, key):
        if "part-" in key and not writing.is_set():
            writing.set()
            go_on.wait(30)  # an upload under way
        put(self, local_path, key)

    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalSink, "put", slow_upload)
        delivery = threading.Thread(
            target=lambda: results.update(
                rows=pipeline.deliver("local_drop", window, tables, built)
            )
        )
        delivery.start()
        assert writing.wait(30)
        erasure = threading.Thread(
            target=lambda: results.update(erasure=run_erasure(ERASE_DAY, built))
        )
        erasure.start()
        erasure.join(2)
        assert erasure.is_alive() and export_mentions(built, DAVID)  # waiting for the delivery
        go_on.set()
        delivery.join(30)
        erasure.join(60)

    assert results["erasure"]["record"] == {"completed": ["r-1"], "pending": 0}
    partition = tmp_path / "output" / "audience_profile_interactions" / f"dt={day}"
    text = "".join(p.read_text() for p in sorted(partition.glob("part-*")))
    assert DAVID not in text and ANN in text
    manifest = json.loads((partition / "_manifest.json").read_text())
    parts = list(partition.glob("part-*.csv"))
    assert manifest["rows"] == sum(len(p.read_text().splitlines()) - 1 for p in parts)


def test_an_erasure_clears_the_scratch_schemas_failed_runs_left(built, tmp_path):
    """A run that failed (a quality check, a run marked failed) keeps its run_YYYYMMDD schema:
    the erasure was done while the person's identifiers and profile stayed there."""
    import duckdb

    with duckdb.connect(built.warehouse.path) as con:
        for schema in ("run_20220428", "run_20220429"):  # left by two failed runs
            con.execute(f"CREATE SCHEMA {schema}")
            for table in ("profile_identifiers", "audience_profiles"):
                con.execute(f"CREATE TABLE {schema}.{table} AS SELECT * FROM main.{table}")
    # this one's run is in flight (between two tasks): its schema is in use
    (tmp_path / "work" / "runs" / "2022-04-29" / "_in_flight").touch()
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    assert run_erasure(ERASE_DAY, built)["record"] == {"completed": ["r-1"], "pending": 0}
    schemas = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'run_%'"
    assert query(built, schemas) == [("run_20220429",)]  # the other run's is dropped
    in_use = "SELECT count(*) FROM run_20220429.{} WHERE {} = '{}'"
    assert query(built, in_use.format("audience_profiles", "email", DAVID)) == [(0,)]
    assert query(built, in_use.format("profile_identifiers", "identifier_value", DAVID)) == [(0,)]
    assert query(built, in_use.format("audience_profiles", "email", ANN)) == [(1,)]


def test_an_erasure_removes_the_staged_extracts_a_run_that_died_left(built, tmp_path):
    """A run that died after its extract keeps ``runs/<date>/extract/`` (its cleanup removes it):
    the landing's rows as read, David's address and session in plain, stayed there after his
    erasure. A run in flight keeps its own; a run of the date cleared later extracts again."""
    import os
    import time

    from audience_profiles import pipeline

    window = RunWindow.for_date("2022-04-29")
    for source in ("interactions", "form_entries"):
        pipeline.extract_source(source, window, built)
    marker = tmp_path / "work" / "runs" / "2022-04-29" / "_in_flight"
    two_days_ago = time.time() - 2 * 86400
    os.utime(marker, (two_days_ago, two_days_ago))  # the run died two days ago
    in_flight = RunWindow.for_date("2022-04-28")
    pipeline.extract_source("form_entries", in_flight, built)
    staged = sorted((tmp_path / "work" / "runs").glob("*/extract/*.parquet"))
    assert len(staged) == 3 and export_mentions_in(staged, DAVID)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    assert run_erasure(ERASE_DAY, built)["record"] == {"completed": ["r-1"], "pending": 0}

    left = sorted((tmp_path / "work" / "runs").glob("*/extract/*.parquet"))
    assert [p.relative_to(tmp_path / "work" / "runs").as_posix() for p in left] == [
        "2022-04-28/extract/form_entries.parquet"
    ]
    run_all(window, built)  # the date built again, its extracts staged again
    assert mentions(built, DAVID) == {}


def test_the_next_erasure_run_removes_the_work_folder_a_killed_run_left(built, tmp_path):
    """A run's cleanup teardown removes its folder; a run killed (or marked failed or successful
    by hand) after pending_erasures never ran it, and its staged requests and
    pending_erasures.json kept David's address and session in plain for good."""
    from audience_profiles.privacy import erasure

    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    erasure.resolve_requests(read_requests(ERASE_DAY, "killed", built), built)
    erasure.remove_from_warehouse(built)
    pending = Path(erasure.pending_erasures("killed", built))
    assert DAVID in pending.read_text() and SEED_SESSION in pending.read_text()
    progress = tmp_path / "work" / "erasure" / "removal_progress.json"
    progress.write_text("{}")  # not a run's folder: the warehouse step's own, kept

    run_erasure(ERASE_DAY, built, run_id="next")

    assert not work_folder(built, "killed").exists()
    assert list((tmp_path / "work" / "erasure").iterdir()) == [progress]


def export_mentions_in(paths: list[Path], needle: str) -> list[Path]:
    import duckdb

    with duckdb.connect() as con:
        return [
            p
            for p in paths
            if con.execute(
                "SELECT count(*) FROM read_parquet(?) t WHERE contains(CAST(t AS VARCHAR), ?)",
                [str(p), needle],
            ).fetchone()[0]
        ]


def test_an_erasure_clears_the_scratch_schemas_a_failed_stream_batch_left(
    built, tmp_path, monkeypatch
):
    """A stream batch that fails (a destination down) keeps its stream_batch and stream_work
    schemas, with the rows it validated and the profiles it built, until a later batch brings
    files: the erasure was done while David's new form entry and profile stayed there."""
    from audience_profiles import stream

    class Down:
        def __init__(self, config):
            self.config = config

        def deliver(self, run, tables):
            raise ConnectionError("stream unavailable")

    monkeypatch.setattr(stream, "destination_for", lambda d, config: Down(d))
    kinesis = {"name": "s", "kind": "kinesis", "conn_id": "aws_unused", "stream_name": "s"}
    streaming = write_config(tmp_path, destinations=[kinesis])
    write_csv(
        tmp_path / "landing" / "form_entries" / "date=2022-04-30" / "david.csv",
        FORM_HEADER,
        [form("2022-04-30T09:00:00", "David", "Wilson", DAVID, "david-2")],
    )
    with pytest.raises(ConnectionError):
        stream.run_batch(streaming, run_id="b1")
    write_config(tmp_path)  # the daily DAG's pipeline.yml again
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    assert run_erasure(ERASE_DAY, built)["record"] == {"completed": ["r-1"], "pending": 0}

    tables = query(
        built,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema LIKE 'stream%'",
    )
    left = {
        f"{schema}.{table}"
        for schema, table in tables
        if query(
            built,
            f"SELECT count(*) FROM {schema}.{table} t "
            f"WHERE contains(lower(CAST(t AS VARCHAR)), '{DAVID}')",
        )[0][0]
    }
    assert left == set()


def test_an_erasure_leaves_the_schema_of_a_run_between_two_tasks(built, tmp_path):
    """Every task of the build marks its run in flight: the marker of extract and validate alone
    was gone once a run was cleared from resolve_identities, and the erasure dropped the schema
    build_profiles had just built, so publish fell back to the earlier try's exports."""
    from audience_profiles import pipeline

    window = RunWindow.for_date("2022-04-29")
    pipeline.resolve_identities(window, built)  # the run cleared from resolve_identities
    pipeline.build_profiles(window, built)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)

    schemas = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'run_%'"
    assert query(built, schemas) == [("run_20220429",)]
    pipeline.build_segments(window, built)  # the run goes on


@pytest.mark.parametrize("run_id", ["..", ".", "manual__a.b", "manual__a_b"])
def test_a_run_s_work_folder_is_its_own_whatever_its_id(tmp_path, run_id):
    """cleanup removes the run's folder. An id of ``..`` (Airflow allows it with
    allow_double_dot_in_ids) named the work folder itself, and ``.`` the erasure folder."""
    config = write_config(tmp_path)
    erasure = tmp_path / "work" / "erasure"
    keep = tmp_path / "work" / "runs" / "2022-04-30" / "audience_profiles.parquet"
    keep.parent.mkdir(parents=True)
    keep.write_text("another run's export")
    others = {work_folder(config, other) for other in ("..", ".", "manual__a.b", "manual__a_b")}

    folder = work_folder(config, run_id)
    folder.mkdir(parents=True)
    cleanup(run_id, config)

    assert folder.parent == erasure and len(others) == 4
    assert keep.exists() and not folder.exists()
