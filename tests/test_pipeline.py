"""The daily build, step by step, on small fixtures (no Airflow: the task bodies directly)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from audience_profiles import identity, pipeline
from audience_profiles.config import PROFILE_COLUMNS, PROJECT_ROOT
from audience_profiles.landing import LandingError
from audience_profiles.pipeline import DataQualityError, RunWindow, run_all
from tests.support import (
    FORM_HEADER,
    IDENTITY_HEADER,
    IDENTITY_RULES,
    INTERACTION_HEADER,
    SEED_EVENT,
    break_validation,
    write_config,
    write_csv,
    write_seed_example,
)

SEED_FINAL_ROW = (
    "David",
    "Wilson",
    "david.wilson@example.com",
    "2022-04-29",
    "Which team do you support?",
    "Manchester Blue",
)


def warehouse(config):
    return duckdb.connect(config.warehouse.path, read_only=True)


def test_seed_worked_example_gives_the_seed_final_illustration(tmp_path):
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    for ds in ("2022-01-11", "2022-04-29"):
        run_all(RunWindow.for_date(ds), config)
    with warehouse(config) as con:
        rows = con.execute(
            "SELECT first_name, last_name, email, CAST(interaction_date AS VARCHAR), attribute, option "
            "FROM audience_profile_interactions"
        ).fetchall()
    assert rows == [SEED_FINAL_ROW]
    # The same row is in the run's CSV drop, as a user would read it.
    drop = (
        tmp_path / "output" / "audience_profile_interactions" / "dt=2022-04-29" / "part-00000.csv"
    )
    assert ",".join(SEED_FINAL_ROW) in drop.read_text().replace('"', "")


# docs/data-contract.md, "Output tables": every export's columns, in order, with their types.
CONTRACT = {
    "interactions_enriched": "date DATE, event_id VARCHAR, poll_id VARCHAR, title VARCHAR, "
    "element_type VARCHAR, session_id VARCHAR, option BIGINT, option_label VARCHAR, votes BIGINT",
    "audience_profile_interactions": "profile_id VARCHAR, first_name VARCHAR, last_name VARCHAR, "
    "email VARCHAR, interaction_date DATE, attribute VARCHAR, option VARCHAR, poll_id VARCHAR, "
    "event_id VARCHAR, session_id VARCHAR, votes BIGINT",
    "audience_profiles": "profile_id VARCHAR, email VARCHAR, external_id VARCHAR, "
    "first_name VARCHAR, last_name VARCHAR, optin_1 BOOLEAN, optin_2 BOOLEAN, "
    "accept_terms BOOLEAN, first_seen TIMESTAMP, last_seen TIMESTAMP, sessions BIGINT, "
    "interactions BIGINT, answers VARCHAR, optin_1_at TIMESTAMP, optin_1_source VARCHAR, "
    "optin_2_at TIMESTAMP, optin_2_source VARCHAR, accept_terms_at TIMESTAMP, "
    "accept_terms_source VARCHAR",
    "profile_identifiers": "identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR",
    "profile_merges": "merged_profile_id VARCHAR, surviving_profile_id VARCHAR, "
    "merged_at TIMESTAMP, reason VARCHAR, identifier_type VARCHAR, identifier_value VARCHAR",
    "identity_link_audit": "rule VARCHAR, detail VARCHAR, left_type VARCHAR, left_value VARCHAR, "
    "right_type VARCHAR, right_value VARCHAR, observed_at TIMESTAMP, source VARCHAR, "
    "file VARCHAR, line BIGINT",
    "quarantine": "source VARCHAR, file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR",
    "segment_memberships": "segment_id VARCHAR, profile_id VARCHAR, since DATE",
}


def test_the_exports_hold_the_data_contract_s_columns_and_types(tmp_path):
    # Destinations, dashboards and downstream jobs depend on them: a change is a contract change.
    config = write_config(
        tmp_path, segments_config=str(PROJECT_ROOT / "include/config/segments.yml")
    )
    write_seed_example(tmp_path / "landing")
    for ds in ("2022-01-11", "2022-04-29"):
        run_all(RunWindow.for_date(ds), config)
    export = pipeline.run_dir(config, RunWindow.for_date("2022-04-29")) / "export"
    exported = {}
    for path in sorted(export.glob("*.parquet")):
        columns = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        exported[path.stem] = ", ".join(f"{name} {kind}" for name, kind, *_ in columns)
    assert exported == CONTRACT


def test_the_profile_columns_known_before_the_build_are_the_contract_s():
    # wait_for_landing checks segments.yml and the Dotdigital options against PROFILE_COLUMNS,
    # before anything is built: it must be what the build makes (the test above).
    columns = ", ".join(f"{name} {kind}" for name, kind in PROFILE_COLUMNS.items())
    assert columns == CONTRACT["audience_profiles"]


def test_interactions_before_a_form_entry_are_claimed_by_it(tmp_path):
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    # The session interacts on 04-27, before its only form entry on 04-28: the run of 04-27 knows
    # no profile; the run of 04-28 claims the earlier interaction.
    write_csv(
        landing / "interactions" / "date=2022-04-27" / "p.csv",
        INTERACTION_HEADER,
        [["2022-04-27", SEED_EVENT, "54663", "later-session", 2, 1]],
    )
    write_csv(
        landing / "form_entries" / "date=2022-04-28" / "p.csv",
        FORM_HEADER,
        [
            [
                "2022-04-28T10:00:00",
                "Ann",
                "Lee",
                "ann@example.com",
                "No",
                "",
                "Yes",
                "later-session",
                "Quiz",
                3,
            ]
        ],
    )
    first = run_all(RunWindow.for_date("2022-04-27"), config)
    assert first["profiles"]["profile_interactions"] == 0
    second = run_all(RunWindow.for_date("2022-04-28"), config)
    assert second["profiles"] == {"profiles": 1, "profile_interactions": 1}
    with warehouse(config) as con:
        profile = con.execute(
            "SELECT email, optin_1, optin_2, optin_1_source, answers FROM audience_profiles"
        ).fetchall()
    assert profile == [
        (
            "ann@example.com",
            False,
            None,
            "form:Quiz (3)",
            '{"Which team do you support?":"North London White"}',
        )
    ]


def test_bad_rows_are_quarantined_with_a_reason_naming_the_field(tmp_path):
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_csv(
        landing / "interactions" / "date=2022-04-29" / "bad.csv",
        INTERACTION_HEADER,
        [
            ["29/04/2022", "e", "54663", "s1", 0, 1],
            ["2022-04-29", "e", "54663", "s1", "first", 1],
            ["2022-04-29", "e", "54663", "", 0, 1],
            ["2022-04-29", "e", "54663", "s2", 1, 1],
        ],
    )
    write_csv(
        landing / "form_entries" / "date=2022-04-29" / "bad.csv",
        FORM_HEADER,
        [
            ["2022-04-29T10:00:00", "A", "B", "not-an-email", "Yes", "No", "Yes", "s1", "F", 1],
            ["2022-04-29T10:00:00", "A", "B", "a@example.com", "Maybe", "No", "Yes", "s1", "F", 1],
        ],
    )
    write_csv(
        landing / "identities" / "date=2022-04-29" / "bad.csv",
        IDENTITY_HEADER,
        [
            ["yesterday", "s1", "x1", "", "", ""],
        ],
    )
    staged = [
        pipeline.extract_source(s, RunWindow.for_date("2022-04-29"), config)
        for s in ("interactions", "elements", "form_entries", "identities")
    ]
    counts = pipeline.validate(RunWindow.for_date("2022-04-29"), staged, config)["sources"]
    assert counts["interactions"] == {"read": 5, "valid": 2, "quarantined": 3}
    assert counts["form_entries"] == {"read": 2, "valid": 0, "quarantined": 2}
    with warehouse(config) as con:
        reasons = con.execute(
            "SELECT source, line, reason FROM quarantine ORDER BY source, file, line"
        ).fetchall()
    assert reasons == [
        ("form_entries", 2, "email: malformed email"),
        ("form_entries", 3, "optin_1: expected Yes or No"),
        ("identities", 2, "observed_at: not an ISO timestamp"),
        ("interactions", 2, "date: not a YYYY-MM-DD date"),
        ("interactions", 3, "option: not a non-negative integer"),
        ("interactions", 4, "session_id: missing"),
    ]


@pytest.mark.parametrize("catalogue", ["missing", "header only"])
def test_a_day_of_interactions_without_a_catalogue_fails_validate(tmp_path, catalogue):
    # Replaced by no catalogue, every interaction was enriched without its title and option
    # label on a green run: no element row read, none kept, every count reconciled.
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    elements = landing / "elements" / "elements.csv"
    if catalogue == "missing":
        elements.unlink()
    else:
        elements.write_text(elements.read_text().splitlines()[0] + "\n")
    window = RunWindow.for_date("2022-04-29")
    staged = [
        pipeline.extract_source(s, window, config)
        for s in ("interactions", "elements", "form_entries", "identities")
    ]
    with pytest.raises(LandingError) as err:
        pipeline.validate(window, staged, config)
    assert str(err.value) == (
        f"{landing}/elements: no element row landed (no file, or files holding only their "
        "header), so the day's 1 interaction(s) would have no title or option label: land the "
        "element catalogue directly in that folder, then clear the task"
    )


def test_a_catalogue_of_only_quarantined_rows_is_not_loaded_and_fails_validate(tmp_path):
    # Every row bad (no title): the catalogue was replaced by none, and every interaction of the
    # day lost its title and label on a green run.
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    window = RunWindow.for_date("2022-04-29")

    def staged():
        return [
            pipeline.extract_source(s, window, config)
            for s in ("interactions", "elements", "form_entries", "identities")
        ]

    pipeline.validate(window, staged(), config)
    elements = landing / "elements" / "elements.csv"
    header, *rows = elements.read_text().splitlines()
    elements.write_text(
        "\n".join([header, *(r.replace("Which team do you support?", "") for r in rows)]) + "\n"
    )
    with pytest.raises(LandingError) as err:
        pipeline.validate(window, staged(), config)
    assert str(err.value).startswith(
        f"{landing}/elements: every one of its 4 element row(s) was quarantined (see the "
        "quarantine table, source elements): the catalogue is kept as it was"
    )
    with warehouse(config) as con:
        assert con.execute("SELECT count(*) FROM elements").fetchall() == [(4,)]
        assert con.execute(
            "SELECT count(*) FROM quarantine WHERE source = 'elements' AND reason = 'title: missing'"
        ).fetchall() == [(4,)]


def test_a_change_to_the_identity_rules_is_said_by_the_run_after_it(tmp_path, caplog):
    # Both of a run's snapshots use today's rules: a change regroups profiles with no
    # profile_merges row, and nothing told the operator to re-sync the consumers.
    rules = tmp_path / "identity.yml"
    rules.write_text(Path(IDENTITY_RULES).read_text())
    config = write_config(tmp_path, identity_config=str(rules))
    write_seed_example(tmp_path / "landing")
    run_all(RunWindow.for_date("2022-01-11"), config)
    same = run_all(RunWindow.for_date("2022-04-29"), config)  # comments aside, the same rules
    assert "rules_changed_since" not in same["identity"]
    rules.write_text(rules.read_text().replace("session_id: []", 'session_id: ["kiosk-1"]', 1))
    with caplog.at_level("INFO"):
        changed = run_all(RunWindow.for_date("2022-04-29"), config)
    assert changed["identity"]["rules_changed_since"] == "2022-01-11"
    assert "identity rules or their SQL changed since 2022-01-11: profiles may be" in caplog.text
    page = Path(changed["report"]["html"]).read_text()
    assert "<strong>Identity rules or their SQL changed</strong> since the run for 2022-01" in page


def test_a_rules_change_rolled_back_is_said_by_the_latest_date_run_again(tmp_path, caplog):
    """A rules change deployed for the latest date, then rolled back and that date run again:
    the date before it has the rules again, so nothing said that the snapshot consumers were
    told to take as a whole had been regrouped once more."""
    rules = tmp_path / "identity.yml"
    good = Path(IDENTITY_RULES).read_text()
    rules.write_text(good)
    config = write_config(tmp_path, identity_config=str(rules))
    write_seed_example(tmp_path / "landing")
    run_all(RunWindow.for_date("2022-01-11"), config)
    rules.write_text(good.replace("session_id: []", 'session_id: ["kiosk-1"]', 1))
    bad = run_all(RunWindow.for_date("2022-04-29"), config)
    assert bad["identity"]["rules_changed_since"] == "2022-01-11"
    rules.write_text(good)  # rolled back
    with caplog.at_level("INFO"):
        back = run_all(RunWindow.for_date("2022-04-29"), config)
    assert back["identity"]["rules_changed_since"] == "2022-04-29"
    assert "changed since the run for 2022-04-29" in caplog.text
    again = run_all(RunWindow.for_date("2022-04-29"), config)  # the same rules as its last build
    assert "rules_changed_since" not in again["identity"]
    # the earliest date built again under other rules (a backfill from the start): there is no
    # date before it to say it, so it says it itself
    rules.write_text(good.replace("session_id: []", 'session_id: ["kiosk-1"]', 1))
    older = run_all(RunWindow.for_date("2022-01-11"), config)
    assert older["identity"]["rules_changed_since"] == "2022-01-11"


def test_a_rules_change_rolled_back_on_an_older_date_is_said_by_that_date_run_again(tmp_path):
    """The change deployed for a date between others (re-run on its own), then rolled back and
    that date run again: the dates around it have the rules again, and only its own last build,
    which consumers were told to take, was grouped otherwise (helper-107's finding 5)."""
    rules = tmp_path / "identity.yml"
    good = Path(IDENTITY_RULES).read_text()
    rules.write_text(good)
    config = write_config(tmp_path, identity_config=str(rules))
    write_seed_example(tmp_path / "landing")
    for ds in ("2022-01-11", "2022-02-01", "2022-04-29"):
        run_all(RunWindow.for_date(ds), config)
    rules.write_text(good.replace("session_id: []", 'session_id: ["kiosk-1"]', 1))
    bad = run_all(RunWindow.for_date("2022-02-01"), config)
    assert bad["identity"]["rules_changed_since"] == "2022-01-11"
    rules.write_text(good)  # rolled back
    back = run_all(RunWindow.for_date("2022-02-01"), config)
    assert back["identity"]["rules_changed_since"] == "2022-02-01"
    again = run_all(RunWindow.for_date("2022-02-01"), config)
    assert "rules_changed_since" not in again["identity"]


def test_a_backfill_after_a_rules_change_is_said_by_its_first_date_and_the_latest(tmp_path):
    """Not by every date (each would name itself), and not by none: a backfill from the
    earliest date has no date before it to compare with (helper-112)."""
    rules = tmp_path / "identity.yml"
    good = Path(IDENTITY_RULES).read_text()
    rules.write_text(good)
    config = write_config(tmp_path, identity_config=str(rules))
    write_seed_example(tmp_path / "landing")
    dates = ("2022-01-11", "2022-02-01", "2022-04-28", "2022-04-29")
    for ds in dates:
        run_all(RunWindow.for_date(ds), config)
    rules.write_text(good.replace("session_id: []", 'session_id: ["kiosk-1"]', 1))
    said = {
        ds: run_all(RunWindow.for_date(ds), config)["identity"].get("rules_changed_since")
        for ds in dates[:3]  # a backfill of the earliest dates, short of the latest
    }
    assert said == {"2022-01-11": "2022-01-11", "2022-02-01": None, "2022-04-28": None}


def test_a_new_version_s_identity_sql_is_said_as_a_rules_change_is(tmp_path, monkeypatch):
    """An upgrade whose identity SQL groups profiles differently regroups them as a rules change
    does; comments and layout of the SQL do not count."""
    sql = tmp_path / "sql"
    shutil.copytree(identity.SQL_ROOT / "identity", sql / "identity")
    shutil.copytree(identity.SQL_ROOT / "privacy", sql / "privacy")
    monkeypatch.setattr(identity, "SQL_ROOT", sql)
    rules = identity.load_rules(IDENTITY_RULES)
    before = identity.rules_fingerprint(rules)
    links = sql / "identity" / "links.sql"
    links.write_text("-- a comment\n{# another #}\n" + links.read_text().replace(" ", "  "))
    assert identity.rules_fingerprint(rules) == before
    links.write_text(links.read_text().replace("SELECT", "SELECT DISTINCT", 1))
    changed = identity.rules_fingerprint(rules)
    assert changed != before
    macros = sql / "privacy" / "_macros.sql"  # imported by the identity macros
    macros.write_text(macros.read_text() + "{% macro extra() %}1{% endmacro %}\n")
    assert identity.rules_fingerprint(rules) != changed


def test_blocked_values_in_another_order_or_case_are_the_same_rules():
    """The SQL takes blocked values trimmed and lower-cased, and both lists as sets: reordering
    them, or writing Test@ for test@, told operators to have every consumer replace its copy."""
    rules = identity.load_rules(IDENTITY_RULES)
    values = {t: tuple(reversed(vs)) for t, vs in rules.blocked_values.items()}
    values["email"] = tuple(v.upper() + " " for v in values["email"])
    patterns = {t: tuple(reversed(ps)) for t, ps in rules.blocked_patterns.items()}
    assert any(len(vs) > 1 for vs in values.values()) and values["email"]
    reordered = dataclasses.replace(rules, blocked_values=values, blocked_patterns=patterns)
    assert identity.rules_fingerprint(reordered) == identity.rules_fingerprint(rules)
    more = {**rules.blocked_values, "email": (*rules.blocked_values["email"], "x@example.com")}
    added = dataclasses.replace(rules, blocked_values=more)
    assert identity.rules_fingerprint(added) != identity.rules_fingerprint(rules)


def test_a_date_run_before_the_earlier_dates_it_reads_says_so(tmp_path, caplog):
    # A backfill's first date runs without waiting for the one before, and a date cleared alone
    # in a new warehouse does too: green, with profiles missing the earlier dates' rows.
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")  # form entries of 2022-01-11, interactions of 04-29
    with caplog.at_level("INFO"):
        first = run_all(RunWindow.for_date("2022-04-29"), config)
    assert first["validate"]["unbuilt_dates"] == {"dates": 1, "names": ["2022-01-11"]}
    assert "1 earlier landing date(s) not loaded in the warehouse: 2022-01-11" in caplog.text
    assert "earlier landing dates not loaded, their rows in no profile: 1 (2022-01-11)" in (
        caplog.text  # the report's summary line
    )
    page = Path(first["report"]["html"]).read_text()
    assert "Earlier landing dates not loaded</strong>" in page and "1 (2022-01-11)" in page
    run_all(RunWindow.for_date("2022-01-11"), config)
    assert "unbuilt_dates" not in run_all(RunWindow.for_date("2022-04-29"), config)["validate"]
    # a date that ran, its rows since gone (retention, landed_files' month) and never published
    # (a failed check): its run says it is no stranger, and warning on every run would be noise
    with duckdb.connect(config.warehouse.path) as con:
        for table in ("form_entries", "landed_files", "published_snapshots"):
            con.execute(f"DELETE FROM {table} WHERE dt = DATE '2022-01-11'")
    assert "unbuilt_dates" not in run_all(RunWindow.for_date("2022-04-29"), config)["validate"]
    # but a run that failed before reading anything (its landing late) loaded nothing
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("UPDATE pipeline_runs SET rows_read = NULL WHERE ds = DATE '2022-01-11'")
    assert run_all(RunWindow.for_date("2022-04-29"), config)["validate"]["unbuilt_dates"]


def test_an_sso_login_with_a_placeholder_or_malformed_email_keeps_its_link(tmp_path):
    # SSO platforms send "null" or junk where they have no email: the login is still a login.
    # The row is kept; the identity rules leave the email out and audit its link.
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_csv(
        landing / "identities" / "date=2022-04-29" / "sso.csv",
        IDENTITY_HEADER,
        [
            ["2022-04-29T10:00:00", "s-null", "u-null", "NULL", "Ida", ""],
            ["2022-04-29T10:00:00", "s-junk", "u-junk", "not-an-email", "", ""],
        ],
    )
    window = RunWindow.for_date("2022-04-29")
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    counts = pipeline.validate(window, staged, config)["sources"]
    assert counts["identities"] == {"read": 2, "valid": 2, "quarantined": 0}
    pipeline.enrich(window, config)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    with warehouse(config) as con:
        people = con.execute(
            "SELECT first_name, email FROM run_20220429.audience_profiles "
            "WHERE external_id LIKE 'u-%' ORDER BY external_id"
        ).fetchall()
        profiles = con.execute(
            "SELECT string_agg(identifier_type || ':' || identifier_value, ' ' "
            "ORDER BY identifier_type, identifier_value) FROM run_20220429.profile_identifiers "
            "WHERE identifier_value LIKE '%-null' OR identifier_value LIKE '%-junk' "
            "GROUP BY profile_id ORDER BY 1"
        ).fetchall()
        audited = con.execute(
            "SELECT left_value, right_value, rule, detail FROM run_20220429.identity_link_audit "
            "WHERE left_type = 'external_id' ORDER BY left_value"
        ).fetchall()
    assert people == [(None, None), ("Ida", None)]  # the names stay; the emails go
    assert profiles == [
        ("external_id:u-junk session_id:s-junk",),
        ("external_id:u-null session_id:s-null",),
    ]
    assert audited == [
        ("u-junk", "not-an-email", "blocked_value", "email not a valid email"),
        ("u-null", "null", "blocked_value", "email blocked value"),
    ]


def test_rerunning_a_date_gives_identical_outputs(tmp_path):
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=2_000, days=2))
    for ds in ("2022-04-25", "2022-04-26"):
        run_all(RunWindow.for_date(ds), config)
    first = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "output").rglob("part-*")}
    run_all(RunWindow.for_date("2022-04-26"), config)
    run_all(RunWindow.for_date("2022-04-25"), config)  # an older date re-run after a later one
    again = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "output").rglob("part-*")}
    assert again == first
    with warehouse(config) as con:
        latest = con.execute("SELECT max(dt) FROM published_snapshots").fetchall()[0][0]
        profiles = con.execute("SELECT count(*) FROM audience_profiles").fetchall()[0][0]
    assert str(latest) == "2022-04-26"
    part = tmp_path / "output" / "audience_profiles" / "dt=2022-04-26" / "part-00000.json"
    assert profiles == len(part.read_text().splitlines())


