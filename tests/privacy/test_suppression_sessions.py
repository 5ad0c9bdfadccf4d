"""Sessions on the suppression list are devices, not people (docs/privacy.md, "Suppression in
every run"): a listed session covers the rows no one else claims, from the data of every run, and
an SSO row carrying a listed person puts that person's other identifiers on the list."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from audience_profiles import pipeline
from audience_profiles.identity import load_rules
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.erasure import (
    read_requests,
    remove_from_warehouse,
    resolve_requests,
    run_erasure,
)
from audience_profiles.privacy.suppression import apply_suppression
from tests.privacy.people import ANN, BOB, DAVID, file_request, form, interaction, mentions, query
from tests.support import (
    FORM_HEADER,
    IDENTITY_HEADER,
    IDENTITY_RULES,
    INTERACTION_HEADER,
    write_csv,
)

ERASE_DAY = "2022-04-30"
D1, D2, D3 = "2022-05-01", "2022-05-02", "2022-05-03"
CARLA = "carla@example.com"
EVE = "eve@example.com"
NEWCOMER = "newcomer@example.com"
SOURCE_TABLES = (
    "form_entries",
    "identities",
    "interactions",
    "interactions_enriched",
    "quarantine",
    "restricted_form_entries",
    "restricted_identities",
    "restricted_interactions",
    "restricted_quarantine",
)


def land(landing, source: str, ds: str, header: list, rows: list) -> None:
    write_csv(landing / source / f"date={ds}" / "p.csv", header, rows)


def drop_text(root, ds: str) -> str:
    return "".join(p.read_text() for p in sorted(root.glob(f"output/*/dt={ds}/part-*.csv")))


def listed(config) -> set[tuple]:
    return set(
        query(
            config,
            "SELECT identifier_type, identifier_hash, kind, request_id FROM suppression_list",
        )
    )


def sources(config) -> dict[str, list]:
    """Every source table and the suppression list (without its timestamps), sorted."""
    state = {t: sorted(query(config, f"SELECT * FROM {t}"), key=repr) for t in SOURCE_TABLES}
    state["suppression_list"] = sorted(listed(config))
    return state


def everything(config) -> dict[str, list]:
    state = sources(config)
    state["audience_profiles"] = sorted(
        query(
            config,
            "SELECT email, external_id, first_name, last_name, sessions, interactions "
            "FROM audience_profiles",
        ),
        key=repr,
    )
    return state


def run_days(config, *days: str) -> list[dict]:
    return [run_all(RunWindow.for_date(ds), config) for ds in days]


def assert_reruns_change_nothing(config, days: tuple[str, ...]) -> None:
    """Re-running the oldest day after the later ones changes no source table (point in time);
    re-running them all in order changes nothing at all."""
    before = everything(config)
    run_days(config, days[0])
    assert sources(config) == sources_of(before)
    run_days(config, *days)
    assert everything(config) == before


def sources_of(state: dict[str, list]) -> dict[str, list]:
    return {k: v for k, v in state.items() if k != "audience_profiles"}


def land_kiosk_days(landing) -> None:
    """D1: erased David alone on the kiosk (and on his phone). D2: Carla signs up on the kiosk,
    Eve's entry on it is quarantined. D3: the kiosk and David's phone only interact."""
    land(
        landing,
        "form_entries",
        D1,
        FORM_HEADER,
        [
            form(f"{D1}T09:00:00", "David", "Wilson", DAVID, "kiosk"),
            form(f"{D1}T12:00:00", "David", "Wilson", DAVID, "david-phone"),
        ],
    )
    land(
        landing,
        "interactions",
        D1,
        INTERACTION_HEADER,
        [interaction(D1, "kiosk", 0), interaction(D1, "david-phone", 1)],
    )
    land(
        landing,
        "form_entries",
        D2,
        FORM_HEADER,
        [
            form(f"{D2}T09:10:00", "Carla", "Diaz", CARLA, "kiosk"),
            form(f"{D2}T09:20:00", "Eve", "Moss", EVE, "kiosk", optin="Maybe"),
        ],
    )
    land(landing, "interactions", D2, INTERACTION_HEADER, [interaction(D2, "kiosk", 1)])
    land(
        landing,
        "interactions",
        D3,
        INTERACTION_HEADER,
        [interaction(D3, "kiosk", 2), interaction(D3, "david-phone", 3)],
    )


def test_a_later_user_of_an_erased_persons_session_keeps_her_rows(built, tmp_path):
    landing = tmp_path / "landing"
    file_request(landing, "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)
    land_kiosk_days(landing)

    results = run_days(built, D1, D2, D3)

    assert [r["validate"]["suppressed"] for r in results] == [
        {"form_entries": 2, "interactions": 2},
        {},
        {"interactions": 1},  # David's phone: nobody else ever claimed it
    ]
    # The kiosk was David's alone on D1: it joined the list, and covers D1 only.
    assert ("session_id", hash_identifier("kiosk"), "delete", "r-1") in listed(built)
    assert query(
        built,
        "SELECT CAST(dt AS VARCHAR), session_id, option FROM interactions "
        f"WHERE dt >= DATE '{D1}' ORDER BY dt",
    ) == [(D2, "kiosk", 1), (D3, "kiosk", 2)]
    assert query(built, f"SELECT session_id FROM form_entries WHERE email = '{CARLA}'") == [
        ("kiosk",)
    ]
    assert query(
        built, f"SELECT sessions, interactions FROM audience_profiles WHERE email = '{CARLA}'"
    ) == [(1, 2)]
    assert CARLA in drop_text(tmp_path, D3)
    # Eve's quarantined line names the kiosk and her own address: someone else's, it stays.
    assert query(built, f"SELECT count(*) FROM quarantine WHERE contains(raw, '{EVE}')") == [(1,)]
    # David's own rows stay gone.
    assert mentions(built, DAVID) == {}
    assert mentions(built, "david-phone") == {}
    assert DAVID not in drop_text(tmp_path, D3)

    assert_reruns_change_nothing(built, (D1, D2, D3))


def test_a_backfilled_day_takes_a_sessions_rows_up_to_the_day_before_its_later_claim(
    built, tmp_path
):
    """D2 is run last (a backfill): David, erased, entered his address on the kiosk that day,
    and Carla claimed it on D3, already loaded. The kiosk's votes before her claim go; hers,
    from D3 on, stay."""
    landing = tmp_path / "landing"
    file_request(landing, "r-1", "email", DAVID)
    run_erasure(ERASE_DAY, built)
    land(landing, "interactions", D1, INTERACTION_HEADER, [interaction(D1, "kiosk", 0)])
    land(
        landing,
        "form_entries",
        D2,
        FORM_HEADER,
        [form(f"{D2}T09:00:00", "David", "Wilson", DAVID, "kiosk")],
    )
    land(landing, "interactions", D2, INTERACTION_HEADER, [interaction(D2, "kiosk", 1)])
    land(
        landing,
        "form_entries",
        D3,
        FORM_HEADER,
        [form(f"{D3}T09:10:00", "Carla", "Diaz", CARLA, "kiosk")],
    )
    land(landing, "interactions", D3, INTERACTION_HEADER, [interaction(D3, "kiosk", 2)])

    run_days(built, D1, D3, D2)

    assert query(
        built,
        "SELECT CAST(dt AS VARCHAR), session_id, option FROM interactions "
        f"WHERE dt >= DATE '{D1}' ORDER BY dt",
    ) == [(D3, "kiosk", 2)]
    assert mentions(built, DAVID) == {}


def test_a_session_the_graph_gave_an_erased_person_is_not_taken_from_a_later_user(built, tmp_path):
    """David used the kiosk alone before his request: the request resolves it as his session."""
    landing = tmp_path / "landing"
    land(
        landing,
        "form_entries",
        D1,
        FORM_HEADER,
        [form(f"{D1}T09:00:00", "David", "Wilson", DAVID, "kiosk")],
    )
    land(landing, "interactions", D1, INTERACTION_HEADER, [interaction(D1, "kiosk", 0)])
    run_days(built, D1)
    file_request(landing, "r-1", "email", DAVID)
    run_erasure(D1, built)
    assert ("session_id", hash_identifier("kiosk"), "delete", "r-1") in listed(built)

    land(
        landing,
        "form_entries",
        D2,
        FORM_HEADER,
        [form(f"{D2}T09:10:00", "Carla", "Diaz", CARLA, "kiosk")],
    )
    land(landing, "interactions", D2, INTERACTION_HEADER, [interaction(D2, "kiosk", 1)])
    (result,) = run_days(built, D2)

    assert result["validate"]["suppressed"] == {}
    assert query(
        built, f"SELECT sessions, interactions FROM audience_profiles WHERE email = '{CARLA}'"
    ) == [(1, 1)]
    assert CARLA in drop_text(tmp_path, D2)
    assert mentions(built, DAVID) == {}
    assert query(built, f"SELECT count(*) FROM interactions WHERE dt = DATE '{D1}'") == [(0,)]

    assert_reruns_change_nothing(built, (D1, D2))


@pytest.mark.parametrize("named", ["email", "session_id"])
def test_a_delete_does_not_take_over_another_persons_suppress_through_a_shared_session(
    built, tmp_path, named
):
    """David suppressed, then used the kiosk alone (it joined the list under his request); Carla
    signed up on it later and asks to be deleted. Her request resolves the kiosk as hers, but a
    session is a device: it must not make David's entries, or his plain identifiers, hers."""
    landing = tmp_path / "landing"
    file_request(landing, "r-1", "email", DAVID, kind="suppress")
    run_erasure(ERASE_DAY, built)
    land_kiosk_days(landing)
    run_days(built, D1, D2, D3)
    assert ("session_id", hash_identifier("kiosk"), "suppress", "r-1") in listed(built)
    kept_for_david = f"SELECT count(*) FROM restricted_form_entries WHERE email = '{DAVID}'"
    (before,) = query(built, kept_for_david)

    # Carla names her address, or the kiosk she signed up on
    file_request(landing, "r-2", named, CARLA if named == "email" else "kiosk", kind="delete")
    resolve_requests(read_requests(ERASE_DAY, "erasure-2", built), built)
    subjects = query(
        built, "SELECT identifier_value FROM erasure_subjects WHERE request_id = 'r-2'"
    )
    assert DAVID not in {v for (v,) in subjects} and "david-phone" not in {v for (v,) in subjects}
    assert ("email", hash_identifier(DAVID), "suppress", "r-1") in listed(built)
    remove_from_warehouse(built)
    assert query(built, kept_for_david) == [before] != [(0,)]


