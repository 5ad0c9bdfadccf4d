"""Erasure requests that the simple case does not cover: a delete after a suppress for the same
person, an export scrub that fails half-way, and a person only the stream DAG has seen. The SQL
of the last two on both warehouse engines (DuckDB, and Snowflake through fakesnow)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from audience_profiles import landing
from audience_profiles.identity import load_rules
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import erasure, hash_identifier
from audience_profiles.privacy.erasure import run_erasure
from tests.privacy.people import (
    ANN,
    ANN_SESSION,
    BOB_SESSION,
    DAVID,
    export_mentions,
    file_request,
    interaction,
    log_rows,
    mentions,
    query,
)
from tests.support import IDENTITY_RULES, INTERACTION_HEADER, SEED_SESSION, write_csv

ERASE_DAY = "2022-04-30"
ANN_SSO = "sso-ann"


def drop_mentions(root, needle: str) -> list[str]:
    """Files of the local drop (plain CSV) that mention ``needle``."""
    return sorted(
        str(p) for p in (root / "output").rglob("part-*") if needle in p.read_text().lower()
    )


def test_a_delete_after_a_suppress_deletes_what_the_suppress_kept(built, tmp_path, monkeypatch):
    requests = tmp_path / "landing"
    bob_interactions = query(
        built, f"SELECT count(*) FROM interactions WHERE session_id = '{BOB_SESSION}'"
    )
    (ann_profile,) = query(
        built, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{ANN}'"
    )
    file_request(requests, "r-s", "email", ANN, kind="suppress")
    run_erasure(ERASE_DAY, built, run_id="first")
    # Her plain identifiers are purged with the finished request; her profile id is kept.
    assert query(built, "SELECT count(*) FROM erasure_subjects") == [(0,)]
    assert query(built, "SELECT * FROM suppressed_profiles") == [("r-s", ann_profile[0])]
    # Suppressed: her rows are kept out of processing, her profile left the graph, and what was
    # delivered before stays delivered.
    assert query(
        built, f"SELECT count(*) FROM restricted_interactions WHERE session_id = '{ANN_SESSION}'"
    ) == [(2,)]
    assert query(
        built,
        "SELECT count(*) FROM profile_identifiers WHERE profile_id IN "
        f"(SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{ANN}')",
    ) == [(0,)]
    assert drop_mentions(tmp_path, ANN_SESSION)

    # Now she asks to be forgotten, naming only her address.
    file_request(requests, "r-d", "email", ANN, kind="delete")
    owed = []
    real_pending = erasure.pending_erasures

    def pending_erasures(run_id, config):  # what destinations are told (removed at cleanup)
        path = real_pending(run_id, config)
        owed.extend(json.loads(Path(path).read_text())["requests"])
        return path

    monkeypatch.setattr(erasure, "pending_erasures", pending_erasures)
    result = run_erasure(ERASE_DAY, built, run_id="second")

    assert result["record"] == {"completed": ["r-d"], "pending": 0}
    # Destinations were told her profile id too (a stream sends profile_erased for it), though
    # the graph lost it with the suppress; once the delete is done, nothing of it is kept.
    assert [r["profile_ids"] for r in owed] == [[ann_profile[0]]]
    assert [None, None] not in owed[0]["identifiers"]
    assert query(built, "SELECT count(*) FROM suppressed_profiles") == [(0,)]
    # Everything the suppress kept goes: her session and SSO id too, not only the address.
    for needle in (ANN, ANN_SESSION, ANN_SSO):
        assert mentions(built, needle) == {}, needle
        assert drop_mentions(tmp_path, needle) == [], needle
    # Every entry of hers is a delete entry now, under the delete request.
    assert set(
        query(
            built, "SELECT identifier_type, identifier_hash, kind, request_id FROM suppression_list"
        )
    ) == {
        ("email", hash_identifier(ANN), "delete", "r-d"),
        ("session_id", hash_identifier(ANN_SESSION), "delete", "r-d"),
        ("external_id", hash_identifier(ANN_SSO), "delete", "r-d"),
    }
    assert (
        query(built, f"SELECT count(*) FROM interactions WHERE session_id = '{BOB_SESSION}'")
        == bob_interactions
    )

    # A new interaction on her session is deleted on arrival, not kept.
    day = "2022-05-01"
    write_csv(
        requests / "interactions" / f"date={day}" / "p.csv",
        INTERACTION_HEADER,
        [interaction(day, ANN_SESSION, 2)],
    )
    run_all(RunWindow.for_date(day), built)
    assert mentions(built, ANN_SESSION) == {}


def test_a_suppress_and_a_delete_in_one_batch_leave_only_delete_entries(built, tmp_path):
    file_request(tmp_path / "landing", "r-s", "external_id", ANN_SSO, kind="suppress")
    file_request(tmp_path / "landing", "r-d", "email", ANN, kind="delete")

    run_erasure(ERASE_DAY, built)

    assert query(built, "SELECT DISTINCT kind FROM suppression_list") == [("delete",)]
    for needle in (ANN, ANN_SESSION, ANN_SSO):
        assert mentions(built, needle) == {}, needle
    # the suppress kept nothing for later: the delete took her over
    assert query(built, "SELECT count(*) FROM suppressed_profiles") == [(0,)]


def test_a_request_stamped_with_the_unix_epoch_is_acted_on(built, tmp_path):
    """Form entries at the epoch are quarantined as a clock not set; a request is not: refused
    for its sender's unset clock, it would leave the person everywhere."""
    file_request(tmp_path / "landing", "r-0", "email", ANN, requested_at="1970-01-01T00:00:00Z")

    run_erasure(ERASE_DAY, built)

    assert query(built, "SELECT status, reason FROM erasure_requests") == [("done", None)]
    assert mentions(built, ANN) == {}


