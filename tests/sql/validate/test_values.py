"""Value rules of include/sql/validate, through the real extract and validate steps.

Timestamps are stored as UTC (an offset is applied; none means UTC), an interaction dated after
its landing partition is quarantined, and white space means what Python's str.isspace() accepts
(tabs, line breaks, the no-break space and the other Unicode spaces), not only
spaces; a NUL character in any field quarantines its row. Each rule is also checked where it matters downstream: the most recent statement wins,
and the run for a day sees nothing from after that day (UTC).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from pathlib import Path

import duckdb
import pytest

from audience_profiles import pipeline
from audience_profiles.config import PipelineConfig
from audience_profiles.landing import SOURCES
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import EMAIL_PATTERN
from audience_profiles.warehouse import open_warehouse
from tests.support import PROJECT_ROOT, write_config, write_csv, write_ndjson

DS = "2022-04-29"
ISO_TIMESTAMP = "entry_datetime: not an ISO timestamp"


def land(root: Path, source: str, ds: str | None, rows: list[dict], name: str = "part-0.csv"):
    """One landing file (JSON when ``name`` says so), every column of the source present."""
    folder = root / "landing" / source / (f"date={ds}" if ds else "")
    columns = SOURCES[source].columns
    if name.endswith(".json"):
        return write_ndjson(folder / name, [{c: r.get(c) or "" for c in columns} for r in rows])
    return write_csv(
        folder / name, list(columns), [[r.get(c) or "" for c in columns] for r in rows]
    )


def form(at: str, session_id: str = "s1", email: str = "ann@example.com", **fields) -> dict:
    return {"entry_datetime": at, "session_id": session_id, "email": email, **fields}


def validate(config: PipelineConfig, ds: str = DS) -> dict:
    window = RunWindow.for_date(ds)
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    return pipeline.validate(window, staged, config)["sources"]


def query(config: PipelineConfig, sql: str) -> list[tuple]:
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        return con.execute(sql).fetchall()


def quarantined(config: PipelineConfig, source: str) -> list[tuple[int, str]]:
    return query(
        config, f"SELECT line, reason FROM quarantine WHERE source = '{source}' ORDER BY line"
    )


@pytest.fixture
def config(tmp_path) -> PipelineConfig:
    # a catalogue, as every landing has one (validate fails a day of interactions without);
    # a test landing its own elements/part-0.csv replaces it
    land(
        tmp_path,
        "elements",
        None,
        [{"poll_id": "p0", "title": "T", "option": "0", "option_label": "L"}],
    )
    return write_config(tmp_path, destinations=[])


# --- 1. time-zone offsets ------------------------------------------------------------------

OFFSETS = {  # landed value -> stored UTC value
    "2022-04-29T10:00:00+02:00": dt.datetime(2022, 4, 29, 8, 0),
    "2022-04-29T10:00:00-05:00": dt.datetime(2022, 4, 29, 15, 0),
    "2022-04-29T23:30:00-05:00": dt.datetime(2022, 4, 30, 4, 30),
    "2022-04-29T01:00:00+02:00": dt.datetime(2022, 4, 28, 23, 0),
    "2022-04-29T10:00:00.25+0530": dt.datetime(2022, 4, 29, 4, 30, 0, 250000),
    "2022-04-29T10:00:00Z": dt.datetime(2022, 4, 29, 10, 0),
    "2022-04-29T20:00:00+14:00": dt.datetime(2022, 4, 29, 6, 0),  # Kiribati: the widest
    # hour-only offsets, as PostgreSQL's COPY writes them
    "2022-04-29T10:00:00+05": dt.datetime(2022, 4, 29, 5, 0),
    "2022-04-29 10:00-03": dt.datetime(2022, 4, 29, 13, 0),
    "2022-04-29T20:00:00.5+14": dt.datetime(2022, 4, 29, 6, 0, 0, 500000),
    "2022-04-29T10:00:00": dt.datetime(2022, 4, 29, 10, 0),
    " 2022-04-29 10:00\t": dt.datetime(2022, 4, 29, 10, 0),
    "2022-04-29": dt.datetime(2022, 4, 29, 0, 0),
}


def test_offsets_are_converted_to_utc(config, tmp_path):
    values = list(OFFSETS)
    land(tmp_path, "form_entries", DS, [form(v, f"s{i}") for i, v in enumerate(values)])
    land(
        tmp_path,
        "identities",
        DS,
        [
            {"observed_at": v, "session_id": f"s{i}", "external_id": "x"}
            for i, v in enumerate(values)
        ],
    )

    counts = validate(config)

    assert counts["form_entries"]["valid"] == counts["identities"]["valid"] == len(values)
    for table, column in (("form_entries", "entry_datetime"), ("identities", "observed_at")):
        stored = query(config, f"SELECT _line, {column} FROM {table} ORDER BY _line")
        assert [at for _, at in stored] == list(OFFSETS.values()), table


def test_hour_only_offsets_in_json_lines_are_converted_to_utc(config, tmp_path):
    land(
        tmp_path,
        "form_entries",
        DS,
        [form("2022-04-29T10:00:00+05", "s1"), form("2022-04-29T10:00:00-15", "s2")],
        name="part-0.json",
    )

    counts = validate(config)

    assert counts["form_entries"] == {"read": 2, "valid": 1, "quarantined": 1}
    assert query(config, "SELECT entry_datetime FROM form_entries") == [
        (dt.datetime(2022, 4, 29, 5, 0),)
    ]
    assert quarantined(config, "form_entries") == [(2, ISO_TIMESTAMP)]


def test_the_most_recent_statement_is_the_latest_in_utc(config, tmp_path):
    land(
        tmp_path,
        "form_entries",
        DS,
        [
            form("2022-04-29T09:00:00Z", first_name="Ann", optin_1="Yes"),
            # later on the clock, earlier in time (08:00 UTC): an older statement
            form("2022-04-29T10:00:00+02:00", first_name="Anna", optin_1="No"),
        ],
    )
    run_all(RunWindow.for_date(DS), config)
    assert query(config, "SELECT first_name, optin_1, optin_1_at FROM audience_profiles") == [
        ("Ann", True, dt.datetime(2022, 4, 29, 9, 0))
    ]


def test_a_statement_after_the_day_in_utc_counts_on_the_next_run(config, tmp_path):
    # Landed on 04-29 but made at 04:30 UTC on 04-30: not part of the run of 04-29.
    land(tmp_path, "form_entries", DS, [form("2022-04-29T23:30:00-05:00", optin_1="Yes")])

    first = run_all(RunWindow.for_date(DS), config)
    assert first["profiles"]["profiles"] == 0

    second = run_all(RunWindow.for_date("2022-04-30"), config)
    assert second["profiles"]["profiles"] == 1
    assert query(config, "SELECT email, optin_1, optin_1_at FROM audience_profiles") == [
        ("ann@example.com", True, dt.datetime(2022, 4, 30, 4, 30))
    ]


@pytest.fixture
def machine_in_new_york(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_value_without_offset_is_utc_whatever_the_machine_zone(
    config, tmp_path, machine_in_new_york
):
    land(tmp_path, "form_entries", DS, [form("2022-04-29T10:00:00")])
    validate(config)
    assert query(config, "SELECT entry_datetime FROM form_entries") == [
        (dt.datetime(2022, 4, 29, 10, 0),)
    ]


def test_the_timestamp_check_quarantines_what_it_cannot_convert(config, tmp_path):
    rejected = [
        "yesterday",
        "29/04/2022 10:00",
        "1651226400",  # an epoch number: Snowflake's cast would take it, DuckDB's not
        "2022-04-29T10:00:00 Europe/Paris",  # a zone name: DuckDB's cast would take it
        "2022-04-29T25:00:00",
        # DuckDB read hour 24 as the next midnight, Snowflake's times end at 23:59:59
        "2022-04-29T24:00:00",
        "2022-04-29 24:00",
        "2022-04-29T10:00:60",
        "2022-02-30T10:00:00",
        "2022-04-29T10:00:00+2",
        # offsets no place has: an engine applies any two digits (+99:99 moved it four days)
        "2022-04-29T10:00:00+99:99",
        "2022-04-29T10:00:00+24:00",
        "2022-04-29T10:00:00+00:60",
        "2022-04-29T10:00:00+14:59",  # over 14 hours
        "2022-04-29T10:00:00-1401",
        "2022-04-29T10:00:00+15",
        "2022-04-29T10:00:00-24",
        "2022-04-29T10:00:00+5",
    ]
    land(tmp_path, "form_entries", DS, [form(v) for v in [*OFFSETS, *rejected]])

    counts = validate(config)

    assert counts["form_entries"] == {
        "read": len(OFFSETS) + len(rejected),
        "valid": len(OFFSETS),
        "quarantined": len(rejected),
    }
    first_rejected = len(OFFSETS) + 2  # header, then one line per row
    assert quarantined(config, "form_entries") == [
        (first_rejected + i, ISO_TIMESTAMP) for i in range(len(rejected))
    ]
    assert query(config, "SELECT count(*) FROM form_entries WHERE entry_datetime IS NULL") == [(0,)]


def test_a_year_before_1900_is_quarantined_naming_the_field(config, tmp_path):
    """Year 0 is 1 BC to the engines, kept as '0001-01-01 (BC)', text that reached the drops."""
    rows = ["0000-01-01T00:00:00", "1899-12-31", "1900-01-01T00:30+01:00", "1899-12-31T23:30-01:00"]
    land(tmp_path, "form_entries", DS, [form(at) for at in rows])

    validate(config)

    # compared as stored, in UTC: the third is 1899-12-31 23:30, the fourth 1900-01-01 00:30
    assert quarantined(config, "form_entries") == [
        (2, "entry_datetime: before 1900-01-01"),
        (3, "entry_datetime: before 1900-01-01"),
        (4, "entry_datetime: before 1900-01-01"),
    ]
    assert query(config, "SELECT CAST(entry_datetime AS VARCHAR) FROM form_entries") == [
        ("1900-01-01 00:30:00",)
    ]


def test_the_unix_epoch_is_quarantined_as_a_clock_not_set(config, tmp_path):
    """1970-01-01 00:00:00 UTC is a client's unset clock, not a moment: kept, an opt-out stamped
    with it lost to every earlier real opt-in (the most recent statement wins) without a word."""
    entries = [
        form("2022-04-29T09:00:00Z", optin_1="Yes"),
        form("1970-01-01T00:00:00Z", optin_1="No"),
        form("1970-01-01", optin_1="No"),  # a date alone is its midnight UTC
        form("1969-12-31T19:00:00-05:00", optin_1="No"),  # the epoch, in New York
        form("1970-01-01T00:00:01Z"),  # a second later: a time, if an odd one
    ]
    land(tmp_path, "form_entries", DS, entries)
    land(tmp_path, "interactions", DS, [interaction("1970-01-01"), interaction(DS)])

    counts = validate(config)

    assert counts["form_entries"] == {"read": 5, "valid": 2, "quarantined": 3}
    reason = "entry_datetime: the Unix epoch (1970-01-01 00:00:00 UTC), a clock not set"
    assert quarantined(config, "form_entries") == [(3, reason), (4, reason), (5, reason)]
    assert counts["interactions"] == {"read": 2, "valid": 1, "quarantined": 1}
    assert quarantined(config, "interactions") == [
        (2, "date: the Unix epoch (1970-01-01), a clock not set")
    ]


# --- 2. interactions dated after their partition -------------------------------------------

ELEMENTS = [
    {
        "poll_id": "p1",
        "title": "Which team do you support?",
        "option": str(i),
        "option_label": label,
    }
    for i, label in enumerate(["Blue", "Red", "White"])
]


def interaction(date: str, option: int = 0, session_id: str = "s1") -> dict:
    return {
        "date": date,
        "event_id": "e1",
        "poll_id": "p1",
        "session_id": session_id,
        "option": str(option),
        "votes": "1",
    }


def test_an_interaction_dated_after_its_partition_is_quarantined(config, tmp_path):
    land(
        tmp_path,
        "interactions",
        "2022-05-01",
        [
            interaction("2022-05-01"),
            interaction("2022-04-30"),  # landed late: fine
            interaction("2022-05-02"),
            interaction("2099-01-01"),
            interaction("2099-13-01"),  # not a date at all: that reason only
        ],
    )

    counts = validate(config, "2022-05-01")

    assert counts["interactions"] == {"read": 5, "valid": 2, "quarantined": 3}
    assert quarantined(config, "interactions") == [
        (4, "date: later than its landing date"),
        (5, "date: later than its landing date"),
        (6, "date: not a YYYY-MM-DD date"),
    ]


def test_an_entry_observed_after_the_day_after_its_partition_is_quarantined(config, tmp_path):
    # the day after is a UTC time late in the partition's local day; later is a broken clock,
    # and identity (ordering by landing day first) would let it re-key the profile it joins
    land(
        tmp_path,
        "form_entries",
        DS,
        [
            form(f"{DS}T10:00:00"),
            form("2022-04-30T23:59:59"),
            form("2022-04-30T23:30:00-05:00"),  # 05-01 04:30 UTC
            form("2022-05-01T00:00:00"),
            form("2022-01-01T00:00:00"),  # landed late: fine
        ],
    )
    land(
        tmp_path,
        "identities",
        DS,
        [{"observed_at": "2022-05-03T08:00:00", "session_id": "s1", "external_id": "sso-1"}],
    )

    counts = validate(config)

    assert counts["form_entries"] == {"read": 5, "valid": 3, "quarantined": 2}
    assert quarantined(config, "form_entries") == [
        (4, "entry_datetime: later than the day after its landing date"),
        (5, "entry_datetime: later than the day after its landing date"),
    ]
    assert quarantined(config, "identities") == [
        (2, "observed_at: later than the day after its landing date")
    ]


def test_a_future_interaction_does_not_reach_the_snapshot(config, tmp_path):
    land(tmp_path, "elements", None, ELEMENTS)
    land(tmp_path, "form_entries", "2022-05-01", [form("2022-05-01T09:00:00")])
    land(
        tmp_path,
        "interactions",
        "2022-05-01",
        [interaction("2022-05-01", option=0), interaction("2099-01-01", option=1)],
    )

    run_all(RunWindow.for_date("2022-05-01"), config)

    assert query(config, "SELECT answers, last_seen, interactions FROM audience_profiles") == [
        ('{"Which team do you support?":"Blue"}', dt.datetime(2022, 5, 1, 9, 0), 1)
    ]


# --- 3. white space ------------------------------------------------------------------------


def test_a_white_space_name_does_not_replace_a_real_one(config, tmp_path):
    land(tmp_path, "form_entries", DS, [form("2022-04-29T09:00:00Z", first_name="Ann")])
    land(
        tmp_path,
        "form_entries",
        DS,
        [form("2022-04-29T10:00:00Z", first_name="\t", last_name=" \r\n ")],
        name="part-1.json",
    )
    run_all(RunWindow.for_date(DS), config)
    assert query(config, "SELECT first_name, last_name FROM audience_profiles") == [("Ann", None)]


def test_white_space_only_values_are_missing_and_values_are_trimmed(config, tmp_path):
    land(
        tmp_path,
        "interactions",
        DS,
        [{**interaction(DS), "session_id": "\t\u00a0"}, {**interaction(DS), "option": "\u20032"}],
        name="part-0.json",
    )
    land(
        tmp_path,
        "form_entries",
        DS,
        [
            form("2022-04-29T10:00:00", session_id="\t \u3000"),
            form(
                "\t2022-04-29T10:00:00\t",
                session_id="s2\r\n",
                email="\tAnn@Example.com\u00a0",  # pasted from a web page
            ),
            # a zero-width space is not white space (str.isspace): it stays, the email is malformed
            form("2022-04-29T10:00:00", session_id="s4", email="bob@example.com\u200b"),
        ],
        name="part-0.json",
    )
    land(
        tmp_path,
        "identities",
        DS,
        [{"observed_at": "2022-04-29T10:00:00", "session_id": "s3", "external_id": "\r\n\u2028"}],
        name="part-0.json",
    )

    validate(config)

    assert quarantined(config, "interactions") == [(1, "session_id: missing")]
    assert quarantined(config, "form_entries") == [
        (1, "session_id: missing"),
        (3, "email: malformed email"),
    ]
    assert quarantined(config, "identities") == [(1, "external_id: missing")]
    assert query(config, "SELECT option FROM interactions") == [(2,)]
    assert query(config, "SELECT session_id, email, email_raw FROM form_entries") == [
        ("s2", "ann@example.com", "\tAnn@Example.com\u00a0")
    ]


def test_an_address_at_an_internationalised_top_level_domain_is_kept(config, tmp_path):
    # .рф is written xn--p1ai: the pattern wanted two or more letters after the last dot and
    # quarantined every such address as malformed. A bare or cut-off xn-- is still malformed.
    emails = ["Ivan@xn--e1afmkfd.XN--P1AI", "ivan@example.xn--", "ivan@example.xn-", "a@b.c"]
    land(
        tmp_path,
        "form_entries",
        DS,
        [form("2022-04-29T10:00:00", session_id=f"s{i}", email=e) for i, e in enumerate(emails)],
        name="part-0.json",
    )

    validate(config)

    assert quarantined(config, "form_entries") == [
        (line, "email: malformed email") for line in (2, 3, 4)
    ]
    assert query(config, "SELECT email FROM form_entries") == [("ivan@xn--e1afmkfd.xn--p1ai",)]
    assert re.fullmatch(EMAIL_PATTERN, "ivan@xn--e1afmkfd.xn--p1ai")  # identity's rule too


# --- 3b. integers and opt-ins --------------------------------------------------------------


def test_a_signed_decimal_or_ten_digit_integer_is_quarantined(config, tmp_path):
    # option and votes are integers >= 0 (docs/data-contract.md)
    land(
        tmp_path,
        "interactions",
        DS,
        [
            interaction(DS),
            {**interaction(DS), "option": "-1"},
            {**interaction(DS), "votes": "+1"},
            {**interaction(DS), "votes": "1.0"},
            {**interaction(DS), "option": "1234567890"},
        ],
    )

    counts = validate(config)

    assert counts["interactions"] == {"read": 5, "valid": 1, "quarantined": 4}
    assert quarantined(config, "interactions") == [
        (3, "option: not a non-negative integer"),
        (4, "votes: not a non-negative integer"),
        (5, "votes: not a non-negative integer"),
        (6, "option: not a non-negative integer"),
    ]


# every spelling validation accepts, and what it states (empty: no statement)
STATEMENTS = {"Yes": True, "y": True, "TRUE": True, "1": True, "No": False, "N": False}
STATEMENTS |= {"false": False, "0": False, "": None}


def test_every_accepted_yes_or_no_is_stored_as_what_it_states(config, tmp_path):
    land(
        tmp_path,
        "form_entries",
        DS,
        [
            form(f"{DS}T10:00:00", session_id=f"s{i}", optin_1=said)
            for i, said in enumerate(STATEMENTS)
        ],
    )

    counts = validate(config)

    assert counts["form_entries"]["quarantined"] == 0
    assert query(config, "SELECT optin_1 FROM form_entries ORDER BY _line") == [
        (stated,) for stated in STATEMENTS.values()
    ]


# --- 4. rows that could not be read, and duplicate elements ---------------------------------


def land_text(root: Path, source: str, ds: str | None, name: str, text: str) -> None:
    folder = root / "landing" / source / (f"date={ds}" if ds else "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_a_row_that_could_not_be_read_has_that_as_its_whole_reason(config, tmp_path):
    # Its fields were checked too: "malformed CSV row: ...; date: missing; event_id: missing; ..."
    for source in pipeline.VALIDATION_ORDER:
        header = ",".join(SOURCES[source].columns)
        ds = DS if SOURCES[source].partitioned else None
        land_text(tmp_path, source, ds, "a.csv", f"{header}\nbad,row\n")
        nested = {c: "" for c in SOURCES[source].columns} | {"session_id": {"a": 1}}
        if source == "elements":
            nested["poll_id"] = [1]
        land_text(tmp_path, source, ds, "b.json", f'[1]\n"text"\n{json.dumps(nested)}\n')

    counts = validate(config)

    for source in pipeline.VALIDATION_ORDER:
        width = len(SOURCES[source].columns)
        assert counts[source]["quarantined"] == 4, source
        assert query(
            config,
            f"SELECT regexp_replace(file, '.*/', ''), line, reason FROM quarantine "
            f"WHERE source = '{source}' ORDER BY file, line",
        ) == [
            ("a.csv", 2, f"malformed CSV row: too few columns (expected {width}, found 2)"),
            ("b.json", 1, "not a JSON object"),
            ("b.json", 2, "not a JSON object"),
            # a nested value names its own field; the others are not listed as missing
            (
                "b.json",
                3,
                f"{'poll_id' if source == 'elements' else 'session_id'}: not a string or number",
            ),
        ], source


def test_the_report_counts_each_problem_under_its_field(config, tmp_path):
    # Grouped by the text before the first ':', the report listed a "field" called
    # "not a JSON object; date" (and every row's several problems under its first one only).
    land_text(
        tmp_path,
        "interactions",
        DS,
        "a.json",
        '[1]\n{"date": "x", "event_id": "e", "poll_id": "p", "session_id": "s", "option": "a",'
        ' "votes": 1}\n{"date": "2022-04-29", "poll_id": "p", "session_id": "s", "option": 1,'
        ' "votes": "b"}\n',
    )
    land_text(tmp_path, "form_entries", DS, "f.csv", ",".join(SOURCES["form_entries"].required))
    window = RunWindow.for_date(DS)
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]

    result = pipeline.validate(window, staged, config)

    assert result["quarantine_by_field"] == [
        ["interactions", "date", 1],
        ["interactions", "event_id", 1],
        ["interactions", "not a JSON object", 1],
        ["interactions", "option", 1],
        ["interactions", "votes", 1],
    ]


def test_quarantine_by_field_splits_each_reason():
    assert pipeline.quarantine_by_field(
        [
            ("interactions", "date: missing; option: not a non-negative integer", 3),
            ("interactions", "date: not a YYYY-MM-DD date", 2),
            ("interactions", "malformed CSV row: too few columns (expected 6, found 2)", 1),
            ("interactions", "not a JSON object", 4),
            ("elements", "poll_id, option: duplicate of a later element row", 1),
        ]
    ) == [
        ["elements", "poll_id, option", 1],
        ["interactions", "date", 5],
        ["interactions", "malformed CSV row", 1],
        ["interactions", "not a JSON object", 4],
        ["interactions", "option", 3],
    ]


def test_a_later_invalid_element_row_does_not_make_the_valid_one_a_duplicate(config, tmp_path):
    # Every row was ranked, so the valid (p1, 0) row was quarantined as "duplicate of a later
    # element row" behind an invalid one, and the element left the catalogue.
    land_text(
        tmp_path,
        "elements",
        None,
        "part-0.csv",  # in place of the fixture's catalogue
        "poll_id,title,option,option_label\n"
        "p1,Team?,0,Blue\n"  # 2: a duplicate of line 4, the latest valid row
        "p1,Team?,1,Red\n"  # 3: kept
        "p1,Team?,0,Sky Blue\n"  # 4: kept
        "p1,,0,Navy\n"  # 5: invalid (no title)
        "p1,Team?,1\n",  # 6: unreadable
    )
    land(tmp_path, "interactions", DS, [interaction(DS, option=0), interaction(DS, option=1)])

    counts = validate(config)

    assert counts["elements"] == {"read": 5, "valid": 2, "quarantined": 3}
    assert query(config, "SELECT option, option_label, _line FROM elements ORDER BY option") == [
        (0, "Sky Blue", 4),
        (1, "Red", 3),
    ]
    assert quarantined(config, "elements") == [
        (2, "poll_id, option: duplicate of a later element row"),
        (5, "title: missing"),
        (6, "malformed CSV row: too few columns (expected 4, found 3)"),
    ]
    pipeline.enrich(RunWindow.for_date(DS), config)
    assert query(config, "SELECT option, option_label FROM interactions_enriched ORDER BY 1") == [
        (0, "Sky Blue"),
        (1, "Red"),
    ]


# --- 5. NUL characters ---------------------------------------------------------------------

# A valid row of each source, every column given (``i`` keeps the element rows of three files
# from being duplicates of one another).
VALID_ROWS = {
    "interactions": lambda i: interaction(DS),
    "elements": lambda i: {**ELEMENTS[i], "element_type": "vote", "event_id": "e1"},
    "form_entries": lambda i: form(
        "2022-04-29T10:00:00Z",
        first_name="Ann",
        last_name="Lee",
        optin_1="Yes",
        optin_2="No",
        accept_terms="Yes",
        form_name="Newsletter",
        form_id="7",
    ),
    "identities": lambda i: {
        "observed_at": "2022-04-29T10:00:00Z",
        "session_id": "s1",
        "external_id": "sso-1",
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
    },
}


def test_a_nul_character_in_any_field_quarantines_the_row_naming_the_field(config, tmp_path):
    # Stored, it reached the exports: PostgreSQL cannot store a NUL in text, so a `kind: sql`
    # delivery failed on every retry, naming no row or field. Landed through each reader: the
    # CSV fast path, the record-by-record one (mixed line endings), JSON (a \u0000 escape).
    for source in pipeline.VALIDATION_ORDER:
        columns = SOURCES[source].columns
        ds = DS if SOURCES[source].partitioned else None
        files = [[VALID_ROWS[source](i)] for i in range(3)]  # a valid row, then one per field
        for rows in files:
            rows += [{**rows[0], c: rows[0][c] + "\x00"} for c in columns]
        land(tmp_path, source, ds, files[0])
        lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in files[1]]
        land_text(
            tmp_path, source, ds, "part-1.csv", "\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:])
        )
        land(tmp_path, source, ds, files[2], name="part-2.json")

    counts = validate(config)

    first_line = {"part-0.csv": 3, "part-1.csv": 3, "part-2.json": 2}  # after the valid row
    for source in pipeline.VALIDATION_ORDER:
        columns = SOURCES[source].columns
        n = len(columns)
        assert counts[source] == {"read": 3 * (n + 1), "valid": 3, "quarantined": 3 * n}, source
        reasons = query(
            config,
            "SELECT regexp_replace(file, '.*/', ''), line, reason FROM quarantine "
            f"WHERE source = '{source}' ORDER BY file, line",
        )
        assert [(f, line) for f, line, _ in reasons] == [
            (f, first + i) for f, first in first_line.items() for i in range(n)
        ], source
        for file, line, reason in reasons:
            field = columns[line - first_line[file]]
            # a field with a format (a date, an email, Yes/No) fails that too
            *format_reasons, last = reason.split("; ")
            assert last == f"{field}: contains a NUL character", (source, reason)
            assert all(r.startswith(f"{field}: ") for r in format_reasons), (source, reason)
    # the raw lines keep their place of the NUL, as U+FFFD: a NUL failed a `kind: sql`
    # delivery of the quarantine table (CSV rows; JSON's raw text holds the escape)
    raws = query(config, "SELECT raw FROM quarantine WHERE file NOT LIKE '%.json'")
    assert raws and not any("\x00" in r for (r,) in raws)
    assert all("\ufffd" in r for (r,) in raws)


# --- Snowflake (fakesnow): the same conversion in the other engine's spelling --------------


def snowflake_config(snowflake_conn: str, tmp_path: Path) -> PipelineConfig:
    """A pipeline on a fresh fakesnow database of its own."""
    database = "VALIDATE_" + uuid.uuid4().hex[:8].upper()
    return write_config(
        tmp_path,
        destinations=[],
        warehouse={
            "engine": "snowflake",
            "conn_id": snowflake_conn,
            "database": database,
            "schema": "main",
        },
    )


@pytest.mark.services
def test_snowflake_converts_offsets_to_utc(snowflake_conn, tmp_path):
    config = snowflake_config(snowflake_conn, tmp_path)
    land(
        tmp_path,
        "form_entries",
        DS,
        [form(v, f"s{i}", first_name="\t") for i, v in enumerate([*OFFSETS, "yesterday"])],
    )

    counts = validate(config)

    assert counts["form_entries"]["quarantined"] == 1
    with open_warehouse(config) as wh:
        stored = wh.query("SELECT entry_datetime, first_name FROM form_entries ORDER BY _line")
    assert stored == [(at, None) for at in OFFSETS.values()]


@pytest.mark.services
def test_snowflake_compares_the_earliest_date_in_utc(snowflake_conn, tmp_path):
    config = snowflake_config(snowflake_conn, tmp_path)
    rows = ["1900-01-01T00:30+01:00", "1899-12-31T23:30-01:00"]
    land(tmp_path, "form_entries", DS, [form(at) for at in rows])

    validate(config)

    with open_warehouse(config) as wh:
        assert wh.query("SELECT line, reason FROM quarantine") == [
            (2, "entry_datetime: before 1900-01-01")
        ]
        assert wh.query("SELECT entry_datetime FROM form_entries") == [
            (dt.datetime(1900, 1, 1, 0, 30),)
        ]


@pytest.mark.services
def test_snowflake_gives_unreadable_rows_and_element_duplicates_the_same_reasons(
    snowflake_conn, tmp_path
):
    config = snowflake_config(snowflake_conn, tmp_path)
    land_text(
        tmp_path,
        "elements",
        None,
        "a.csv",
        "poll_id,title,option,option_label\np1,Team?,0,Blue\np1,Team?,0,Sky\np1,,0,Navy\nbad\n",
    )
    nested = {c: "" for c in SOURCES["interactions"].columns} | {"event_id": [2]}
    land_text(tmp_path, "interactions", DS, "b.json", f"[1]\n{json.dumps(nested)}\n")

    counts = validate(config)

    assert counts["elements"] == {"read": 4, "valid": 1, "quarantined": 3}
    with open_warehouse(config) as wh:
        assert wh.query("SELECT option_label FROM elements") == [("Sky",)]
        reasons = wh.query("SELECT source, line, reason FROM quarantine ORDER BY source, line")
    assert reasons == [
        ("elements", 2, "poll_id, option: duplicate of a later element row"),
        ("elements", 4, "title: missing"),
        ("elements", 5, "malformed CSV row: too few columns (expected 4, found 1)"),
        ("interactions", 1, "not a JSON object"),
        ("interactions", 2, "event_id: not a string or number"),
    ]


@pytest.mark.services
def test_snowflake_quarantines_a_nul_character_naming_the_field(snowflake_conn, tmp_path):
    config = snowflake_config(snowflake_conn, tmp_path)
    at = "2022-04-29T10:00:00Z"
    land(tmp_path, "form_entries", DS, [form(at, first_name="Ann"), form(at, first_name="Ann\x00")])

    counts = validate(config)

    assert counts["form_entries"] == {"read": 2, "valid": 1, "quarantined": 1}
    with open_warehouse(config) as wh:
        assert wh.query("SELECT first_name FROM form_entries") == [("Ann",)]
        assert wh.query("SELECT line, reason FROM quarantine") == [
            (3, "first_name: contains a NUL character")
        ]


@pytest.mark.parametrize("source", ["elements", "form_entries", "identities", "interactions"])
def test_each_validation_checks_the_columns_the_extract_stages(source):
    """The SQL names its source's columns (to trim and check each): a column added to the
    landing contract alone would go untrimmed and unchecked."""
    sql = (PROJECT_ROOT / "include" / "sql" / "validate" / f"{source}.sql").read_text()
    named = re.search(r"\{% set columns = (\[.*?\]) %\}", sql, re.DOTALL)
    assert named, f"validate/{source}.sql names no columns"
    assert sorted(json.loads(named.group(1))) == sorted(SOURCES[source].columns)