def test_failed_quality_check_stops_before_delivery(tmp_path):
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    run_all(RunWindow.for_date("2022-01-11"), config)  # David's form entry: one profile
    window = RunWindow.for_date("2022-04-29")
    staged = [
        pipeline.extract_source(s, window, config)
        for s in ("interactions", "elements", "form_entries", "identities")
    ]
    pipeline.validate(window, staged, config)
    pipeline.enrich(window, config)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    with duckdb.connect(config.warehouse.path) as con:  # corrupt the run's output on purpose
        con.execute(
            f"INSERT INTO {window.run_schema}.audience_profiles SELECT * FROM {window.run_schema}.audience_profiles"
        )
    with pytest.raises(DataQualityError, match="audience_profiles.profile_id unique"):
        pipeline.check_quality(window, config)


def _build_to_checks(window, config, *, after_validate=None):
    staged = [
        pipeline.extract_source(s, window, config)
        for s in ("interactions", "elements", "form_entries", "identities")
    ]
    pipeline.validate(window, staged, config)
    if after_validate:
        with duckdb.connect(config.warehouse.path) as con:
            con.execute(after_validate)
    pipeline.enrich(window, config)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)


def test_a_run_that_lost_most_profiles_stops_before_delivery(tmp_path):
    """The volume guard: history lost from the warehouse (here every identity row) would
    have synced every destination down to what is left; the run stops at its checks instead,
    naming the counts, and runs once the setting says the drop is meant."""
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=3_000, days=2))
    first = run_all(RunWindow.for_date("2022-04-25"), config)
    before = first["report"]["profiles"]
    assert before > 20
    window = RunWindow.for_date("2022-04-26")
    # Two sources truncated (a mistaken clean-up job): the build is left with no identity row.
    _build_to_checks(
        window, config, after_validate="DELETE FROM form_entries; DELETE FROM identities"
    )
    with pytest.raises(DataQualityError, match="keeps at least 50%") as failed:
        pipeline.check_quality(window, config)
    assert f"The run has 0 profiles against {before} published for 2022-04-25" in str(failed.value)
    assert "quality.min_profiles_kept" in str(failed.value)
    assert not (tmp_path / "output" / "audience_profiles" / "dt=2022-04-26").exists()

    # The drop is meant: the operator turns the guard off for the run.
    config = write_config(tmp_path, quality={"min_profiles_kept": 0})
    assert pipeline.check_quality(window, config) == {"checks": 6, "failed": 0}