def test_a_delete_taking_over_an_unfinished_suppress_takes_its_profile_ids_too(
    built, tmp_path, monkeypatch
):
    """The suppress is still pending (its export scrub failed): its profile ids are in its own
    erasure_subjects, not yet in suppressed_profiles, and destinations must be told of them."""
    (ann_profile,) = query(
        built, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{ANN}'"
    )

    def disk_full(con, path, fmt, gzip, out):
        raise OSError("No space left on device")

    monkeypatch.setattr(erasure, "filter_file", disk_full)
    file_request(tmp_path / "landing", "r-s", "email", ANN, kind="suppress")
    with pytest.raises(erasure.ErasureIncompleteError, match="No space left"):
        run_erasure(ERASE_DAY, built, run_id="first")
    monkeypatch.undo()
    file_request(tmp_path / "landing", "r-d", "email", ANN, kind="delete")
    erasure.resolve_requests(erasure.read_requests(ERASE_DAY, "second", built), built)

    owed = query(built, "SELECT profile_id FROM erasure_subjects WHERE request_id = 'r-d'")
    assert ann_profile in owed


def test_a_failed_export_scrub_is_not_done_and_the_next_run_finishes_it(
    built, tmp_path, monkeypatch
):
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    real = erasure.filter_file
    calls = []

    def disk_full_after_one(con, path, fmt, gzip, out):
        calls.append(path)
        if len(calls) > 1:
            out.write_bytes(b"half a file")
            raise OSError(f"No space left on device: '{out}'")
        return real(con, path, fmt, gzip, out)

    monkeypatch.setattr(erasure, "filter_file", disk_full_after_one)
    with pytest.raises(erasure.ErasureIncompleteError, match="No space left"):
        run_erasure(ERASE_DAY, built)

    log = log_rows(built, "r-1")
    assert log["warehouse"][0] == "failed"
    assert log["warehouse"][1].startswith("run exports: OSError: No space left on device")
    assert "local_drop" not in log  # destinations wait for the warehouse step
    assert query(built, "SELECT status FROM erasure_requests") == [("pending",)]
    assert export_mentions(built, DAVID)
    assert not list((tmp_path / "work").rglob("*.erasing"))

    monkeypatch.setattr(erasure, "filter_file", real)
    result = run_erasure(ERASE_DAY, built, run_id="second")

    assert result["record"] == {"completed": ["r-1"], "pending": 0}
    assert export_mentions(built, DAVID) == [] and export_mentions(built, SEED_SESSION) == []
    assert export_mentions(built, ANN)
    log = log_rows(built, "r-1")
    assert log["warehouse"][0] == "done" and log["warehouse"][2] == 2
    assert log["warehouse"][1].endswith(" run export row(s)")
    assert log["local_drop"][0] == "done"
    assert mentions(built, DAVID) == {}


