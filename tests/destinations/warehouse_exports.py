"""Two days of run exports for the warehouse destinations, small enough to check row by row.

Day 1 (2022-04-30): profiles P1 and P2; P1's session voted twice for the same option (two equal
rows: the reason for ``occurrence``) and once in a poll with no element content (NULL attribute and
option). Day 2 (2022-05-01): P2's session gives the email of P1 in a form, so P2 merges into P1;
a new profile P3 appears. Column types follow the data contract of the build's exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb

from audience_profiles.config import parse_config
from audience_profiles.destinations import Destination, RunInfo, destination_for
from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.privacy import hash_identifier

DAY1, DAY2 = "2022-04-30", "2022-05-01"
P1, P2, P3 = "ap_00000000000000000001", "ap_00000000000000000002", "ap_00000000000000000003"
S1, S2, S3 = "session-1", "session-2", "session-3"

PROFILE_COLUMNS = """
    profile_id VARCHAR, email VARCHAR, external_id VARCHAR, first_name VARCHAR, last_name VARCHAR,
    optin_1 BOOLEAN, optin_2 BOOLEAN, accept_terms BOOLEAN, first_seen TIMESTAMP,
    last_seen TIMESTAMP, sessions BIGINT, interactions BIGINT, answers VARCHAR,
    optin_1_at TIMESTAMP, optin_1_source VARCHAR
"""
INTERACTION_COLUMNS = """
    profile_id VARCHAR, first_name VARCHAR, last_name VARCHAR, email VARCHAR,
    interaction_date DATE, attribute VARCHAR, option VARCHAR, poll_id VARCHAR, event_id VARCHAR,
    session_id VARCHAR, votes INTEGER