def test_the_volume_guard_compares_with_what_the_earlier_date_published(tmp_path):
    """A re-run of the date before that stopped at its checks (and reported 0 profiles under
    the same run id, as a cleared Airflow run does) published nothing: the next date is still
    held to what that date published."""
    from audience_profiles import report
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=3_000, days=3))
    run_all(RunWindow.for_date("2022-04-25"), config)
    published = run_all(RunWindow.for_date("2022-04-26"), config)["report"]["profiles"]
    truncate = "DELETE FROM form_entries; DELETE FROM identities"
    again = RunWindow.for_date("2022-04-26")
    _build_to_checks(again, config, after_validate=truncate)
    with pytest.raises(DataQualityError):
        pipeline.check_quality(again, config)
    report.write_report(again, {"build_profiles": {"profiles": 0}}, {}, config)

    window = RunWindow.for_date("2022-04-27")
    _build_to_checks(window, config, after_validate=truncate)
    with pytest.raises(DataQualityError, match=f"against {published} published for 2022-04-26"):
        pipeline.check_quality(window, config)


def test_the_volume_guard_holds_against_a_date_an_older_version_published(tmp_path):
    """Dates published before the count was recorded: the run report's count stands in, or
    the guard would be off for the first date after an upgrade (and for backfills before it)."""
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=3_000, days=2))
    published = run_all(RunWindow.for_date("2022-04-25"), config)["report"]["profiles"]
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("UPDATE published_snapshots SET profiles = NULL")  # as an older version left it

    window = RunWindow.for_date("2022-04-26")
    _build_to_checks(
        window, config, after_validate="DELETE FROM form_entries; DELETE FROM identities"
    )
    with pytest.raises(DataQualityError, match=f"against {published} published for 2022-04-25"):
        pipeline.check_quality(window, config)