def ann_profile_id(config) -> str:
    [(profile_id,)] = query(
        config, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{ANN}'"
    )
    return profile_id


def test_a_failed_export_scrub_s_error_names_none_of_the_people_whatever_their_identifiers(
    built, tmp_path, monkeypatch, caplog
):
    """Its detail went to erasure_log and the task log redacted for emails only, and the error
    itself was raised as it was: into the task log and the failure alert, quoting Ann's SSO id
    (in another case), her session and her profile id."""
    profile_id = ann_profile_id(built)

    def quoting(con, path, fmt, gzip, out):
        raise OSError(
            f"cannot rewrite {path.name}: row of {ANN_SSO.upper()} on '{ANN_SESSION}' "
            f"(profile {profile_id}, {ANN})"
        )

    monkeypatch.setattr(erasure, "filter_file", quoting)
    file_request(tmp_path / "landing", "r-1", "external_id", ANN_SSO)
    caplog.set_level("INFO")
    with pytest.raises(erasure.ErasureIncompleteError) as err:
        run_erasure(ERASE_DAY, built)

    detail = log_rows(built, "r-1")["warehouse"][1]
    assert detail.startswith("run exports: OSError: cannot rewrite ")
    assert "<external_id> on '<session_id>' (profile <profile_id>, <email>)" in detail
    for text in (detail, str(err.value), caplog.text):
        for value in (ANN_SSO, ANN_SESSION, profile_id, ANN):
            assert value.lower() not in text.lower()
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_failed_destination_s_error_names_none_of_the_people_whatever_their_identifiers(
    built, tmp_path, monkeypatch, caplog
):
    """A destination's error (a service's answer quoting the contact) was redacted for emails
    only: an SSO id or a session went to erasure_log, XCom and the task log as it was. So does
    a detail the destination answers itself."""
    from audience_profiles.destinations.local import LocalDestination

    profile_id = ann_profile_id(built)

    def broken(self, requests):
        raise RuntimeError(f"404: no contact {ANN_SSO} (session={ANN_SESSION}, id {profile_id})")

    monkeypatch.setattr(LocalDestination, "erase", broken)
    file_request(tmp_path / "landing", "r-1", "external_id", ANN_SSO)
    caplog.set_level("INFO")
    erasure.resolve_requests(erasure.read_requests(ERASE_DAY, "r", built), built)
    erasure.remove_from_warehouse(built)
    pending = erasure.pending_erasures("r", built)

    result = erasure.erase_destination("local_drop", pending, built)

    detail = "RuntimeError: 404: no contact <external_id> (session=<session_id>, id <profile_id>)"
    assert result["statuses"] == {"r-1": {"status": "failed", "detail": detail}}

    def answers(self, requests):
        return {
            r.request_id: {"status": "failed", "detail": f"{ANN_SESSION} busy"} for r in requests
        }

    monkeypatch.setattr(LocalDestination, "erase", answers)
    result = erasure.erase_destination("local_drop", pending, built)
    assert result["statuses"]["r-1"]["detail"] == "<session_id> busy"
    with pytest.raises(erasure.ErasureIncompleteError):
        erasure.record_erasures([result], "r", built)
    assert log_rows(built, "r-1")["local_drop"][:2] == ("failed", "<session_id> busy")
    for value in (ANN_SSO, ANN_SESSION, profile_id):
        assert value not in caplog.text