def test_a_suppressed_persons_new_row_on_a_deleted_session_is_kept_not_deleted(built, tmp_path):
    """David suppressed; Carla's delete names the kiosk. A new form entry of David's on the kiosk
    is his: kept, as his suppress asks (the erase step keeps his older one the same way)."""
    landing = tmp_path / "landing"
    file_request(landing, "r-1", "email", DAVID, kind="suppress")
    run_erasure(ERASE_DAY, built)
    land_kiosk_days(landing)
    run_days(built, D1, D2, D3)
    file_request(landing, "r-2", "session_id", "kiosk", kind="delete")
    run_erasure(ERASE_DAY, built, run_id="erasure-2")
    day = "2022-05-04"
    land(landing, "form_entries", day, FORM_HEADER, [form(f"{day}T09:00:00", "David", "Wilson", DAVID, "kiosk")])  # fmt: skip

    run_days(built, day)

    kept = f"SELECT session_id FROM restricted_form_entries WHERE dt = DATE '{day}'"
    assert query(built, kept) == [("kiosk",)]


def land_newcomer_days(landing) -> None:
    """D1: the newcomer signs in with SSO (email and SSO id on one row), plus a row of theirs
    and one of Bob's with a placeholder SSO id. D2: the same SSO id, no email, a new session."""
    land(
        landing,
        "identities",
        D1,
        IDENTITY_HEADER,
        [
            [f"{D1}T09:00:00", "new-s1", "sso-new", NEWCOMER, "New", "Comer"],
            [f"{D1}T09:01:00", "new-s1", "unknown", NEWCOMER, "New", "Comer"],
            [f"{D1}T10:00:00", "bob-s2", "unknown", BOB, "Bob", "Stone"],
        ],
    )
    land(landing, "interactions", D1, INTERACTION_HEADER, [interaction(D1, "new-s1", 0)])
    land(
        landing,
        "identities",
        D2,
        IDENTITY_HEADER,
        [[f"{D2}T09:00:00", "new-s2", "sso-new", "", "New", "Comer"]],
    )
    land(landing, "interactions", D2, INTERACTION_HEADER, [interaction(D2, "new-s2", 1)])