def test_the_volume_guard_passes_a_first_date_and_growth(tmp_path):
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path, quality={"min_profiles_kept": 1})  # not one profile fewer
    generate(GenerateOptions(out=tmp_path / "landing", interactions=2_000, days=2))
    for ds in ("2022-04-25", "2022-04-26"):  # nothing before the first; the second has more
        result = run_all(RunWindow.for_date(ds), config)
        assert result["checks"] == {"checks": 7, "failed": 0}


CONSENT_CHECK = "consent: every opt-in has its statement time and source"
CORRUPTIONS = [  # (check name, how a faulty build would break it in the run's schema)
    (
        "profile_identifiers: one profile per identifier",
        "INSERT INTO {rs}.profile_identifiers "
        "SELECT * REPLACE ('ap_someone_else' AS profile_id) FROM {rs}.profile_identifiers",
    ),
    (
        "profile_merges: merged-away ids are not live",
        "INSERT INTO {rs}.profile_merges SELECT profile_id, 'ap_x', "
        "TIMESTAMP '2022-04-29 10:00:00', 'regrouped', 'email', email FROM {rs}.audience_profiles",
    ),
    *[
        (CONSENT_CHECK, f"UPDATE {{rs}}.audience_profiles SET {column} = NULL")
        for column in ("optin_1_at", "optin_2_source", "accept_terms_at")
    ],
    (
        "interactions_enriched reconciles with interactions for the partition",
        "DELETE FROM interactions_enriched WHERE dt = DATE '2022-04-29'",
    ),
    (
        "audience_profiles.email is normalised",
        "UPDATE {rs}.audience_profiles SET email = upper(email)",
    ),
]