def test_what_a_failed_try_took_out_is_announced_by_the_try_that_finishes(
    built, tmp_path, monkeypatch
):
    """The first try deletes the warehouse rows and rewrites one export, then fails: the second
    finds those rows gone. Its result (the erased asset event's extra) must still count them and
    name that export's date, and announce the request: it was announced by none (helper-112)."""
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    held = sorted(
        {Path(p).parents[1].name for n in (DAVID, SEED_SESSION) for p in export_mentions(built, n)}
    )
    real = erasure.filter_file
    rewrote: list[str] = []

    def disk_full_after_a_rewrite(con, path, fmt, gzip, out):
        if rewrote:
            raise OSError(f"No space left on device: '{out}'")
        result = real(con, path, fmt, gzip, out)
        if result[1]:
            rewrote.append(Path(path).parents[1].name)
        return result

    monkeypatch.setattr(erasure, "filter_file", disk_full_after_a_rewrite)
    with pytest.raises(erasure.ErasureIncompleteError, match="No space left"):
        run_erasure(ERASE_DAY, built)
    progress = tmp_path / "work" / "erasure" / "removal_progress.json"
    assert json.loads(progress.read_text())["exports_rewritten"] == rewrote
    assert DAVID.lower() not in progress.read_text().lower()  # counts and dates only

    monkeypatch.setattr(erasure, "filter_file", real)
    result = run_erasure(ERASE_DAY, built, run_id="second")

    removal = result["warehouse"]
    assert removal["requests"] == 1
    assert removal["rows_removed"]["audience_profiles"] == 1  # taken out by the first try
    assert removal["exports_rewritten"] == held  # the first try's date among them
    assert removal["rows_removed"]["run exports"] >= len(held)
    assert erasure.erased_event(removal, "second") == {"erased_by": "second", **removal}
    assert not progress.exists()  # announced once
    again = run_erasure(ERASE_DAY, built, run_id="third")
    assert erasure.erased_event(again["warehouse"], "third") is None


@pytest.mark.services
def test_a_person_only_the_stream_has_seen_is_erased_from_it(aws_conn, moto_server, tmp_path):
    from audience_profiles.stream import run_batch
    from tests.stream.support import (
        emitted,
        form_row,
        kinesis_config,
        of_type,
        profile_ids,
        write_forms,
        write_interactions,
    )
    from tests.support import write_seed_example

    config = kinesis_config(tmp_path, aws_conn, moto_server)
    root = tmp_path / "landing"
    write_seed_example(root)
    write_forms(
        root,
        "2022-04-28",
        "eve.csv",
        [form_row("2022-04-28T09:00:00", "Eve", "eve@x.org", "eve-s1")],
    )
    write_interactions(root, "2022-04-28", "votes.csv", [("2022-04-28", "eve-s1", 0)])
    run_batch(config, run_id="batch-1")
    (eve,) = profile_ids(config, moto_server, "eve@x.org")
    # The stream took the seed's David too; no daily build ran.
    stream_state = "SELECT identifier_value, profile_id FROM stream_identifiers ORDER BY ALL"
    david = [row for row in query(config, stream_state) if row[1] != eve]
    assert sorted(query(config, stream_state)) == sorted(
        [("eve-s1", eve), ("eve@x.org", eve), *david]
    )
    assert query(config, "SELECT count(*) FROM profile_identifiers") == [(0,)]

    file_request(root, "r-eve", "email", " Eve@X.org")
    result = run_erasure("2022-04-29", config)

    assert result["record"] == {"completed": ["r-eve"], "pending": 0}
    erased = of_type(emitted(config, moto_server), "profile_erased")
    assert [(r["profile_id"], r["payload"]["request_id"]) for r in erased] == [(eve, "r-eve")]
    for needle in ("eve@x.org", "eve-s1"):
        assert mentions(config, needle) == {}, needle
    assert query(config, stream_state) == david  # nobody else's
    assert set(query(config, "SELECT identifier_type, identifier_hash FROM suppression_list")) == {
        ("email", hash_identifier("eve@x.org")),
        ("session_id", hash_identifier("eve-s1")),
    }