"""


def _p1(sessions: int, interactions: int, answers: str) -> str:
    return (
        f"('{P1}', 'david.wilson@example.com', NULL, 'David', 'Wilson', true, false, true, "
        f"TIMESTAMP '2022-04-29 10:00:00', TIMESTAMP '2022-04-30 18:30:00.123456', {sessions}, "
        f"{interactions}, '{answers}', TIMESTAMP '2022-04-29 10:00:00', 'form:Prize draw (7)')"
    )


def _interaction(
    profile: str,
    session: str,
    day: str,
    attribute: str | None,
    option: str | None,
    poll: str,
    votes: int,
) -> str:
    names = "'David', 'Wilson', 'david.wilson@example.com'" if profile == P1 else "NULL, NULL, NULL"
    attr = f"'{attribute}'" if attribute else "NULL"
    opt = f"'{option}'" if option else "NULL"
    return f"('{profile}', {names}, DATE '{day}', {attr}, {opt}, '{poll}', 'event-1', '{session}', {votes})"


DATA = {
    DAY1: {
        "audience_profiles": [
            _p1(1, 3, '{"Which team do you support?":"Manchester Blue"}'),
            f"('{P2}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, TIMESTAMP '2022-04-30 09:00:00', "
            "TIMESTAMP '2022-04-30 09:00:00', 1, 1, '{}', NULL, NULL)",
        ],
        "profile_identifiers": [
            f"('session_id', '{S1}', '{P1}')",
            f"('email', 'david.wilson@example.com', '{P1}')",
            f"('session_id', '{S2}', '{P2}')",
        ],
        "audience_profile_interactions": [
            _interaction(
                P1, S1, "2022-04-29", "Which team do you support?", "Manchester Blue", "54663", 1
            ),
            _interaction(
                P1, S1, "2022-04-29", "Which team do you support?", "Manchester Blue", "54663", 1
            ),
            _interaction(P1, S1, "2022-04-30", None, None, "99999", 2),
            _interaction(P2, S2, "2022-04-30", "Fan vote", "Tyneside Black", "60010", 1),
        ],
        "profile_merges": [],
        "interactions_enriched": [
            "(DATE '2022-04-30', 'event-1', '99999', NULL, NULL, 'session-1', 3, NULL, 2)",
            "(DATE '2022-04-30', 'event-1', '60010', 'Fan vote', 'vote', 'session-2', 1, 'Tyneside Black', 1)",
        ],
        "quarantine": [
            "('interactions', 'a.csv', 7, 'votes: not a non-negative integer', 'x,raw,line')",
            "('form_entries', 'f.csv', 3, 'optin_1: expected Yes or No', "
            "'2022-04-30T10:00:00,David,Wilson,DAVID.Wilson@example.com,Maybe')",
        ],
    },
    DAY2: {
        "audience_profiles": [
            _p1(
                2, 4, '{"Fan vote":"Tyneside Black","Which team do you support?":"Manchester Blue"}'
            ),
            f"('{P3}', 'mia@example.org', NULL, 'Mia', NULL, NULL, NULL, NULL, TIMESTAMP '2022-05-01 08:00:00', "
            "TIMESTAMP '2022-05-01 08:00:00', 1, 0, '{}', NULL, NULL)",
        ],
        "profile_identifiers": [
            f"('session_id', '{S1}', '{P1}')",
            f"('email', 'david.wilson@example.com', '{P1}')",
            f"('session_id', '{S2}', '{P1}')",
            f"('session_id', '{S3}', '{P3}')",
            f"('email', 'mia@example.org', '{P3}')",
        ],
        "audience_profile_interactions": [
            _interaction(
                P1, S1, "2022-04-29", "Which team do you support?", "Manchester Blue", "54663", 1
            ),
            _interaction(
                P1, S1, "2022-04-29", "Which team do you support?", "Manchester Blue", "54663", 1
            ),
            _interaction(P1, S1, "2022-04-30", None, None, "99999", 2),
            _interaction(P1, S2, "2022-04-30", "Fan vote", "Tyneside Black", "60010", 1),
        ],
        "profile_merges": [
            f"('{P2}', '{P1}', TIMESTAMP '2022-05-01 12:00:00', 'shared_identifier', 'session_id', '{S2}')"
        ],
        "interactions_enriched": [],
        "quarantine": [],
    },
}
COLUMNS = {
    "audience_profiles": PROFILE_COLUMNS,
    "profile_identifiers": "identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR",
    "audience_profile_interactions": INTERACTION_COLUMNS,
    "profile_merges": """merged_profile_id VARCHAR, surviving_profile_id VARCHAR, merged_at TIMESTAMP,
                         reason VARCHAR, identifier_type VARCHAR, identifier_value VARCHAR""",
    "interactions_enriched": """date DATE, event_id VARCHAR, poll_id VARCHAR, title VARCHAR,
                                element_type VARCHAR, session_id VARCHAR, option INTEGER,
                                option_label VARCHAR, votes INTEGER""",
    "quarantine": "source VARCHAR, file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR",
}
TABLES = tuple(COLUMNS)

DAVID = "david.wilson@example.com"
# David's request as the erasure DAG resolves it after day 2: P1 (P2 merged into it), and every
# identifier the graph gives P1.
# Quarantined JSON lines json.dumps wrote: escaped non-ASCII ("jos\\u00e9@example.com", an SSO
# id's upper-case "\\u00C9", a session of nothing but escapes) and, last, an address holding the
# erased one only as part of a word, which stays. ESCAPED_REQUEST names the first three.
ESCAPED_LINES = [
    json.dumps({"email": "josé@example.com", "session_id": "stray-1"}),
    json.dumps({"external_id": "ÉTÉ-1", "session_id": "stray-2"}).replace("c9", "C9"),
    json.dumps({"session_id": "ñü"}),
    json.dumps({"email": "xjosé@example.com", "session_id": "stray-3"}),
]
ESCAPED_REQUEST = ErasureRequest(
    "r-2",
    "2022-05-02 09:00:00",
    (),
    (("email", "José@Example.com"), ("external_id", "ÉTÉ-1"), ("session_id", "ñü")),
)


def escaped_quarantine_rows(literal: Callable[[str], str]) -> str:
    """INSERT INTO quarantine's column list and VALUES for ESCAPED_LINES."""
    values = ", ".join(
        f"('form_entries', 'q.json', {n}, 'email: malformed', {literal(line)})"
        for n, line in enumerate(ESCAPED_LINES, start=1)
    )
    return f"(source, file, line, reason, raw) VALUES {values}"


