"""Segments: segments.yml validation, and the compiled SQL evaluated on small hand-made tables.

The fixture warehouse holds three people whose histories exercise every rule kind and its
``since`` date; expected memberships are worked out by hand in the comments.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest
import yaml

from audience_profiles import pipeline
from audience_profiles.config import PROJECT_ROOT, ConfigError, WarehouseConfig
from audience_profiles.pipeline import DataQualityError, RunWindow, run_all
from audience_profiles.segments import (
    build_memberships,
    catalogue_misses,
    load_segments,
    parse_segments,
    render_memberships,
    segments_for,
)
from audience_profiles.warehouse.duckdb import DuckDBWarehouse
from tests.support import (
    FORM_HEADER,
    INTERACTION_HEADER,
    SEED_EVENT,
    SEED_SESSION,
    write_config,
    write_csv,
    write_seed_example,
)

RS, DS, INTERVAL_END = "run_20220430", "2022-04-30", "2022-05-01 00:00:00"
TEAM = "Which team do you support?"
EVENT, OTHER_EVENT = "ev-1", "ev-2"
D = dt.date.fromisoformat

# (date, dt, session, poll, title, element_type, event, label, file, line)
INTERACTIONS = [
    # ann: Blue, Red, then Blue twice: her answer is Blue again since 04-10
    ("2022-04-01", "2022-04-01", "s-ann", "1", TEAM, "team_selector", EVENT, "Blue", "a", 1),
    ("2022-04-05", "2022-04-05", "s-ann", "1", TEAM, "team_selector", EVENT, "Red", "a", 1),
    ("2022-04-10", "2022-04-10", "s-ann", "1", TEAM, "team_selector", EVENT, "Blue", "a", 1),
    ("2022-04-12", "2022-04-12", "s-ann2", "1", TEAM, "team_selector", EVENT, "Blue", "a", 1),
    # bob: Blue, then Red: not a Blue fan; one score prediction for the event
    ("2022-04-02", "2022-04-02", "s-bob", "1", TEAM, "team_selector", EVENT, "Blue", "b", 1),
    ("2022-04-20", "2022-04-20", "s-bob", "1", TEAM, "team_selector", EVENT, "Red", "b", 1),
    ("2022-04-21", "2022-04-21", "s-bob", "7", "Predict", "prediction", EVENT, "Draw", "b", 2),
    (
        "2022-04-22",
        "2022-04-22",
        "s-bob",
        "8",
        "Predict",
        "prediction",
        OTHER_EVENT,
        "Draw",
        "b",
        3,
    ),
    # cid: Blue long ago, Red and Blue on the same day (the later line wins), three votes
    ("2022-03-01", "2022-03-01", "s-cid", "1", TEAM, "team_selector", EVENT, "Blue", "c", 1),
    ("2022-04-15", "2022-04-15", "s-cid", "1", TEAM, "team_selector", EVENT, "Red", "c", 1),
    ("2022-04-15", "2022-04-15", "s-cid", "1", TEAM, "team_selector", EVENT, "Blue", "c", 2),
    ("2022-04-20", "2022-04-20", "s-cid", "9", "Vote", "vote", EVENT, "X", "c", 3),
    ("2022-04-25", "2022-04-25", "s-cid", "9", "Vote", "vote", EVENT, "Y", "c", 4),
    ("2022-04-28", "2022-04-28", "s-cid", "9", "Vote", "vote", EVENT, "X", "c", 5),
    # an anonymous session nobody owns, and an interaction of a later partition than the run
    ("2022-04-29", "2022-04-29", "s-anon", "1", TEAM, "team_selector", EVENT, "Blue", "z", 1),
    ("2022-05-01", "2022-05-01", "s-bob", "1", TEAM, "team_selector", EVENT, "Blue", "z", 2),
]
# (entry_datetime, dt, email, form_id, file, line)
FORM_ENTRIES = [
    ("2022-03-01 10:00:00", "2022-03-01", "ann@example.com", 29, "f", 1),  # outside 30 days
    ("2022-04-20 10:00:00", "2022-04-20", "ann@example.com", 29, "f", 2),
    ("2022-04-25 10:00:00", "2022-04-25", "ann@example.com", 31, "f", 3),
    ("2022-04-28 10:00:00", "2022-04-28", "bob@example.com", 29, "f", 4),
    ("2022-04-10 10:00:00", "2022-04-10", "cid@example.com", 29, "f", 5),
    ("2022-04-11 09:00:00", "2022-04-11", "cid@example.com", 31, "f", 6),
    ("2022-04-29 23:59:59", "2022-04-29", "cid@example.com", 31, "f", 7),
    ("2022-05-01 08:00:00", "2022-05-01", "bob@example.com", 31, "f", 8),  # after the run date
    ("2022-04-26 10:00:00", "2022-04-26", "nobody@example.com", 31, "f", 9),  # no profile
]
IDENTIFIERS = [
    ("session_id", "s-ann", "p-ann"),
    ("session_id", "s-ann2", "p-ann"),
    ("session_id", "s-bob", "p-bob"),
    ("session_id", "s-cid", "p-cid"),
    ("session_id", "s-anon", "p-anon"),
    ("email", "ann@example.com", "p-ann"),
    ("email", "bob@example.com", "p-bob"),
    ("email", "cid@example.com", "p-cid"),
]
# (profile_id, email, optin_1, optin_2, optin_2_at, first_seen)
PROFILES = [
    ("p-ann", "ann@example.com", True, True, "2022-04-02 10:00:00", "2022-03-01 10:00:00"),
    ("p-bob", "bob@example.com", True, False, "2022-04-28 10:00:00", "2022-04-02 08:00:00"),
    ("p-cid", "cid@example.com", None, None, None, "2022-03-01 08:00:00"),
    ("p-anon", None, None, None, None, "2022-04-29 08:00:00"),
]

SEGMENTS = {
    "blue": {"answer": {"attribute": TEAM, "equals": "Blue"}},
    "red_or_green": {"answer": {"attribute": TEAM, "in": ["Red", "Green"]}},
    "regulars": {"form_entries": {"min": 2, "within_days": 30}},
    "ever_entered_twice": {"form_entries": {"min": 2}},
    "shirt_form": {"form_entries": {"form_id": 29}},
    "event_predictors": {"interaction": {"element_type": "prediction", "event_id": EVENT}},
    "voters": {"interaction": {"element_type": "vote", "min": 3, "within_days": 14}},
    # six days ending 04-30 start on 04-25 and hold two of cid's votes; five days hold one
    "votes_in_6_days": {"interaction": {"element_type": "vote", "min": 2, "within_days": 6}},
    "votes_in_5_days": {"interaction": {"element_type": "vote", "min": 2, "within_days": 5}},
    "partner_optin": {"attribute": {"column": "optin_2", "equals": True}},
    "known_email": {"attribute": {"column": "email", "in": ["bob@example.com"]}},
    "blue_regulars": {
        "all": [
            {"answer": {"attribute": TEAM, "equals": "Blue"}},
            {"form_entries": {"min": 2, "within_days": 30}},
        ]
    },
    "partners_or_predictors": {
        "any": [
            {"attribute": {"column": "optin_2", "equals": True}},
            {"interaction": {"element_type": "prediction", "event_id": EVENT}},
        ]
    },
    "nested": {
        "all": [
            {"answer": {"attribute": TEAM, "equals": "Blue"}},
            {
                "any": [
                    {"interaction": {"element_type": "vote", "min": 3}},
                    {"attribute": {"column": "optin_2", "equals": True}},
                ]
            },
        ]
    },
}
EXPECTED = {
    ("blue", "p-ann", D("2022-04-10")),
    ("blue", "p-cid", D("2022-04-15")),
    ("blue", "p-anon", D("2022-04-29")),
    ("red_or_green", "p-bob", D("2022-04-20")),
    ("regulars", "p-ann", D("2022-04-25")),
    ("regulars", "p-cid", D("2022-04-11")),
    ("ever_entered_twice", "p-ann", D("2022-04-20")),
    ("ever_entered_twice", "p-cid", D("2022-04-11")),
    ("shirt_form", "p-ann", D("2022-03-01")),
    ("shirt_form", "p-bob", D("2022-04-28")),
    ("shirt_form", "p-cid", D("2022-04-10")),
    ("event_predictors", "p-bob", D("2022-04-21")),
    ("voters", "p-cid", D("2022-04-28")),
    ("votes_in_6_days", "p-cid", D("2022-04-28")),
    ("partner_optin", "p-ann", D("2022-04-02")),
    ("known_email", "p-bob", D("2022-04-02")),
    ("blue_regulars", "p-ann", D("2022-04-25")),
    ("blue_regulars", "p-cid", D("2022-04-15")),
    ("partners_or_predictors", "p-ann", D("2022-04-02")),
    ("partners_or_predictors", "p-bob", D("2022-04-21")),
    ("nested", "p-ann", D("2022-04-10")),
    ("nested", "p-cid", D("2022-04-28")),
}


@pytest.fixture
def wh(tmp_path):
    """A warehouse holding the fixture's source tables and the run's identity and profiles."""
    with DuckDBWarehouse(WarehouseConfig(path=str(tmp_path / "wh.duckdb"))) as warehouse:
        warehouse.run_sql("setup/tables")
        con = warehouse.con
        con.executemany(
            "INSERT INTO interactions_enriched (dt, date, poll_id, title, element_type, event_id, "
            "session_id, option_label, _file, _line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[1], r[0], r[3], r[4], r[5], r[6], r[2], r[7], r[8], r[9]) for r in INTERACTIONS],
        )
        con.executemany(
            "INSERT INTO form_entries (entry_datetime, dt, email, form_id, _file, _line) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            FORM_ENTRIES,
        )
        con.execute(f"CREATE SCHEMA {RS}")
        con.execute(
            f"CREATE TABLE {RS}.profile_identifiers "
            "(identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR)"
        )
        con.executemany(f"INSERT INTO {RS}.profile_identifiers VALUES (?, ?, ?)", IDENTIFIERS)
        con.execute(
            f"CREATE TABLE {RS}.audience_profiles (profile_id VARCHAR, email VARCHAR, "
            "optin_1 BOOLEAN, optin_2 BOOLEAN, optin_2_at TIMESTAMP, first_seen TIMESTAMP)"
        )
        con.executemany(f"INSERT INTO {RS}.audience_profiles VALUES (?, ?, ?, ?, ?, ?)", PROFILES)
        yield warehouse


def memberships(wh) -> set[tuple]:
    return set(wh.query(f"SELECT segment_id, profile_id, since FROM {RS}.segment_memberships"))


def build(wh, definitions: dict) -> dict[str, int]:
    return build_memberships(wh, parse_segments({"segments": definitions}), RS, DS, INTERVAL_END)


def test_every_rule_kind_gives_its_members_and_since_dates(wh):
    counts = build(wh, SEGMENTS)
    assert memberships(wh) == EXPECTED
    assert counts == {s: sum(1 for e in EXPECTED if e[0] == s) for s in SEGMENTS}
    assert [c[1] for c in wh.con.execute(f"DESCRIBE {RS}.segment_memberships").fetchall()] == [
        "VARCHAR",
        "VARCHAR",
        "DATE",
    ]


def test_form_entries_filtered_by_form_name_count_only_that_form(wh):
    """form_name is matched as the landed text, quote and all; entries of other forms, or
    with no name, do not count."""
    wh.con.execute("UPDATE form_entries SET form_name = 'Fan''s shirt draw' WHERE _line IN (2, 5)")
    wh.con.execute("UPDATE form_entries SET form_name = 'Quiz' WHERE _line IN (3, 6, 7)")
    counts = build(
        wh,
        {
            "shirt": {"form_entries": {"form_name": "Fan's shirt draw"}},
            "quiz_twice": {"form_entries": {"form_name": ["Quiz", "Nope"], "min": 2}},
        },
    )
    assert memberships(wh) == {
        ("shirt", "p-ann", D("2022-04-20")),
        ("shirt", "p-cid", D("2022-04-10")),
        ("quiz_twice", "p-cid", D("2022-04-29")),
    }
    assert counts == {"shirt": 2, "quiz_twice": 1}


def test_a_rerun_gives_identical_rows(wh):
    build(wh, SEGMENTS)
    first = wh.query(f"SELECT * FROM {RS}.segment_memberships ORDER BY ALL")
    build(wh, SEGMENTS)
    assert wh.query(f"SELECT * FROM {RS}.segment_memberships ORDER BY ALL") == first


def test_a_later_run_keeps_since_dates_from_the_data(wh):
    """Since is the day the profile qualified from, not the day a run first saw it."""
    build(wh, {"blue": SEGMENTS["blue"]})
    earlier = memberships(wh)
    later = build_memberships(
        wh,
        parse_segments({"segments": {"blue": SEGMENTS["blue"]}}),
        RS,
        "2022-05-02",
        "2022-05-03 00:00:00",
    )
    # bob's Blue answer of 05-01 is now known: he joins, since that day; the others keep theirs.
    assert later == {"blue": 4}
    assert memberships(wh) == earlier | {("blue", "p-bob", D("2022-05-01"))}


def test_latest_answer_orders_file_names_field_by_field(wh):
    # Same day, same partition: a.jsonl's row is the later one, as in the profile's answers
    # column. The answer key once joined its fields with "|", which sorts after "l": a.json won.
    wh.con.executemany(
        "INSERT INTO interactions_enriched (dt, date, poll_id, title, element_type, event_id, "
        "session_id, option_label, _file, _line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("2022-04-28", "2022-04-28", "1", TEAM, "team_selector", EVENT, "s-dee", label, f, 1)
            for label, f in (("Red", "a.json"), ("Blue", "a.jsonl"))
        ],
    )
    wh.con.execute(f"INSERT INTO {RS}.profile_identifiers VALUES ('session_id', 's-dee', 'p-dee')")
    build(wh, {"blue": SEGMENTS["blue"]})
    assert ("blue", "p-dee", D("2022-04-28")) in memberships(wh)


def test_latest_answer_counts_rows_without_file_or_line_as_the_answers_column_does(wh):
    """Another loader's row (no file, no line) was never an answer here, while DuckDB's answers
    column could take it: both now place it before the partition's files, by option without
    a line (profiles/_macros.sql)."""
    rows = [("Blue", None, 0, None), ("Red", None, 1, None), ("Blue", "a.json", 0, 1)]
    wh.con.executemany(
        "INSERT INTO interactions_enriched (dt, date, poll_id, title, element_type, event_id, "
        "session_id, option, option_label, _file, _line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (day, day, "1", TEAM, "team_selector", EVENT, "s-dee", option, label, file, line)
            for day, (label, file, option, line) in zip(
                ("2022-04-27", "2022-04-28", "2022-04-28"), rows, strict=True
            )
        ],
    )
    wh.con.execute(f"INSERT INTO {RS}.profile_identifiers VALUES ('session_id', 's-dee', 'p-dee')")
    build(wh, {"blue": SEGMENTS["blue"]})
    # a.json's Blue is after the other loader's Red of the same partition: Blue since then
    assert ("blue", "p-dee", D("2022-04-28")) in memberships(wh)
    wh.con.execute("DELETE FROM interactions_enriched WHERE _file = 'a.json'")
    build(wh, {"blue": SEGMENTS["blue"]})
    assert not any(m[1] == "p-dee" for m in memberships(wh))  # Red is the latest


def test_no_segments_file_means_no_table_and_an_empty_file_an_empty_table(wh):
    build(wh, {})
    assert memberships(wh) == set()
    assert build_memberships(wh, None, RS, DS, INTERVAL_END) == {}
    tables = wh.query(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{RS}'"
    )
    assert ("segment_memberships",) not in tables


def test_a_column_the_run_s_profiles_lack_names_the_file_and_key(wh):
    # The backstop of the reader's check (PROFILE_COLUMNS): the fixture's table has no last_name.
    definitions = {"x": {"all": [{"attribute": {"column": "last_name", "equals": "Wilson"}}]}}
    with pytest.raises(
        ConfigError,
        match=r"segments\.x\.all\[0\]\.attribute\.column: 'last_name' is not an "
        r"audience_profiles column \(email, first_seen, optin_1, optin_2, optin_2_at, profile_id\)",
    ):
        build(wh, definitions)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        # 12345 unquoted: compared as a number, '0012345' would match, and 'sso-abc' fail the build
        ("email", 12345, r"12345 is a number but email holds text \(VARCHAR\): quote it$"),
        ("email", True, r"True is a yes/no value but email holds text \(VARCHAR\): quote it$"),
        (
            "optin_2",
            "yes",
            r"'yes' is text but optin_2 holds yes/no values \(BOOLEAN\): write true or false, "
            r"unquoted$",
        ),
        ("optin_1", 1, r"1 is a number but optin_1 holds yes/no values \(BOOLEAN\)"),
        (
            "first_seen",
            42,
            r"42 is a number but first_seen holds UTC times \(TIMESTAMP\): quote it, as "
            r"'YYYY-MM-DD HH:MM:SS'$",
        ),
        # text that is no time failed the build with the engine's conversion error
        (
            "first_seen",
            "yesterday",
            r"'yesterday' is not a time but first_seen holds UTC times \(TIMESTAMP\): write "
            r"'YYYY-MM-DD HH:MM:SS', no zone$",
        ),
        (
            "optin_1_at",
            "2022-02-30 10:00:00",
            r"'2022-02-30 10:00:00' is not a time but optin_1_at",
        ),
        # a zone: DuckDB drops it (10:00+02:00 compared as 10:00 UTC); the column holds UTC
        (
            "last_seen",
            "2022-04-29T10:00:00+02:00",
            r"'2022-04-29T10:00:00\+02:00' is not a time but last_seen",
        ),
        # equals and in are the only comparisons: a date alone matched midnight only
        (
            "first_seen",
            "2022-04-29",
            r"'2022-04-29' is a date but first_seen holds UTC times \(TIMESTAMP\): equals and in "
            r"match the exact time, so a date matches its midnight only; give the time",
        ),
        ("sessions", "3", r"'3' is text but sessions holds whole numbers \(BIGINT\): write it "),
        (
            "interactions",
            2.5,
            r"2\.5 is not a whole number but interactions holds whole numbers \(BIGINT\): it "
            r"would match no profile$",
        ),
        ("sessions", True, r"True is a yes/no value but sessions holds whole numbers"),
    ],
)
def test_a_value_its_column_cannot_hold_fails_as_the_file_is_read(column, value, message):
    # Said as the run's first task reads segments.yml, from the contract's types
    # (config.PROFILE_COLUMNS), not by build_segments after the whole build.
    raw = {"segments": {"x": {"any": [{"attribute": {"column": column, "in": [value]}}]}}}
    with pytest.raises(
        ConfigError, match=r"^segments\.yml: segments\.x\.any\[0\]\.attribute\.in: "
    ):
        parse_segments(raw, "segments.yml")
    raw = {"segments": {"x": {"attribute": {"column": column, "equals": value}}}}
    with pytest.raises(
        ConfigError, match=r"^segments\.yml: segments\.x\.attribute\.equals: " + message
    ):
        parse_segments(raw, "segments.yml")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("optin_1", False),
        ("email", "ann@example.com"),
        ("first_seen", "2022-03-01 10:00:00"),
        ("last_seen", "2022-03-01T10:00:00.123456"),
        ("sessions", 3),
        ("sessions", 3.0),
    ],
)
def test_a_value_its_column_holds_is_read(column, value):
    parse_segments({"segments": {"x": {"attribute": {"column": column, "equals": value}}}})


def test_a_value_the_run_s_table_cannot_hold_names_the_file_and_key(wh):
    # The backstop of the reader's check: the table read is not what the contract says.
    wh.con.execute(f"ALTER TABLE {RS}.audience_profiles ALTER optin_2 TYPE VARCHAR")
    definitions = {"x": {"all": [{"attribute": {"column": "optin_2", "in": [True]}}]}}
    with pytest.raises(
        ConfigError,
        match=r"^<dict>: segments\.x\.all\[0\]\.attribute\.in: True is a yes/no value but "
        r"optin_2 holds text \(VARCHAR\): quote it$",
    ):
        build(wh, definitions)
    # a time the table holds builds (first_seen is an exact time: p-ann's)
    build(wh, {"x": {"attribute": {"column": "first_seen", "equals": "2022-03-01 10:00:00"}}})
    assert memberships(wh) == {("x", "p-ann", D("2022-03-01"))}


@pytest.mark.services
def test_the_same_sql_gives_the_same_rows_in_snowflake_dialect(wh):
    """The rendered script, run through fakesnow (Snowflake SQL translated by sqlglot onto its own
    DuckDB), builds the same memberships from the same tables."""
    fakesnow = pytest.importorskip("fakesnow")
    import snowflake.connector

    script = render_memberships(wh, parse_segments({"segments": SEGMENTS}), RS, DS, INTERVAL_END)
    tables = [
        "interactions_enriched",
        "form_entries",
        *(f"{RS}.{t}" for t in ("profile_identifiers", "audience_profiles")),
    ]
    with fakesnow.patch(), snowflake.connector.connect(database="ap", schema="main") as sf:
        cur = sf.cursor()
        cur.execute(f"CREATE SCHEMA {RS}")
        for table in tables:
            columns = wh.con.execute(f"DESCRIBE {table}").fetchall()
            cur.execute(f"CREATE TABLE {table} ({', '.join(f'{c[0]} {c[1]}' for c in columns)})")
            rows = wh.query(f"SELECT * FROM {table}")
            cur.executemany(
                f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(columns))})", rows
            )
        cur.execute(script)
        rows = cur.execute(f"SELECT segment_id, profile_id, since FROM {RS}.segment_memberships")
        assert {tuple(r) for r in rows.fetchall()} == EXPECTED


# -- segments.yml -----------------------------------------------------------------------------


def test_the_shipped_segments_file_is_valid():
    shipped = load_segments(PROJECT_ROOT / "include" / "config" / "segments.yml")
    assert "manchester_blue_fans" in shipped.ids
    kinds = set()

    def walk(rule):
        kinds.add(rule.kind)
        for child in rule.children:
            walk(child)

    for segment in shipped.segments:
        assert segment.description
        walk(segment.rule)
    assert kinds == {"answer", "form_entries", "interaction", "attribute", "all", "any"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1], "the top level must be a mapping"),
        ({"segmets": {}}, "segmets: unknown key"),
        ({"segments": ["a"]}, "segments: must map segment ids"),
        ({"segments": {"Blue Fans": {}}}, "segments.Blue Fans: a segment id is lower case"),
        # 65 characters: the message named every rule but the length, which this id broke
        (
            {"segments": {"a" * 65: {"form_entries": {}}}},
            r"segments\.a{65}: a segment id is .*, at most 64 characters$",
        ),
        ({"segments": {"a": {"description": "no rule"}}}, r"segments\.a: needs exactly one rule"),
        (
            {"segments": {"a": {"answer": {}, "attribute": {}}}},
            r"segments\.a: needs exactly one rule .* found 2",
        ),
        ({"segments": {"a": {"answers": {}}}}, r"segments\.a\.answers: unknown key"),
        ({"segments": {"a": {"answer": {"equals": "x"}}}}, r"a\.answer\.attribute: is required"),
        (
            {"segments": {"a": {"answer": {"attribute": "t", "equals": "x", "in": ["y"]}}}},
            r"segments\.a\.answer: give exactly one of equals",
        ),
        (
            {"segments": {"a": {"answer": {"attribute": "t", "equals": True}}}},
            r"a\.answer\.equals: True is a yes/no value; quote it",
        ),
        (
            {"segments": {"a": {"answer": {"attribute": "t", "in": []}}}},
            r"a\.answer\.in: must not be empty",
        ),
        ({"segments": {"a": {"form_entries": {"min": 0}}}}, r"form_entries\.min: must be a whole"),
        (
            {"segments": {"a": {"form_entries": {"within_days": "30"}}}},
            r"form_entries\.within_days: must be a whole number",
        ),
        # a quoted form id was told to quote it
        (
            {"segments": {"a": {"form_entries": {"form_id": "29"}}}},
            r"form_entries\.form_id: must be int, not '29' \(a whole number, unquoted\)$",
        ),
        (
            {"segments": {"a": {"interaction": {"element_type": "predictions"}}}},
            r"interaction\.element_type: 'predictions' is not one of",
        ),
        (
            {"segments": {"a": {"interaction": {"event_id": dt.date(2022, 4, 29)}}}},
            r"interaction\.event_id: must be str or int, .* \(quote dates and ids\)",
        ),
        ({"segments": {"a": {"interaction": {"votes": 2}}}}, r"interaction\.votes: unknown key"),
        (
            {"segments": {"a": {"attribute": {"column": "optin_2; DROP", "equals": True}}}},
            r"attribute\.column: 'optin_2; DROP' is not a column name",
        ),
        # no profile column: said as the file is read (the run's first task), not by
        # build_segments after the whole build
        (
            {
                "segments": {
                    "a": {"any": [{"attribute": {"column": "favourite_colour", "equals": "red"}}]}
                }
            },
            r"segments\.a\.any\[0\]\.attribute\.column: 'favourite_colour' is not an "
            r"audience_profiles column \(accept_terms, accept_terms_at, .*, sessions\)$",
        ),
        # the JSON of every answer, compared whole: an answer rule is what matches one answer
        (
            {
                "segments": {
                    "a": {"attribute": {"column": "answers", "equals": '{"Team?": "Blue"}'}}
                }
            },
            r"segments\.a\.attribute\.column: answers holds every answer as one JSON object, "
            r"which equals and in compare whole: for an answer, write answer: \{attribute: "
            r"<element title>, equals: <option>\}$",
        ),
        ({"segments": {"a": {"all": []}}}, r"segments\.a\.all: must be a non-empty list"),
        (
            {"segments": {"a": {"any": [{"answer": {}, "attribute": {}}]}}},
            r"segments\.a\.any\[0\]: must be one condition",
        ),
        (
            {"segments": {"a": {"all": [{"any": [{"form_entries": {"min": -1}}]}]}}},
            r"segments\.a\.all\[0\]\.any\[0\]\.form_entries\.min: must be a whole number",
        ),
        # past a date's range: the build failed with an OverflowError naming no key, retried
        (
            {"segments": {"a": {"form_entries": {"within_days": 800000}}}},
            r"segments\.a\.form_entries\.within_days: must be 36500 or less, not 800000",
        ),
    ],
)
def test_mistakes_name_the_file_and_the_key(raw, message):
    with pytest.raises(ConfigError, match=r"^segments\.yml: .*" + message):
        parse_segments(raw, "segments.yml")


@pytest.mark.parametrize("text", ["", "# every segment is off for now\n"])
def test_an_empty_file_fails_and_segments_none_means_none(tmp_path, text):
    # read as no segments, an emptied or truncated file emptied every address book synced
    path = tmp_path / "segments.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_segments(path)
    assert str(error.value) == (
        f"{path}: empty (or only comments); write segments: [] for no segments"
    )
    path.write_text("segments: []\n")
    assert load_segments(path).segments == ()


def test_segments_config_paths_and_destination_segments_are_checked(tmp_path):
    config = write_config(tmp_path)  # segments.yml next to it: absent, so no segments
    assert segments_for(config) is None

    missing = write_config(tmp_path, segments_config=str(tmp_path / "nope.yml"))
    with pytest.raises(ConfigError, match=r"pipeline\.yml: segments_config: .*nope\.yml does not"):
        segments_for(missing)

    destination = {
        "name": "dd",
        "kind": "dotdigital",
        "tables": ["segment_memberships", "audience_profiles"],
        "segments": {"blue": {}, "bleu": {}},
    }
    # a destination syncing segments, and no segments file: said before the build, not by the
    # delivery at the end of it
    config = write_config(tmp_path, destinations=[destination])
    with pytest.raises(
        ConfigError, match=r"destinations\[0\]\.segments \(dd\): names segments, but"
    ):
        segments_for(config)

    # a destination listing the table, and no segments file: the build ran to the end, and the
    # delivery failed (and was retried) on a table "this run did not build", naming no cause
    files = {"name": "out", "kind": "local", "tables": ["audience_profiles", "segment_memberships"]}
    config = write_config(tmp_path, destinations=[files])
    with pytest.raises(
        ConfigError, match=r"destinations\[0\]\.tables \(out\): lists segment_memberships, but"
    ):
        segments_for(config)
    assert segments_for(write_config(tmp_path, destinations=[{**files, "enabled": False}])) is None

    (tmp_path / "segments.yml").write_text(yaml.safe_dump({"segments": SEGMENTS}))
    config = write_config(tmp_path, destinations=[destination])
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.segments \(dd\): bleu not defined"):
        segments_for(config)
    config = write_config(tmp_path, destinations=[{**destination, "enabled": False}])
    assert set(segments_for(config).ids) == set(SEGMENTS)


# -- in the build -----------------------------------------------------------------------------


def seeded(tmp_path: Path):
    """The seed example with a segments file: David Wilson supports Manchester Blue."""
    (tmp_path / "segments.yml").write_text(
        yaml.safe_dump(
            {
                "segments": {
                    "blue": {"answer": {"attribute": TEAM, "equals": "Manchester Blue"}},
                    "partner": {"attribute": {"column": "optin_2", "equals": True}},
                }
            }
        )
    )
    write_seed_example(tmp_path / "landing")
    return write_config(tmp_path)


def test_the_build_publishes_memberships_and_checks_members_are_live_profiles(tmp_path):
    config = seeded(tmp_path)
    for ds in ("2022-01-11", "2022-04-29"):
        result = run_all(RunWindow.for_date(ds), config)
    assert result["segments"] == {"members": {"blue": 1, "partner": 1}}
    export = (
        Path(config.work_dir) / "runs" / "2022-04-29" / "export" / "segment_memberships.parquet"
    )
    rows = duckdb.sql(f"SELECT segment_id, since FROM '{export}' ORDER BY 1").fetchall()
    # David opted in to partners with his form entry of 01-11; answered Blue on 04-29.
    assert rows == [("blue", D("2022-04-29")), ("partner", D("2022-01-11"))]

    # Build 04-29 again up to the segments, and break one membership before the checks.
    window = RunWindow.for_date("2022-04-29")
    staged = [
        pipeline.extract_source(s, window, config)
        for s in ("interactions", "elements", "form_entries", "identities")
    ]
    pipeline.validate(window, staged, config)
    pipeline.enrich(window, config)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    pipeline.build_segments(window, config)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute(
            f"INSERT INTO {window.run_schema}.segment_memberships "
            "VALUES ('blue', 'ap_merged_away', DATE '2022-04-29')"
        )
    with pytest.raises(DataQualityError, match="segment_memberships.profile_id is a live profile"):
        pipeline.check_quality(window, config)


def record_catalogue(wh, extra_columns: tuple[str, ...], history: list[tuple]) -> None:
    """``history`` as element_history rows ((valid_from, poll_id, option, title, option_label,
    *extra_columns); not removed unless a ``removed`` column says so), recorded by a run of
    2022-03-01 (element_history_dates: the rows it changed)."""
    columns = ("valid_from", "poll_id", "option", "title", "option_label", *extra_columns)
    if "removed" not in columns:
        columns, history = (*columns, "removed"), [(*row, False) for row in history]
    wh.con.executemany(
        f"INSERT INTO element_history ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})",
        history,
    )
    changed = sum(row[0] == "2022-03-01" for row in history)
    wh.con.execute("INSERT INTO element_history_dates VALUES ('2022-03-01', ?, now())", [changed])


def test_the_titles_and_labels_no_element_has_are_said_per_segment(wh):
    # (valid_from, poll_id, option, title, option_label, element_type, removed): the catalogue
    # in force on 04-30 has the team question and the vote; a poll removed on 04-20 is not in it
    history = [
        ("2022-03-01", "1", 1, TEAM, "Blue", "team_selector", False),
        ("2022-03-01", "1", 2, TEAM, "Red", "team_selector", False),
        ("2022-03-01", "9", 1, "Vote", "X", "vote", False),
        ("2022-03-01", "5", 1, "Old poll", "A", "vote", False),
        ("2022-04-20", "5", 1, "Old poll", "A", "vote", True),
    ]
    record_catalogue(wh, ("element_type", "removed"), history)
    definitions = {
        "blue": SEGMENTS["blue"],
        "bleu": {"answer": {"attribute": TEAM, "in": ["Blue", "Manchester Bleu"]}},
        "team_typo": {"answer": {"attribute": "Which team?", "equals": "Blue"}},
        "voters": SEGMENTS["voters"],
        "x_voters": {"interaction": {"attribute": "Vote", "option": ["X", "Blue"]}},
        "old_poll": {"any": [{"form_entries": {}}, {"interaction": {"attribute": "Old poll"}}]},
        "any_red": {"interaction": {"option": "Red"}},
    }
    segments = parse_segments({"segments": definitions}, "segments.yml")
    assert catalogue_misses(wh, segments, DS) == {
        "bleu": [
            "segments.bleu.answer.in: no element titled 'Which team do you support?' has the "
            "option 'Manchester Bleu'"
        ],
        "team_typo": ["segments.team_typo.answer.attribute: no element is titled 'Which team?'"],
        # Blue is an option of the team question, not of the vote the rule names
        "x_voters": [
            "segments.x_voters.interaction.option: no element titled 'Vote' has the option 'Blue'"
        ],
        "old_poll": [
            "segments.old_poll.any[1].interaction.attribute: no element is titled 'Old poll'"
        ],
    }
    # before its removal the old poll was there
    assert "old_poll" not in catalogue_misses(wh, segments, "2022-04-19")


def test_the_poll_ids_no_element_has_and_event_ids_no_interaction_has_are_said(wh):
    # (valid_from, poll_id, option, title, option_label, element_type, event_id): the team
    # question records no event (the contract makes it optional), the vote and prediction one
    # event, while the interactions (the fixture's) carry EVENT and OTHER_EVENT
    history = [
        ("2022-03-01", "1", 1, TEAM, "Blue", "team_selector", None),
        ("2022-03-01", "1", 2, TEAM, "Red", "team_selector", None),
        ("2022-03-01", "9", 1, "Vote", "X", "vote", EVENT),
        ("2022-03-01", "7", 1, "Predict", "Draw", "prediction", EVENT),
    ]
    record_catalogue(wh, ("element_type", "event_id"), history)
    definitions = {
        "poll_typo": {"interaction": {"poll_id": 99}},
        "one_poll_typo": {"interaction": {"element_type": "vote", "poll_id": ["9", "98"]}},
        "poll_not_titled": {"interaction": {"poll_id": "9", "attribute": TEAM}},
        "poll_option": {"interaction": {"poll_id": "1", "option": ["Blue", "X"]}},
        "event_typo": {"interaction": {"event_id": "ev-9", "element_type": "prediction"}},
        # the team question's interactions carry their event: its element need not
        "event_team": {"interaction": {"event_id": EVENT, "attribute": TEAM}},
        # bob's prediction of 04-22 carries it, which no element records: it was said
        "other_event": {"interaction": {"event_id": OTHER_EVENT, "element_type": "prediction"}},
        # carried only by an interaction of a partition after the run date
        "later_event": {"interaction": {"event_id": "ev-late"}},
        "nested": {
            "all": [
                {"form_entries": {}},
                {"any": [{"interaction": {"poll_id": "7", "event_id": EVENT, "option": "Draw"}}]},
            ]
        },
        "nested_typo": {"any": [{"form_entries": {}}, {"interaction": {"poll_id": "70"}}]},
    }
    wh.con.execute(
        "INSERT INTO interactions_enriched (dt, date, poll_id, event_id, session_id) "
        "VALUES ('2022-05-01', '2022-05-01', '9', 'ev-late', 's-cid')"
    )
    segments = parse_segments({"segments": definitions}, "segments.yml")
    said = catalogue_misses(wh, segments, DS)
    assert said == {
        "poll_typo": ["segments.poll_typo.interaction.poll_id: no element has the poll_id '99'"],
        "one_poll_typo": [
            "segments.one_poll_typo.interaction.poll_id: no element has the poll_id '98'"
        ],
        "poll_not_titled": [
            "segments.poll_not_titled.interaction.attribute: no element with the poll_id '9' is "
            "titled 'Which team do you support?'"
        ],
        "poll_option": [
            "segments.poll_option.interaction.option: no element with the poll_id '1' has the "
            "option 'X'"
        ],
        "event_typo": [
            "segments.event_typo.interaction.event_id: no interaction up to 2022-04-30 has the "
            "event_id 'ev-9'"
        ],
        "later_event": [
            "segments.later_event.interaction.event_id: no interaction up to 2022-04-30 has the "
            "event_id 'ev-late'"
        ],
        "nested_typo": [
            "segments.nested_typo.any[1].interaction.poll_id: no element has the poll_id '70'"
        ],
    }
    # A catalogue recording no event ids is no matter: the interactions carry theirs.
    wh.con.execute("UPDATE element_history SET event_id = NULL")
    assert catalogue_misses(wh, segments, DS)["event_typo"] == said["event_typo"]
    # Nor are interactions before retention's cutoff read: OTHER_EVENT's one is of 04-22.
    cut = catalogue_misses(wh, segments, DS, interactions_from="2022-04-25")
    assert cut["other_event"] == [
        "segments.other_event.interaction.event_id: no interaction up to 2022-04-30 has the "
        "event_id 'ev-2'"
    ]


def test_the_element_types_no_element_has_are_said_within_the_poll_and_title_named(wh):
    # (valid_from, poll_id, option, title, option_label, element_type): the poll 9 is a vote,
    # the team question a team selector; no element is a quiz
    history = [
        ("2022-03-01", "1", 1, TEAM, "Blue", "team_selector"),
        ("2022-03-01", "9", 1, "Vote", "X", "vote"),
        ("2022-03-01", "7", 1, "Predict", "Draw", "prediction"),
    ]
    record_catalogue(wh, ("element_type",), history)
    definitions = {
        "voters": SEGMENTS["voters"],
        "quizzers": {"interaction": {"element_type": ["vote", "quiz"]}},
        # poll 9's elements are votes: the rule counted none of its interactions, unwarned
        "poll_predictors": {"interaction": {"element_type": "prediction", "poll_id": 9}},
        "team_votes": {"interaction": {"element_type": "vote", "attribute": TEAM}},
        "blue_votes": {"any": [{"interaction": {"element_type": "vote", "option": "Blue"}}]},
        "blue_team": {
            "interaction": {"element_type": "team_selector", "attribute": TEAM, "option": "Blue"}
        },
    }
    segments = parse_segments({"segments": definitions}, "segments.yml")
    assert catalogue_misses(wh, segments, DS) == {
        "quizzers": [
            "segments.quizzers.interaction.element_type: no element has the element_type 'quiz'"
        ],
        "poll_predictors": [
            "segments.poll_predictors.interaction.element_type: no element with the poll_id '9' "
            "has the element_type 'prediction'"
        ],
        "team_votes": [
            "segments.team_votes.interaction.element_type: no element titled 'Which team do you "
            "support?' has the element_type 'vote'"
        ],
        "blue_votes": [
            "segments.blue_votes.any[0].interaction.option: no element with the element_type "
            "'vote' has the option 'Blue'"
        ],
    }


def test_a_rule_naming_no_element_builds_and_the_run_warns_and_reports_it(tmp_path, caplog):
    # Not an error (a segment may come before its poll), but no longer an empty segment, and
    # an emptied address book, without a word.
    config = seeded(tmp_path)
    (tmp_path / "segments.yml").write_text(
        yaml.safe_dump(
            {"segments": {"blue": {"answer": {"attribute": TEAM, "equals": "Manchester Bleu"}}}}
        )
    )
    with caplog.at_level("WARNING", logger="audience_profiles.pipeline"):
        result = run_all(RunWindow.for_date("2022-04-29"), config)
    said = (
        "segments.blue.answer.equals: no element titled 'Which team do you support?' has the "
        "option 'Manchester Bleu'"
    )
    assert result["segments"] == {"members": {"blue": 0}, "unmatched": {"blue": [said]}}
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("segment blue")]
    assert len(warned) == 1 and said in warned[0] and "2022-04-29" in warned[0]
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        (stored,) = con.execute("SELECT report FROM pipeline_runs").fetchone()
    assert json.loads(stored)["segments_unmatched"] == {"blue": [said]}


def test_a_poll_whose_content_never_landed_is_warned_of_without_saying_nothing_matches(
    tmp_path, caplog
):
    # Its interactions carry its poll id: the rule matches them, and the warning said it
    # matched nothing.
    config = seeded(tmp_path)
    (tmp_path / "segments.yml").write_text(
        yaml.safe_dump({"segments": {"unlanded": {"interaction": {"poll_id": "77"}}}})
    )
    landing = tmp_path / "landing"
    write_csv(
        landing / "interactions" / "date=2022-04-29" / "part-1.csv",
        INTERACTION_HEADER,
        [["2022-04-29", SEED_EVENT, "77", SEED_SESSION, 0, 1]],
    )
    # the session's form entry on the date, for a profile the date's run builds
    entry = ["2022-04-29T10:00:00", "David", "Wilson", "david.wilson@example.com", "Yes", "Yes"]
    write_csv(
        landing / "form_entries" / "date=2022-04-29" / "part-0.csv",
        FORM_HEADER,
        [[*entry, "Yes", SEED_SESSION, "Win a Signed Shirt", 29]],
    )
    with caplog.at_level("WARNING", logger="audience_profiles.pipeline"):
        result = run_all(RunWindow.for_date("2022-04-29"), config)
    said = "segments.unlanded.interaction.poll_id: no element has the poll_id '77'"
    assert result["segments"] == {"members": {"unlanded": 1}, "unmatched": {"unlanded": [said]}}
    (warned,) = [m for r in caplog.records if (m := r.getMessage()).startswith("segment unlanded")]
    assert said in warned and "matches nothing" not in warned
    assert "matches only interactions of elements the catalogue lacks" in warned
    assert "the segment has 1 member(s)" in warned


def test_values_are_written_in_the_engines_dialect():
    """Snowflake string literals escape backslashes: 'AC\\DC' written generically would match
    nothing there (and a trailing backslash would end the string early)."""
    from audience_profiles.segments import parse_segments, render_memberships
    from audience_profiles.warehouse.snowflake import SnowflakeWarehouse

    class RenderOnly(SnowflakeWarehouse):  # renders SQL, connects to nothing
        def __init__(self):
            pass

        def column_types(self, schema, table):
            return {"profile_id": "TEXT", "first_seen": "TIMESTAMP_NTZ"}

    segments = parse_segments(
        {"segments": {"acdc": {"answer": {"attribute": "Band\\", "equals": "AC\\DC"}}}}
    )
    sql = render_memberships(RenderOnly(), segments, "run_20220430", "2022-04-30", "2022-05-01")
    assert "'AC\\\\DC'" in sql and "'Band\\\\'" in sql