# The same SQL on both engines: requests.sql and erase_warehouse.sql without a daily build.
ROWS = {
    "stream_identifiers": [
        "('email', 'eve@x.org', 'ap_eve', DATE '2022-04-28', TIMESTAMP '2022-04-28 10:00:00')",
        "('session_id', 'eve-s1', 'ap_eve', DATE '2022-04-28', TIMESTAMP '2022-04-28 10:00:00')",
        "('email', 'zed@x.org', 'ap_zed', DATE '2022-04-28', TIMESTAMP '2022-04-28 10:00:00')",
    ],
    "form_entries": [
        "(DATE '2022-04-28', TIMESTAMP '2022-04-28 09:00:00', 'Eve', 'Fan', 'eve@x.org', "
        "'eve@x.org', true, false, true, 'eve-s1', 'Quiz', 7, 'f.csv', 2)",
        "(DATE '2022-04-28', TIMESTAMP '2022-04-28 09:10:00', 'Zed', 'Fan', 'zed@x.org', "
        "'zed@x.org', true, false, true, 'zed-s1', 'Quiz', 7, 'f.csv', 3)",
    ],
    "interactions": [
        "(DATE '2022-04-28', DATE '2022-04-28', 'e', '54663', 'eve-s1', 1, 1, 'i.csv', 2)",
        "(DATE '2022-04-28', DATE '2022-04-28', 'e', '54663', 'zed-s1', 1, 1, 'i.csv', 3)",
    ],
    # Ann, suppressed earlier: her rows kept, her profile gone, her entries hashed on the list.
    "restricted_identities": [
        f"(DATE '2022-04-27', TIMESTAMP '2022-04-27 09:05:00', 'ann-s1', '{ANN_SSO}', '{ANN}', "
        "'Ann', 'Lee', 'id.csv', 2)",
    ],
    "restricted_interactions": [
        "(DATE '2022-04-27', DATE '2022-04-27', 'e', '54663', 'ann-s1', 2, 1, 'i.csv', 4)",
        "(DATE '2022-04-28', DATE '2022-04-28', 'e', '54663', 'ann-s1', 3, 1, 'i.csv', 5)",
    ],
    "restricted_quarantine": [
        "(DATE '2022-04-27', 'interactions', 'i.csv', 9, 'votes: not a number', "
        "'2022-04-27,e,54663,ann-s1,x,1')",
    ],
}


@pytest.fixture
def wh(wh):
    """The conftest's warehouse (each engine) with the stream DAG's state tables too."""
    wh.run_sql("stream/state")
    return wh