DAVID_REQUEST = ErasureRequest(
    "r-1", "2022-05-02 09:00:00", (P1,), (("email", DAVID), ("session_id", S1), ("session_id", S2))
)


def about_david(row: tuple) -> bool:
    """A loaded row names David: his profiles, sessions, address (plain or hashed, or in a line)."""
    values = [str(v).lower() for v in row if v is not None]
    names = {P1, P2, S1, S2, DAVID, hash_identifier(DAVID)}
    return bool(names & set(values)) or any(DAVID in v for v in values)


def write_exports(folder: Path, day: str) -> dict[str, str]:
    """The day's exports as the build writes them: table name -> Parquet path."""
    out = folder / day
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    with duckdb.connect() as con:
        for table, columns in COLUMNS.items():
            con.execute(f"CREATE OR REPLACE TABLE t ({columns})")
            for row in DATA[day][table]:
                con.execute(f"INSERT INTO t VALUES {row}")
            path = out / f"{table}.parquet"
            con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
            paths[table] = str(path)
    return paths


def warehouse_destination(tmp_path: Path, **spec) -> Destination:
    """A warehouse destination taking every table here, as pipeline.yml would configure it."""
    raw = {
        "start_date": "2022-04-25",
        "landing_root": str(tmp_path / "landing"),
        "work_dir": str(tmp_path / "work"),  # its scratch, not the project's data/work
        "destinations": [{"tables": list(TABLES), **spec}],
    }
    config = parse_config(raw)
    return destination_for(config.destinations[0], config)


def deliver(dest: Destination, tmp_path: Path, day: str) -> dict:
    """Deliver the day's exports as its scheduled run would."""
    return dest.deliver(RunInfo(day, f"scheduled__{day}"), write_exports(tmp_path, day)).to_dict()


def check_erasure(
    dest, deliver: Callable[[str], dict], tables: Callable[[], dict[str, list[tuple]]], pii: str
) -> None:
    """Days 1 and 2 loaded, David's request erases exactly his rows (idempotently), and
    delivering the days' exports again (written before the request) brings nothing back."""
    deliver(DAY1)
    deliver(DAY2)
    before = tables()
    # Hashed and omit loads keep no quarantined raw line: nothing there names David.
    holding = [t for t in TABLES if t != "quarantine" or pii == "plain"]
    assert [t for t in TABLES if any(about_david(r) for r in before[t])] == holding

    statuses = dest.erase([DAVID_REQUEST])

    erased = {t: [r for r in rows if not about_david(r)] for t, rows in before.items()}
    assert tables() == erased
    removed = sum(len(before[t]) - len(erased[t]) for t in TABLES)
    detail = f"{removed} row(s) removed from {len(holding)} table(s)"
    assert statuses == {"r-1": {"status": "done", "detail": detail}}
    # Idempotent: a retried erasure finds nothing more and still answers done.
    assert dest.erase([DAVID_REQUEST])["r-1"] == {
        "status": "done",
        "detail": "0 row(s) removed from 0 table(s)",
    }
    # The latest date delivered again, and an older one (whose partitions no daily run rewrites).
    assert deliver(DAY2)["details"]["erased_rows_withheld"] > 0
    deliver(DAY1)
    if pii != "plain":
        # The load filter reads the export's raw line, which this destination never stores: the
        # quarantine row whose line named David is left out as well.
        erased["quarantine"] = [r for r in erased["quarantine"] if r[1] != "f.csv"]
    assert tables() == erased