def test_an_sso_row_carrying_an_erased_email_lists_its_sso_id(built, tmp_path):
    landing = tmp_path / "landing"
    file_request(landing, "r-new", "email", NEWCOMER)
    run_erasure(ERASE_DAY, built)
    land_newcomer_days(landing)

    results = run_days(built, D1, D2)

    assert [r["validate"]["suppressed"] for r in results] == [
        {"identities": 2, "interactions": 1},
        {"identities": 1, "interactions": 1},
    ]
    on_list = listed(built)
    assert ("external_id", hash_identifier("sso-new"), "delete", "r-new") in on_list
    assert ("session_id", hash_identifier("new-s1"), "delete", "r-new") in on_list
    assert ("session_id", hash_identifier("new-s2"), "delete", "r-new") in on_list
    # A placeholder is no one's identifier: it never joins the list, and Bob's row stays.
    assert not [r for r in on_list if r[1] == hash_identifier("unknown")]
    assert query(built, "SELECT email FROM identities WHERE session_id = 'bob-s2'") == [(BOB,)]
    # The person's own rows stay gone, and no profile or drop carries them.
    for personal in (NEWCOMER, "sso-new", "new-s1", "new-s2", "Comer"):
        assert mentions(built, personal) == {}, personal
        assert personal not in drop_text(tmp_path, D1) + drop_text(tmp_path, D2), personal
    assert query(built, f"SELECT count(*) FROM audience_profiles WHERE email = '{ANN}'") == [(1,)]

    assert_reruns_change_nothing(built, (D1, D2))