def test_requests_resolve_through_the_stream_and_take_over_a_suppress(wh, tmp_path):
    for table, rows in ROWS.items():
        for row in rows:
            wh.execute_script(f"INSERT INTO {table} VALUES {row}")
    for kind, value in (("email", ANN), ("session_id", "ann-s1"), ("external_id", ANN_SSO)):
        wh.execute_script(
            f"INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('{kind}', {wh.literal(hash_identifier(value))}, "
            "'suppress', 'r-s', TIMESTAMP '2022-04-27 12:00:00')"
        )
    # Eve's history: a profile anchored on her email merged into ap_old, which merged into hers
    # (both hers, the first found by its anchor); a live profile merged into hers and split off
    # again (Zed's now), and a merge of strangers (neither).
    eve_first = "ap_" + hashlib.md5(b"email:eve@x.org").hexdigest()[:20]
    wh.execute_script(
        "CREATE TABLE profile_merges (dt DATE, merged_profile_id VARCHAR, "
        "surviving_profile_id VARCHAR, merged_at TIMESTAMP, reason VARCHAR, "
        "identifier_type VARCHAR, identifier_value VARCHAR)"
    )
    for merged, survivor in (
        (eve_first, "ap_old"),
        ("ap_old", "ap_eve"),
        ("ap_zed", "ap_eve"),
        ("ap_x", "ap_y"),
    ):
        wh.execute_script(
            f"INSERT INTO profile_merges VALUES (DATE '2022-04-27', '{merged}', '{survivor}', "
            "TIMESTAMP '2022-04-27 10:00:00', 'regrouped', 'email', 'x@x.org')"
        )
    root = tmp_path / "landing"
    file_request(root, "r-eve", "email", "EVE@x.org ")
    file_request(root, "r-ann", "email", ANN)
    staged = landing.extract(
        "erasure_requests", ERASE_DAY, str(root), tmp_path / "requests.parquet", None
    )

    wh.run_sql(
        "privacy/requests",
        staged=wh.staged_relation(staged["path"]),
        graph_tables=["profile_identifiers", "stream_identifiers"],
        has_merges=True,
        **load_rules(IDENTITY_RULES).sql_params(),
    )
    wh.run_sql(
        "privacy/erase_warehouse",
        step="remove",
        current_tables=["profile_identifiers"],
        has_merges=False,
        has_audit=False,
        has_stream=True,
        has_stream_shared=True,
    )
    wh.run_sql("privacy/erase_warehouse", step="log", status="done", exported=0)

    assert set(
        wh.query(
            "SELECT request_id, identifier_type, identifier_value, profile_id FROM erasure_subjects"
        )
    ) == {
        ("r-eve", "email", "eve@x.org", None),
        ("r-eve", "email", "EVE@x.org", None),
        ("r-eve", "email", "eve@x.org", "ap_eve"),
        ("r-eve", "session_id", "eve-s1", "ap_eve"),
        ("r-eve", None, None, "ap_old"),
        ("r-eve", None, None, eve_first),
        ("r-ann", "email", ANN, None),
        ("r-ann", "session_id", "ann-s1", None),
        ("r-ann", "external_id", ANN_SSO, None),
    }
    assert wh.query("SELECT identifier_value FROM stream_identifiers") == [("zed@x.org",)]
    assert wh.query("SELECT session_id FROM form_entries") == [("zed-s1",)]
    assert wh.query("SELECT session_id FROM interactions") == [("zed-s1",)]
    for table in ("identities", "interactions", "quarantine", "form_entries"):
        assert wh.query(f"SELECT count(*) FROM restricted_{table}") == [(0,)], table
    assert wh.query("SELECT DISTINCT kind FROM suppression_list") == [("delete",)]
    assert sorted(
        wh.query(
            "SELECT request_id, status, attempts FROM erasure_log WHERE destination = 'warehouse'"
        )
    ) == [("r-ann", "done", 1), ("r-eve", "done", 1)]


def test_a_destination_disabled_during_an_erasure_gets_it_once_enabled_again(built, tmp_path):
    """A request must not finish (and forget the identifiers) while a destination that may hold
    the person is switched off: re-enabled, it erases them."""
    import yaml

    from tests.support import write_config

    dest = yaml.safe_load(Path(built.source_file).read_text())["destinations"][0]
    off = write_config(tmp_path, destinations=[{**dest, "enabled": False}])
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    run_erasure("2022-04-30", off)
    assert query(off, "SELECT status FROM erasure_requests") == [("pending",)]
    assert drop_files_naming(tmp_path, DAVID)  # the disabled drop still holds him

    on = write_config(tmp_path, destinations=[dest])
    run_erasure("2022-04-30", on, run_id="second")
    assert query(on, "SELECT status FROM erasure_requests") == [("done",)]
    assert drop_files_naming(tmp_path, DAVID) == []


def drop_files_naming(root: Path, needle: str) -> list[str]:
    return sorted(
        str(p)
        for p in (root / "output").rglob("part-*")
        if needle in p.read_text(errors="ignore").lower()
    )
