"""One normalise-and-hash rule everywhere: Python, the warehouse SQL, drops and streams agree."""

from __future__ import annotations

import hashlib

import duckdb
import jinja2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audience_profiles.config import WarehouseConfig
from audience_profiles.destinations.drop import render_parts
from audience_profiles.destinations.streams import apply_pii
from audience_profiles.privacy import WHITESPACE, exact_hash, hash_identifier, normalise_identifier
from audience_profiles.warehouse.base import SQL_ROOT
from audience_profiles.warehouse.duckdb import DuckDBWarehouse

# (input, normalised form) straight from the documented rule in docs/privacy.md.
DOCUMENTED = [
    ("Fan@Example.COM", "fan@example.com"),
    ("  fan@example.com\t\n", "fan@example.com"),
    ("\u00a0\u2003fan@example.com\u3000", "fan@example.com"),  # no-break, em and ideographic spaces
    ("\x1cfan@example.com\x85", "fan@example.com"),  # separators str.isspace() accepts
    ("F\u00c4N@Exämple.com", "fän@exämple.com"),
    ("\u0130STANBUL", "istanbul"),  # simple case mapping: dotted I becomes a plain i
    ("ΟΔΟΣ", "οδοσ"),  # no final-sigma rule: each letter on its own
    ("Session-ABC-123", "session-abc-123"),
    ("a b", "a b"),  # inner white space stays
    ("\u200bfan@example.com", "\u200bfan@example.com"),  # zero-width space is not white space
    ("   ", None),
    ("", None),
    (None, None),
]


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(("value", "normalised"), DOCUMENTED)
def test_hash_is_sha256_hex_of_the_documented_normalisation(value, normalised):
    assert normalise_identifier(value) == normalised
    expected = None if normalised is None else sha256_hex(normalised)
    assert hash_identifier(value) == expected
    if expected:
        assert len(expected) == 64 and expected == expected.lower()


def test_an_exact_hash_keeps_the_case_of_ids_and_not_of_emails():
    assert exact_hash("external_id", " SSO-1\u00a0") == sha256_hex("SSO-1")
    assert exact_hash("session_id", "sso-1") != exact_hash("session_id", "SSO-1")
    assert exact_hash("email", " Fan@X.org ") == hash_identifier("fan@x.org")
    assert exact_hash("external_id", " \t") is None


def test_whitespace_is_exactly_what_str_isspace_accepts():
    assert set(WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


@pytest.fixture(scope="module")
def sql_hash(tmp_path_factory):
    """Hash values with the warehouse's SQL macro (privacy/_macros.sql) in the DuckDB engine."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SQL_ROOT)))
    query = env.from_string(
        '{% import "privacy/_macros.sql" as p %}'
        'SELECT {{ p.hashed("v") }}, {{ p.normalised("v") }}, '
        '{{ p.exact_hashed("\'external_id\'", "v") }} FROM t ORDER BY i'
    ).render()
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    wh = DuckDBWarehouse(WarehouseConfig(path=str(path), memory_limit="256MB", threads=1))

    def run(values: list[str | None]) -> list[tuple[str | None, str | None, str | None]]:
        table = pa.table({"i": list(range(len(values))), "v": pa.array(values, pa.string())})
        wh.con.register("t", table)
        try:
            return wh.query(query)
        finally:
            wh.con.unregister("t")

    yield run
    wh.close()


def test_warehouse_sql_hash_equals_python_on_documented_cases(sql_hash):
    values = [v for v, _ in DOCUMENTED]
    assert sql_hash(values) == [
        (hash_identifier(v), normalise_identifier(v), exact_hash("external_id", v)) for v in values
    ]


def test_warehouse_sql_hash_equals_python_for_every_cased_or_space_character(sql_hash):
    # Every code point with a case mapping or counted as white space (the whole table the rule
    # depends on), alone and around ASCII, plus a sample of all the others.
    chars = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    special = [c for c in chars if c.lower() != c or c.upper() != c or c.isspace()]
    values = special + [f"{c}Ab{c}" for c in special] + chars[::101]
    got = sql_hash(values)
    mismatches = [
        (hex(ord(v[0])), v)
        for v, (h, _, exact) in zip(values, got, strict=True)
        if h != hash_identifier(v) or exact != exact_hash("session_id", v)
    ]
    assert mismatches == []


text = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        st.sampled_from(WHITESPACE + "\u0130\u03a3AZ@."),
    ),
    max_size=24,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(text, min_size=1, max_size=20))
def test_warehouse_sql_hash_equals_python_on_random_text(sql_hash, values):
    assert [(h, exact) for h, _, exact in sql_hash(values)] == [
        (hash_identifier(v), exact_hash("external_id", v)) for v in values
    ]


def test_hashed_drops_and_streams_use_the_same_function(tmp_path):
    emails = [" Fan@Example.COM ", "\u00a0ANN@example.com\u3000", "\u0130nfo@x.com", "", None]
    export = tmp_path / "profiles.parquet"
    pq.write_table(
        pa.table({"profile_id": [f"p{i}" for i in range(len(emails))], "email": emails}), export
    )
    parts, _ = render_parts(str(export), "parquet", tmp_path / "drop", pii="hashed")
    dropped = pq.read_table(parts[0][0]).column("email_sha256").to_pylist()
    streamed = [apply_pii({"email": e}, "hashed")["email_sha256"] for e in emails]
    assert dropped == streamed == [hash_identifier(e) for e in emails]
    assert dropped[0] == sha256_hex("fan@example.com")


def test_duckdb_python_function_registration_is_the_function(tmp_path):
    # drop.py registers hash_identifier in DuckDB: the SQL call is the Python function itself.
    con = duckdb.connect()
    from audience_profiles.destinations.drop import HASH_FUNCTION, _register_hash_function

    _register_hash_function(con)
    value = "\u2003Ä@b.com\t"
    assert con.execute(f"SELECT {HASH_FUNCTION}(?)", [value]).fetchone()[0] == hash_identifier(
        value
    )