def test_the_sso_id_joins_the_list_with_the_requests_action(built, tmp_path):
    landing = tmp_path / "landing"
    file_request(landing, "r-s", "email", NEWCOMER, kind="suppress")
    run_erasure(ERASE_DAY, built)
    land_newcomer_days(landing)

    run_days(built, D1, D2)

    assert ("external_id", hash_identifier("sso-new"), "suppress", "r-s") in listed(built)
    assert sorted(query(built, "SELECT session_id, external_id FROM restricted_identities")) == [
        ("new-s1", "sso-new"),
        ("new-s1", "unknown"),
        ("new-s2", "sso-new"),
    ]
    assert {t for t in mentions(built, "sso-new") if not t.startswith("restricted_")} == set()
    assert "sso-new" not in drop_text(tmp_path, D2)


def land_tess_on_her_session(landing) -> None:
    """D1: Tess fills in a form on "their-session" and votes on it."""
    land(
        landing,
        "form_entries",
        D1,
        FORM_HEADER,
        [form(f"{D1}T09:00:00", "Tess", "Ray", "tess@example.com", "their-session")],
    )
    land(landing, "interactions", D1, INTERACTION_HEADER, [interaction(D1, "their-session", 0)])


def test_a_session_a_request_names_covers_every_row_on_it(built, tmp_path):
    """The requester's word that the session is theirs: an entry on it is theirs too."""
    landing = tmp_path / "landing"
    file_request(landing, "r-s1", "session_id", "their-session")
    run_erasure(ERASE_DAY, built)
    land_tess_on_her_session(landing)

    (result,) = run_days(built, D1)

    assert result["validate"]["suppressed"] == {"form_entries": 1, "interactions": 1}
    assert mentions(built, "tess@example.com") == {}
    assert "tess@example.com" not in drop_text(tmp_path, D1)