@pytest.mark.parametrize(("check", "corruption"), CORRUPTIONS)
def test_each_quality_check_stops_the_build_that_breaks_it(tmp_path, check, corruption):
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    run_all(RunWindow.for_date("2022-01-11"), config)  # David: every consent stated
    window = RunWindow.for_date("2022-04-29")
    _build_to_checks(window, config)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute(corruption.format(rs=window.run_schema))
    # that check alone, with the rows that break it
    with pytest.raises(
        DataQualityError, match=rf"nothing delivered: {re.escape(check)} \(\d+ row\(s\)\)$"
    ):
        pipeline.check_quality(window, config)


@pytest.mark.parametrize(
    ("lose", "where"),
    [
        # a row validation kept that then went missing from the table
        (
            {"sql": "DELETE FROM interactions WHERE _line = 2;"},
            r"in 1 file\(s\): \S+/interactions/date=2022-04-29/part-0.csv \(1 valid, 0 in "
            r"interactions; 0 quarantined, 0 in quarantine\)$",
        ),
        # a row gone before validation looked at it: the staged file's rows are not those read
        (
            {"staged": "(SELECT * FROM {staged} WHERE _line <> 2)"},
            r"in 1 file\(s\): \S+/part-0.csv \(1 staged, 0 read by validation\)$",
        ),
        # a row in the table that no file read brought (its _file lost)
        (
            {"sql": "INSERT INTO interactions SELECT * REPLACE (NULL AS _file) FROM interactions;"},
            r"; 1 row\(s\) in interactions and 0 in quarantine of no file read$",
        ),
    ],
    ids=["lost-after-validation", "lost-before-validation", "of-no-file"],
)
def test_a_row_lost_in_validation_fails_it_naming_where(tmp_path, monkeypatch, lose, where):
    """Rows read = kept + quarantined: a validation that loses a row (its script changed) fails
    the task instead of building the day without it, and the error names where the rows went
    astray: the file whose rows are not where validation counted them, or that validation did
    not read all of, and rows that came from no file read."""
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    break_validation(monkeypatch, "interactions", **lose)
    window = RunWindow.for_date("2022-04-29")
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    with pytest.raises(
        pipeline.ReconciliationError,
        match=r"^interactions 2022-04-29: read 1 row\(s\) but kept \d, quarantined 0, .*" + where,
    ):
        pipeline.validate(window, staged, config)


