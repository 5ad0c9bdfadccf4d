"""Landing data about a few named people, for the privacy tests.

- David (the seed example): form entry 2022-01-11 on SEED_SESSION, interaction 2022-04-29.
- Ann: form entry and interactions on 2022-04-28 and 2022-04-29 on her own session, an SSO login.
- Bob: a form entry and interactions on 2022-04-29.
- A quarantined form entry on 2022-04-29 that names David's address (bad opt-in value).
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from tests.support import (
    FORM_HEADER,
    IDENTITY_HEADER,
    INTERACTION_HEADER,
    SEED_EVENT,
    write_csv,
    write_seed_example,
)

DAVID = "david.wilson@example.com"
ANN = "ann.lee@example.com"
BOB = "bob@example.com"
ANN_SESSION = "ann-session-1"
BOB_SESSION = "bob-session-1"
DAYS = ("2022-01-11", "2022-04-28", "2022-04-29")
REQUEST_HEADER = ["request_id", "identifier_type", "identifier_value", "requested_at", "type"]


def form(when: str, first: str, last: str, email: str, session: str, optin: str = "Yes") -> list:
    return [when, first, last, email, optin, "No", "Yes", session, "Quiz", 7]


def interaction(day: str, session: str, option: int) -> list:
    return [day, SEED_EVENT, "54663", session, option, 1]


def write_people(landing: Path) -> None:
    write_seed_example(landing)
    write_csv(
        landing / "form_entries" / "date=2022-04-28" / "p.csv",
        FORM_HEADER,
        [form("2022-04-28T09:00:00", "Ann", "Lee", "Ann.Lee@Example.com", ANN_SESSION)],
    )
    write_csv(
        landing / "identities" / "date=2022-04-28" / "p.csv",
        IDENTITY_HEADER,
        [["2022-04-28T09:05:00", ANN_SESSION, "sso-ann", ANN, "Ann", "Lee"]],
    )
    write_csv(
        landing / "interactions" / "date=2022-04-28" / "p.csv",
        INTERACTION_HEADER,
        [interaction("2022-04-28", ANN_SESSION, 1)],
    )
    write_csv(
        landing / "form_entries" / "date=2022-04-29" / "p.csv",
        FORM_HEADER,
        [
            form("2022-04-29T08:00:00", "Bob", "Stone", BOB, BOB_SESSION),
            form("2022-04-29T08:30:00", "David", "Wilson", DAVID, "stray", optin="Maybe"),
        ],
    )
    # The seed example already wrote David's interaction of 04-29: add Ann's and Bob's.
    path = landing / "interactions" / "date=2022-04-29" / "part-0.csv"
    with path.open("a", newline="") as fh:
        csv.writer(fh).writerows(
            [interaction("2022-04-29", ANN_SESSION, 2), interaction("2022-04-29", BOB_SESSION, 3)]
        )


def file_request(
    landing: Path,
    request_id: str,
    identifier_type: str,
    value: str,
    kind: str = "delete",
    requested_at: str = "2022-04-30T12:00:00",
) -> None:
    """Append one request to erasure_requests/requests.csv (created with a header)."""
    path = landing / "erasure_requests" / "requests.csv"
    rows = []
    if path.exists():
        with path.open(newline="") as file:
            rows = list(csv.reader(file))[1:]
    rows.append([request_id, identifier_type, value, requested_at, kind])
    write_csv(path, REQUEST_HEADER, rows)


def query(config, sql: str) -> list[tuple]:
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        return con.execute(sql).fetchall()


def mentions(config, needle: str) -> dict[str, int]:
    """Rows of every warehouse table (main schema) whose text mentions ``needle``."""
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        ]
        found = {}
        for table in tables:
            n = con.execute(
                f"SELECT count(*) FROM {table} t WHERE contains(lower(CAST(t AS VARCHAR)), ?)",
                [needle.lower()],
            ).fetchone()[0]
            if n:
                found[table] = n
        return found


def export_mentions(config, needle: str) -> list[str]:
    """Run exports kept under the work folder (for re-delivery) whose rows mention ``needle``."""
    found = []
    with duckdb.connect() as con:
        for path in sorted(Path(config.work_dir).glob("runs/*/export/*.parquet")):
            n = con.execute(
                "SELECT count(*) FROM read_parquet(?) t "
                "WHERE contains(lower(CAST(t AS VARCHAR)), ?)",
                [str(path), needle.lower()],
            ).fetchone()[0]
            if n:
                found.append(str(path))
    return found


def log_rows(config, request_id: str) -> dict[str, tuple]:
    """destination -> (status, detail, attempts) of one request's erasure_log rows."""
    rows = query(
        config,
        "SELECT destination, status, detail, attempts FROM erasure_log "
        f"WHERE request_id = '{request_id}' ORDER BY destination",
    )
    return {r[0]: r[1:] for r in rows}