def test_a_session_request_filed_while_a_run_builds_is_left_out_at_publish(built, tmp_path):
    """Belt and braces: a profile carrying a session a request names is left out; one carrying
    a derived session and an address of its own is published."""
    landing = tmp_path / "landing"
    land_tess_on_her_session(landing)
    window = RunWindow.for_date(D1)
    staged = [pipeline.extract_source(s, window, built) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(window, staged, built)
    pipeline.enrich(window, built)
    pipeline.resolve_identities(window, built)
    pipeline.build_profiles(window, built)

    file_request(landing, "r-s1", "session_id", "their-session")
    run_erasure(D1, built)
    pipeline.check_quality(window, built)
    tables = pipeline.publish(window, built)
    pipeline.cleanup(window, built)

    exported = pq.read_table(tables["audience_profiles"]).to_pylist()
    assert exported and not [r for r in exported if "tess@" in str(r)]
    assert [r for r in exported if r["email"] == ANN]


# Both scenarios at the SQL level, on DuckDB and on Snowflake (fakesnow): partitions loaded as
# validation leaves them, then suppressed one by one.
PARTITIONS = {
    D1: {
        "form_entries": [
            f"(DATE '{D1}', TIMESTAMP '{D1} 09:00:00', 'David', 'Wilson', '{DAVID}', '{DAVID}', "
            "true, false, true, 'kiosk', 'Quiz', 7, 'f.csv', 2)"
        ],
        "identities": [
            f"(DATE '{D1}', TIMESTAMP '{D1} 09:00:00', 'new-s1', 'sso-new', '{NEWCOMER}', 'New', "
            "'Comer', 'i.csv', 2)",
            f"(DATE '{D1}', TIMESTAMP '{D1} 09:01:00', 'new-s1', 'unknown', '{NEWCOMER}', 'New', "
            "'Comer', 'i.csv', 3)",
        ],
        "interactions": [
            f"(DATE '{D1}', DATE '{D1}', 'e', '54663', 'kiosk', 0, 1, 'x.csv', 2)",
            f"(DATE '{D1}', DATE '{D1}', 'e', '54663', 'new-s1', 1, 1, 'x.csv', 3)",
        ],
    },
    D2: {
        "form_entries": [
            f"(DATE '{D2}', TIMESTAMP '{D2} 09:10:00', 'Carla', 'Diaz', '{CARLA}', '{CARLA}', "
            "true, false, true, 'kiosk', 'Quiz', 7, 'f.csv', 2)"
        ],
        "identities": [
            f"(DATE '{D2}', TIMESTAMP '{D2} 09:00:00', 'new-s2', 'sso-new', NULL, 'New', 'Comer', "
            "'i.csv', 2)"
        ],
        "interactions": [
            f"(DATE '{D2}', DATE '{D2}', 'e', '54663', 'kiosk', 2, 1, 'x.csv', 2)",
            f"(DATE '{D2}', DATE '{D2}', 'e', '54663', 'new-s2', 3, 1, 'x.csv', 3)",
        ],
    },
}


def load_and_suppress(wh, ds: str) -> dict[str, int]:
    """Load partition ``ds`` as validation does (replacing it), then suppress it."""
    for table, rows in PARTITIONS[ds].items():
        wh.execute_script(f"DELETE FROM {table} WHERE dt = DATE '{ds}'")
        wh.execute_script(f"INSERT INTO {table} VALUES {', '.join(rows)}")
    return apply_suppression(wh, ds, load_rules(IDENTITY_RULES))


def test_the_session_rules_are_the_same_on_both_engines(wh):
    for request_id, email in (("r-1", DAVID), ("r-new", NEWCOMER)):
        wh.execute_script(
            f"INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('email', {wh.literal(hash_identifier(email))}, "
            f"'delete', '{request_id}', TIMESTAMP '{ERASE_DAY} 12:00:00')"
        )

    assert load_and_suppress(wh, D1) == {"form_entries": 1, "identities": 2, "interactions": 2}
    assert load_and_suppress(wh, D2) == {"identities": 1, "interactions": 1}

    tables = {
        "form_entries": "SELECT email, session_id FROM form_entries",
        "identities": "SELECT session_id FROM identities",
        "interactions": "SELECT CAST(dt AS VARCHAR), session_id FROM interactions",
        "list": "SELECT identifier_type, identifier_hash, kind, request_id FROM suppression_list",
    }
    state = {name: sorted(wh.query(sql)) for name, sql in tables.items()}
    assert state["form_entries"] == [(CARLA, "kiosk")]
    assert state["identities"] == []
    assert state["interactions"] == [(D2, "kiosk")]
    assert sorted((t, h) for t, h, *_ in state["list"]) == sorted(
        [
            ("email", hash_identifier(DAVID)),
            ("email", hash_identifier(NEWCOMER)),
            ("external_id", hash_identifier("sso-new")),
            ("session_id", hash_identifier("kiosk")),
            ("session_id", hash_identifier("new-s1")),
            ("session_id", hash_identifier("new-s2")),
        ]
    )
    assert ("external_id", hash_identifier("sso-new"), "delete", "r-new") in state["list"]

    # Re-running either day (the partition read again) changes nothing.
    load_and_suppress(wh, D1)
    load_and_suppress(wh, D2)
    assert {name: sorted(wh.query(sql)) for name, sql in tables.items()} == state