def test_every_input_row_is_in_an_output_or_quarantine(tmp_path):
    from audience_profiles.generate import GenerateOptions, generate

    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=3_000, days=2, dirty_rate=0.01))
    results = [run_all(RunWindow.for_date(ds), config) for ds in ("2022-04-25", "2022-04-26")]
    for result in results:
        for source, c in result["validate"]["sources"].items():
            assert c["read"] == c["valid"] + c["quarantined"], source
    quarantined = sum(r["validate"]["sources"]["interactions"]["quarantined"] for r in results)
    assert quarantined > 0
    with warehouse(config) as con:
        enriched = con.execute("SELECT count(*) FROM interactions_enriched").fetchall()[0][0]
    read = sum(r["validate"]["sources"]["interactions"]["read"] for r in results)
    assert enriched + quarantined == read


def test_counts_reconcile_per_file_too(tmp_path, caplog):
    """landed_files holds each file's read, valid and quarantined rows: they add up per file, to
    the source's counts, and to the quarantine's rows of the file; the run's output names the
    files with quarantined rows, most first."""
    from audience_profiles.generate import GenerateOptions, generate

    caplog.set_level(logging.INFO, logger="audience_profiles")
    config = write_config(tmp_path)
    generate(GenerateOptions(out=tmp_path / "landing", interactions=3_000, days=1, dirty_rate=0.02))
    ds = "2022-04-25"  # the generator's first date (it adds a few odd ones)
    extra = tmp_path / "landing" / "interactions" / f"date={ds}" / "extra-part.csv"
    extra.write_text("date,event_id,poll_id,session_id,option,votes\n" + f"{ds},e1,p1,,1,1\n" * 3)
    result = run_all(RunWindow.for_date(ds), config)["validate"]
    with warehouse(config) as con:
        files = con.execute(
            "SELECT source, file, rows_read, rows_valid, rows_quarantined, rows_aged_out "
            f"FROM landed_files WHERE dt = DATE '{ds}'"
        ).fetchall()
        in_quarantine = dict(
            con.execute(
                f"SELECT file, count(*) FROM quarantine WHERE dt = DATE '{ds}' GROUP BY file"
            ).fetchall()
        )
    assert len(files) >= 4 and all(read == valid + q + aged for _, _, read, valid, q, aged in files)
    assert {f[5] for f in files} == {0}  # nothing aged out: retention is off
    for source, counts in result["sources"].items():
        if source != "elements":  # the catalogue is not dated: no landed_files rows
            mine = [f for f in files if f[0] == source]
            assert sum(f[2] for f in mine) == counts["read"], source
            assert sum(f[4] for f in mine) == counts["quarantined"], source
    assert {f[1]: f[4] for f in files if f[4]} == {
        file: n for file, n in in_quarantine.items() if "elements" not in file
    }
    by_file = result["quarantine_by_file"]
    assert by_file["files"] == len(in_quarantine) >= 2
    assert ["interactions", str(extra), 3, 3] in by_file["top"]  # each without a session_id
    # and the task log names them, with how many of each one's rows
    (line,) = [r.getMessage() for r in caplog.records if "rows in quarantine" in r.getMessage()]
    assert line.startswith(f"{by_file['files']} file(s) with rows in quarantine, most first: ")
    assert f"{by_file['top'][0][1]} ({by_file['top'][0][3]} of {by_file['top'][0][2]})" in line
    assert [t[3] for t in by_file["top"]] == sorted((t[3] for t in by_file["top"]), reverse=True)


def test_a_date_with_no_data_reports_zeros_not_nulls(tmp_path):
    # DuckDB's count_if gives NULL over no rows: the run report said "None new" profiles.
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    result = run_all(RunWindow.for_date("2022-01-10"), config)  # before the seed's first row
    assert result["enrich"] == {"rows": 0, "without_element": 0}
    assert (result["identity"]["profiles"], result["identity"]["profiles_created"]) == (0, 0)
    assert result["profiles"] == {"profiles": 0, "profile_interactions": 0}
    assert result["checks"]["failed"] == 0


def test_a_required_partition_missing_fails_the_run_before_anything_is_written(tmp_path):
    # As the DAG's wait_for_landing past its deadline: the run built the day from no rows.
    config = write_config(tmp_path, landing_wait={"required": ["interactions"]})
    write_seed_example(tmp_path / "landing")  # 2022-01-11 is the seed's form entry alone
    with pytest.raises(pipeline.LandingNotReady, match="interactions: .*date=2022-01-11: no data"):
        run_all(RunWindow.for_date("2022-01-11"), config)
    assert not os.path.exists(config.warehouse.path)
    write_csv(
        tmp_path / "landing" / "interactions" / "date=2022-01-11" / "part-0.csv",
        INTERACTION_HEADER,
        [],
    )  # the day had no interactions: said so with a file of only its header
    assert run_all(RunWindow.for_date("2022-01-11"), config)["enrich"]["rows"] == 0


def reported_late(config, ds: str) -> list:
    with warehouse(config) as con:
        (report,) = con.execute(
            f"SELECT report FROM pipeline_runs WHERE ds = DATE '{ds}'"
        ).fetchone()
    return json.loads(report)["late_landings"]


