"""The privacy SQL on both warehouse engines: DuckDB, and Snowflake (fakesnow) where the daily
build pushes the same SQL down. The hash equals ``hash_identifier`` for non-ASCII addresses, the
tokens macro cuts quarantined lines alike, and one partition's suppression removes the same rows.

fakesnow runs the Snowflake spelling on DuckDB: it proves the SQL parses and means the same as
the DuckDB spelling, not how Snowflake's own ``lower`` treats every character.
"""

from __future__ import annotations

import json
import re

import pytest

from audience_profiles.destinations.drop_erasure import RAW_WORD, raw_words
from audience_profiles.identity import load_rules
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.suppression import apply_suppression
from audience_profiles.warehouse.base import sql_macro
from tests.support import IDENTITY_RULES

pytestmark = pytest.mark.services

DS = "2022-04-29"
EMAILS = [
    "ÉLODIE@Example.com ",
    "\u00a0Zoë.Ångström@EXAMPLE.org\u3000",
    "\u0130nfo@Straße.de",
    "ΟΔΟΣ@παράδειγμα.gr\t",
    "plain@example.com",
]
DAVID_LINE = f'{DS}T09:00:00,David,Wilson,"DAVID@Example.com",Maybe'
OTHER_LINE = f"{DS}T09:00:00,Xavier,Wilson,xdavid@example.com,Maybe"
JSON_LINE = '{"session_id": "d-1", "note": "a;b c"}'
# One partition: David (suppressed by a delete request) on his own session, Ann untouched; two
# quarantined lines, one naming David's address in another case, one an address containing it.
ROWS = {
    "form_entries": [
        f"(DATE '{DS}', TIMESTAMP '{DS} 08:00:00', 'David', 'Wilson', 'david@example.com', "
        "'David@example.com', true, false, true, 'd-1', 'Quiz', 7, 'f.csv', 2)",
        f"(DATE '{DS}', TIMESTAMP '{DS} 08:30:00', 'Ann', 'Lee', 'ann@example.com', "
        "'ann@example.com', true, false, true, 'a-1', 'Quiz', 7, 'f.csv', 3)",
    ],
    "interactions": [
        f"(DATE '{DS}', DATE '{DS}', 'e', '54663', 'd-1', 1, 1, 'i.csv', 2)",
        f"(DATE '{DS}', DATE '{DS}', 'e', '54663', 'a-1', 2, 1, 'i.csv', 3)",
    ],
    "quarantine": [
        f"(DATE '{DS}', 'form_entries', 'f.csv', 4, 'optin_1: expected Yes or No', '{DAVID_LINE}')",
        f"(DATE '{DS}', 'form_entries', 'f.csv', 5, 'optin_1: expected Yes or No', '{OTHER_LINE}')",
    ],
}


def test_sql_hash_equals_python_for_non_ascii_emails(wh):
    values = ", ".join(f"({i}, {wh.literal(v)})" for i, v in enumerate(EMAILS))
    hashed = sql_macro("privacy/_macros.sql", "hashed", "v")
    rows = wh.query(f"SELECT i, {hashed} FROM (VALUES {values}) AS t (i, v) ORDER BY i")
    assert [h for _, h in rows] == [hash_identifier(v) for v in EMAILS]
    assert rows[0][1] == hash_identifier("élodie@example.com")


def test_tokens_are_the_words_python_cuts(wh):
    # every white space character separates words: a value padded with a no-break space too;
    # and a word holding a backslash is also read as a JSON string's content and cut again:
    # escaped padding, non-ASCII (lower- and upper-case hex, a surrogate pair), "\\"" and "\\/"
    lines = [
        DAVID_LINE,
        OTHER_LINE,
        JSON_LINE,
        "tab\tseparated\r\nline",
        "a@b.io\u00a0,x\u2003y",
        '{"email": "\\tc@d.io\\u00A0", "id": "DOMAIN\\\\u-1"}',
        json.dumps({"email": "josé@example.com", "sso": "ÉTÉ\U0001f600 x/y"}),
        '{"email": "JOS\\u00C9@EXAMPLE.COM", "id": "a\\"b\\/c", "s": "q\\/\\u00e9\\u2003r"}',
        # not JSON string content: an unknown escape, a lone surrogate, a cut \\u, a trailing \\
        '{"id": "\\x41y", "s": "p\\ud83d", "t": "\\u00e", "u": "v\\\\\\"}',
    ]
    wh.execute_script(
        "CREATE OR REPLACE TABLE lines AS SELECT * FROM (VALUES "
        + ", ".join(f"({i}, {wh.literal(v)})" for i, v in enumerate(lines))
        + ") AS t (i, raw)"
    )
    tokens = sql_macro("privacy/_macros.sql", "tokens", "i", "lines", wh.engine)
    got = sorted(wh.query(f"SELECT i, token FROM ({tokens}) x"))
    assert got == sorted((i, w) for i, line in enumerate(lines) for w in raw_words(line))
    words = [{w for i, w in got if i == line} for line in range(len(lines))]
    assert words[4] == {"a@b.io", "x", "y"}
    assert words[5] >= {"c@d.io", "DOMAIN\\\\u-1", "DOMAIN\\u-1"} and "DOMAIN" not in words[5]
    assert words[6] >= {"josé@example.com", "ÉTÉ\U0001f600", "x/y"}
    assert words[7] >= {"JOSÉ@EXAMPLE.COM", "b/c", "q/é", "r"}
    assert words[8] == set(re.findall(RAW_WORD, lines[8]))


def test_suppression_removes_the_same_rows(wh):
    for table, rows in ROWS.items():
        for row in rows:
            wh.execute_script(f"INSERT INTO {table} VALUES {row}")
    wh.execute_script(
        "INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('email', "
        f"{wh.literal(hash_identifier('david@example.com'))}, 'delete', 'r-1', TIMESTAMP '{DS} 12:00:00')"
    )

    removed = apply_suppression(wh, DS, load_rules(IDENTITY_RULES))

    assert removed == {"form_entries": 1, "interactions": 1, "quarantine": 1}
    assert wh.query("SELECT email FROM form_entries") == [("ann@example.com",)]
    assert wh.query("SELECT session_id FROM interactions") == [("a-1",)]
    assert wh.query("SELECT line FROM quarantine") == [(5,)]
    # His session, linked to nobody else, joined the list.
    assert wh.query(
        "SELECT identifier_hash FROM suppression_list WHERE identifier_type = 'session_id'"
    ) == [(hash_identifier("d-1"),)]