def test_files_landing_after_their_date_was_built_are_reported_until_it_is_run_again(tmp_path):
    # Without a wait, or past it: a file of 04-29 landing after 04-29's run is in no output, and
    # 04-30's run reads only its own partitions. Its report says so, as does every later one.
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    run_all(RunWindow.for_date("2022-04-29"), config)
    late_part = landing / "interactions" / "date=2022-04-29" / "part-1.csv"
    write_csv(late_part, INTERACTION_HEADER, [["2022-04-29", SEED_EVENT, "54663", "s-late", 1, 1]])
    (landing / "interactions" / "date=2022-04-29" / "_SUCCESS").touch()  # no data: not reported
    run_all(RunWindow.for_date("2022-04-30"), config)  # it found no identities partition
    write_csv(  # 04-30's SSO logins land after its run too
        landing / "identities" / "date=2022-04-30" / "part-0.csv",
        IDENTITY_HEADER,
        [["2022-04-30T10:00:00", "s-late", "sso-1"]],
    )
    run_all(RunWindow.for_date("2022-05-01"), config)
    assert reported_late(config, "2022-04-30") == [
        {"source": "interactions", "date": "2022-04-29", "files": 1, "names": [str(late_part)]}
        | {"stream": False}  # no stream DAG would merge them
    ]
    assert reported_late(config, "2022-05-01") == [
        {"source": "interactions", "date": "2022-04-29", "files": 1, "names": [str(late_part)]}
        | {"stream": False},
        {
            "source": "identities",
            "date": "2022-04-30",
            "files": 1,
            "names": [str(landing / "identities" / "date=2022-04-30" / "part-0.csv")],
            "stream": False,
        },
    ]
    run_all(RunWindow.for_date("2022-04-29"), config)  # run again: its files are built in
    assert reported_late(config, "2022-04-29") == []  # it looks back from its date, not on
    seed_part = landing / "interactions" / "date=2022-04-29" / "part-0.csv"
    os.utime(seed_part, ns=(1, 1))  # replaced (a correction): another version than was read
    run_all(RunWindow.for_date("2022-04-30"), config)  # it reads its SSO logins now
    assert [(e["date"], e["names"]) for e in reported_late(config, "2022-04-30")] == [
        ("2022-04-29", [str(seed_part)])
    ]


def test_late_files_of_a_date_past_retention_are_not_reported(tmp_path):
    # A run again would count their rows as aged out, not load them: "run it again" was no help.
    config = write_config(tmp_path, retention={"interactions_days": 1})
    landing = tmp_path / "landing"
    write_seed_example(landing)
    run_all(RunWindow.for_date("2022-04-29"), config)
    late_part = landing / "interactions" / "date=2022-04-29" / "part-1.csv"
    write_csv(late_part, INTERACTION_HEADER, [["2022-04-29", SEED_EVENT, "54663", "s-late", 1, 1]])
    assert [e["date"] for e in pipeline.late_landings(config, "2022-04-30")] == ["2022-04-29"]
    assert pipeline.late_landings(config, "2022-05-01") == []  # 04-29 is past the cutoff now


def test_a_run_without_a_logical_date_fails_at_once_saying_why():
    from airflow.sdk.exceptions import AirflowFailException

    from audience_profiles.pipeline import RunWindow

    # `airflow dags trigger` without --logical-date: the context has no ds
    with pytest.raises(AirflowFailException, match="has no logical date.*--logical-date"):
        RunWindow.from_context({"run_id": "manual__2026-11-30T00:00:00"})
    assert RunWindow.from_context({"ds": "2022-04-29", "run_id": "r"}).interval_end == (
        "2022-04-30 00:00:00"
    )
    # a mistyped year: its date would count as reached, and age out every later run's rows
    with pytest.raises(AirflowFailException, match="2099-04-29 is after tomorrow"):
        RunWindow.from_context({"ds": "2099-04-29", "run_id": "manual__2099"})
    tomorrow = pipeline.latest_allowed_date()
    assert RunWindow.from_context({"ds": tomorrow, "run_id": "r"}).ds == tomorrow


def test_publish_again_after_cleanup_hands_on_the_exports_it_completed(tmp_path):
    """Clearing `deliver` in Airflow clears `publish` too (the setup of the `cleanup` teardown),
    after `cleanup` dropped the run's schema: publish hands on the earlier, complete exports."""
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    window = RunWindow.for_date("2022-04-29")
    run_all(window, config)  # ends with cleanup: the run's schema is gone
    export_dir = tmp_path / "work" / "runs" / "2022-04-29" / "export"
    before = {p.name: p.read_bytes() for p in export_dir.glob("*.parquet")}

    tables = pipeline.publish(window, config)

    assert sorted(tables) == sorted(name.removesuffix(".parquet") for name in before)
    assert {p.name: p.read_bytes() for p in export_dir.glob("*.parquet")} == before
    (export_dir / pipeline.PUBLISHED_MARKER).unlink()  # an export that never completed
    with pytest.raises(RuntimeError, match="is gone and no complete export.*clear the run"):
        pipeline.publish(window, config)


def test_a_step_cleared_after_cleanup_redoes_its_work_or_says_what_to_clear(tmp_path):
    """Clearing validate or a build step with Downstream after the run finished: validate found
    its staged files gone and the builds their run schema, every try; build_segments blamed
    segments.yml. validate now stages again; the builds fail at once naming what to clear."""
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    window = RunWindow.for_date("2022-04-29")
    first = run_all(window, config)
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    pipeline.cleanup(window, config)  # as the run ended: staged files and run schema are gone

    again = pipeline.validate(window, staged, config)
    assert again["sources"] == first["validate"]["sources"]
    for step in (pipeline.build_profiles, pipeline.build_segments, pipeline.check_quality):
        with pytest.raises(pipeline.RunBuildMissing, match="clear resolve_identities with Down"):
            step(window, config)
    pipeline.enrich(window, config)  # clearing from resolve_identities: the build is back
    pipeline.resolve_identities(window, config)
    assert pipeline.build_profiles(window, config) == first["profiles"]


def test_a_publish_that_dies_half_way_does_not_leave_the_earlier_publish_complete(
    tmp_path, monkeypatch
):
    """Its exports overwrote some of the earlier publish's: after cleanup, publishing again must
    not hand on that mix of two builds as the earlier publish's complete exports."""
    from audience_profiles.warehouse.duckdb import DuckDBWarehouse

    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    window = RunWindow.for_date("2022-04-29")
    run_all(window, config)
    real = DuckDBWarehouse.export_parquet

    def disk_full_at_profiles(self, relation, path):
        if path.endswith("audience_profiles.parquet"):
            raise OSError("disk full")
        return real(self, relation, path)

    monkeypatch.setattr(DuckDBWarehouse, "export_parquet", disk_full_at_profiles)
    with pytest.raises(OSError, match="disk full"):
        run_all(window, config)  # the date rebuilt; its publish dies after the first exports
    monkeypatch.setattr(DuckDBWarehouse, "export_parquet", real)
    pipeline.cleanup(window, config)  # the teardown runs after a failed publish too
    with pytest.raises(RuntimeError, match="is gone and no complete export"):
        pipeline.publish(window, config)


def test_kept_exports_are_not_delivered_again_while_an_erasure_is_half_done(tmp_path):
    """Resolved, the request's person is listed, but the kept exports still hold them until the
    erasure DAG's remove_from_warehouse rewrites them: publish must not hand them on till then."""
    from audience_profiles.privacy import erasure
    from tests.privacy.people import file_request

    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    window = RunWindow.for_date("2022-04-29")
    run_all(window, config)  # ends with cleanup: publish would hand on the kept exports
    file_request(tmp_path / "landing", "r-1", "email", "david.wilson@example.com")
    erasure.resolve_requests(erasure.read_requests("2022-04-30", "e1", config), config)

    with pytest.raises(RuntimeError, match="1 erasure request.*not yet out of the kept exports"):
        pipeline.publish(window, config)
    erasure.remove_from_warehouse(config)
    tables = pipeline.publish(window, config)
    with duckdb.connect() as con:
        emails = con.execute(
            "SELECT email FROM read_parquet(?)", [tables["audience_profiles"]]
        ).fetchall()
    assert ("david.wilson@example.com",) not in emails


def test_cleanup_removes_what_killed_tasks_left_in_the_scratch_folder(tmp_path):
    """Deliveries render rows of people (plain emails) in <work_dir>/tmp/: a task killed there
    left them in the system's temporary folder for good. A later cleanup removes a day-old one."""
    config = write_config(tmp_path)
    old, fresh = config.scratch_root / "drop-killed", config.scratch_root / "drop-running"
    # where stream batches staged before 2026-12-01 (now in the scratch folder)
    stream = Path(config.work_dir) / "stream"
    old_batch, fresh_batch = stream / "batch-killed", stream / "batch-running"
    for folder in (old, fresh, old_batch, fresh_batch):
        folder.mkdir(parents=True)
        (folder / "part-0.csv").write_text("email\nann@example.com\n")
    day_ago = time.time() - pipeline.SCRATCH_MAX_AGE.total_seconds() - 60
    for folder in (old, old_batch):
        os.utime(folder, (day_ago, day_ago))

    pipeline.cleanup(RunWindow.for_date("2022-04-29"), config)

    assert sorted(p.name for p in config.scratch_root.iterdir()) == ["drop-running"]
    assert sorted(p.name for p in stream.iterdir()) == ["batch-running"]


def test_the_scratch_sweep_passes_over_a_folder_another_task_removed_meanwhile(
    tmp_path, monkeypatch
):
    config = write_config(tmp_path)
    gone = config.scratch_root / "dotdigital-other-run"  # listed, then removed by its task
    stray = config.scratch_root / "part-0.csv"  # a file, not a folder
    stray.write_text("email\nann@example.com\n")
    day_ago = time.time() - pipeline.SCRATCH_MAX_AGE.total_seconds() - 60
    os.utime(stray, (day_ago, day_ago))
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.utime(target, (day_ago, day_ago))
    link = config.scratch_root / "drop-linked"  # rmtree refuses a link: left, never a failure
    link.symlink_to(target)
    listed = [gone, stray, link]
    monkeypatch.setattr(type(config.scratch_root), "glob", lambda self, pattern: iter(listed))

    pipeline.sweep_scratch(config)

    assert not stray.exists()


def test_an_element_of_another_type_keeps_its_title_and_labels(tmp_path, caplog):
    # Quarantined as "element_type: unknown", the element's interactions had no title or label.
    config = write_config(tmp_path)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    elements = landing / "elements" / "elements.csv"
    header, *rows = elements.read_text().splitlines()
    elements.write_text(
        "\n".join([header + ",element_type", *(r + ",Rating" for r in rows)]) + "\n"
    )
    with caplog.at_level("WARNING", logger="audience_profiles.pipeline"):
        result = run_all(RunWindow.for_date("2022-04-29"), config)
    assert result["validate"]["sources"]["elements"]["quarantined"] == 0
    assert (
        "element type(s) other than vote, quiz" in caplog.text
        and "rating (4 row(s))" in caplog.text
    )
    with warehouse(config) as con:
        assert con.execute(
            "SELECT title, element_type, option_label FROM interactions_enriched"
        ).fetchall() == [("Which team do you support?", "rating", "Manchester Blue")]


def test_a_destination_disabled_after_the_run_listed_it_is_skipped_not_delivered(tmp_path):
    """The run maps deliver over the destinations enabled when it starts: a retry, or a task
    cleared later, of one switched off since (enabled: false) delivered to it all the same."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = write_config(
        tmp_path,
        [{"name": "off", "kind": "local", "path": str(tmp_path / "out"), "enabled": False}],
    )
    with pytest.raises(AirflowSkipException, match="'off' is disabled"):
        pipeline.deliver("off", RunWindow.for_date("2022-04-29"), {}, config)
    assert not (tmp_path / "out").exists()
