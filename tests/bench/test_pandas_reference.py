"""The SQL build against the pandas reference (bench/pandas_reference.py), on random landings.

`bench_build.py --verify` compares the two on the generator's data, which is well-behaved. Here
hypothesis writes small landings (each source as CSV or newline-delimited JSON) made of the
rules' edge cases instead: a few sessions, emails and SSO accounts shared at random (so profiles
chain, kiosks appear and two accounts meet on one session), case and whitespace variants,
blocked and malformed values, offsets, observations in the same second, rows landing a day late,
names and consents given, blank, withdrawn or invalid. The real pipeline (landing extract,
validation, enrichment) loads every date into a DuckDB file and then builds one of them
(identity, profiles, checks, publish), the last or an earlier one with later data already
loaded, as a re-run does; the reference builds the same date from the files up to it. Every
output table must hold the same rows. Two implementations written separately agreeing on such
inputs is the evidence that the rules in docs/identity.md are what the SQL does.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_profiles import pipeline
from audience_profiles.identity import load_rules
from audience_profiles.landing import SOURCES
from tests.support import IDENTITY_RULES, write_config, write_csv, write_ndjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import pandas_reference  # noqa: E402

DATES = ("2022-04-29", "2022-04-30", "2022-05-01")

SESSIONS = [f"sess-{i}" for i in range(7)]
EMAILS = [
    "ann@example.com",
    " Ann@Example.COM ",  # the same person: trimmed and lower-cased
    "bob@example.com",
    "cat@example.com",
    "dan@example.com",
    "test@test.com",  # blocked value
    "NULL",  # blocked value, any case
    "not-an-email",  # quarantined by validation
]
EXTERNAL_IDS = ["u-1", "u-2", "u-3", "anonymous", "0"]  # the last two are blocked
NAMES = ["", "Ann", "Bob", " Cat "]
YES_NO = ["", "yes", "no", "Y", "0", "maybe"]  # "maybe" is quarantined
# few distinct times, so that observations tie to the second; offsets move them across days;
# the last is no time of day (quarantined)
TIMES = [
    "00:00:00",
    "09:30:00",
    "09:30:00+02:00",
    "07:30:00Z",
    "23:59:59",
    "23:30:00-02:00",
    "24:61:00",
]
POLLS = {
    "poll-1": ("Which team do you support?", ["Blue", "Red", "Green"]),
    "poll-2": ("MVP?", ["A", "B"]),
}


def landed(dates: list[int]):
    """A landing date index and whether the row arrives a day after it was observed."""
    return st.tuples(st.sampled_from(dates), st.sampled_from([False, False, False, True]))


form_entries = st.tuples(
    landed([0, 1, 2]),
    st.sampled_from(TIMES),
    st.sampled_from(SESSIONS),
    st.sampled_from(EMAILS),
    st.sampled_from(NAMES),
    st.sampled_from(NAMES),
    st.sampled_from(YES_NO),
    st.sampled_from(YES_NO),
    st.sampled_from(YES_NO),
)
sso_links = st.tuples(
    landed([0, 1, 2]),
    st.sampled_from(TIMES),
    st.sampled_from(SESSIONS),
    st.sampled_from(EXTERNAL_IDS),
    st.sampled_from(["", "", *EMAILS]),
    st.sampled_from(NAMES),
)
interactions = st.tuples(
    landed([0, 1, 2]),
    st.sampled_from(SESSIONS),
    st.sampled_from(sorted(POLLS)),
    st.integers(0, 3),  # option 3 of poll-1 and 2, 3 of poll-2 are unknown elements
)
landings = st.fixed_dictionaries(
    {
        "form_entries": st.lists(form_entries, max_size=14),
        "identities": st.lists(sso_links, max_size=8),
        "interactions": st.lists(interactions, min_size=1, max_size=20),
        # the sources whose partitions land as newline-delimited JSON instead of CSV
        "json": st.sets(st.sampled_from(["interactions", "form_entries", "identities"])),
    }
)


def write_rows(path: Path, source: str, rows: list[dict]) -> None:
    """As CSV in the contract's column order, or as JSON with blank values left out (as JSON
    writers leave absent fields out)."""
    if path.suffix == ".json":
        write_ndjson(path, [{k: v for k, v in row.items() if v != ""} for row in rows])
    else:
        columns = SOURCES[source].columns
        write_csv(path, list(columns), [[row.get(c, "") for c in columns] for row in rows])


def write_landing(root: Path, landing: dict) -> None:
    elements = [
        {"poll_id": poll, "title": title, "option": i, "option_label": label}
        for poll, (title, labels) in POLLS.items()
        for i, label in enumerate(labels)
    ]
    write_rows(root / "elements" / "elements.csv", "elements", elements)
    partitions: dict[tuple[str, str], list[dict]] = {}

    def add(source: str, when: tuple[int, bool], row: dict) -> str:
        day, late = when
        observed = DATES[day - 1] if late and day > 0 else DATES[day]
        partitions.setdefault((source, DATES[day]), []).append(row)
        return observed

    for when, time, session, email, first, last, optin_1, optin_2, terms in landing["form_entries"]:
        row = {"session_id": session, "email": email, "first_name": first, "last_name": last,
               "optin_1": optin_1, "optin_2": optin_2, "accept_terms": terms,
               "form_name": "Win a Signed Shirt", "form_id": "29"}  # fmt: skip
        row["entry_datetime"] = f"{add('form_entries', when, row)}T{time}"
    for when, time, session, external_id, email, first in landing["identities"]:
        row = {"session_id": session, "external_id": external_id, "email": email,
               "first_name": first}  # fmt: skip
        row["observed_at"] = f"{add('identities', when, row)} {time}"
    for when, session, poll, option in landing["interactions"]:
        row = {"event_id": "event-1", "poll_id": poll, "session_id": session,
               "option": option, "votes": 1}  # fmt: skip
        row["date"] = add("interactions", when, row)
    for (source, dt), rows in partitions.items():
        suffix = "json" if source in landing.get("json", ()) else "csv"
        write_rows(root / source / f"date={dt}" / f"part-0.{suffix}", source, rows)
    for source in ("interactions", "form_entries", "identities"):
        for dt in DATES:  # every date has its partition, even an empty one
            (root / source / f"date={dt}").mkdir(parents=True, exist_ok=True)


def sql_build(work: Path, landing_root: Path, ds: str) -> Path:
    """The daily pipeline: every date extracted, validated and enriched (later ones too, as when
    a past date is re-run), then ``ds`` built; returns the folder of its exports."""
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(
        work, destinations=[], landing_root=str(landing_root), start_date=DATES[0]
    )
    for date in DATES:
        loaded = pipeline.RunWindow.for_date(date)
        staged = [pipeline.extract_source(s, loaded, config) for s in pipeline.VALIDATION_ORDER]
        pipeline.validate(loaded, staged, config)
        pipeline.enrich(loaded, config)
    window = pipeline.RunWindow.for_date(ds)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    pipeline.check_quality(window, config)
    exports = Path(pipeline.publish(window, config)["audience_profiles"]).parent
    assert exports.parent.name == ds, exports
    return exports


# Each output table with the columns both builds fill: the reference leaves out what only the
# warehouse knows (ids of runs, the time of the run).
COMPARED = {
    "profile_identifiers": "identifier_type, identifier_value, profile_id",
    "audience_profiles": "profile_id, email, external_id, first_name, last_name, optin_1, optin_2, "
    "accept_terms, first_seen, last_seen, sessions, interactions, answers, optin_1_at, "
    "optin_1_source, optin_2_at, optin_2_source, accept_terms_at, accept_terms_source",
    "profile_merges": "merged_profile_id, surviving_profile_id, merged_at, reason, "
    "identifier_type, identifier_value",
    "audience_profile_interactions": "profile_id, first_name, last_name, email, interaction_date, "
    "attribute, option, poll_id, event_id, session_id, votes",
    "identity_link_audit": "rule, detail, left_type, left_value, right_type, right_value, "
    "observed_at, source, file, line",
    "interactions_enriched": "date, event_id, poll_id, title, element_type, session_id, option, "
    "option_label, votes",
    # the reference keeps which rows it quarantined, not why
    "quarantine": "source, file, line",
}
PANDAS_NAMES = {"quarantine": {"file": "_file AS file", "line": "_line AS line"}}


def differences(sql_dir: Path, pandas_dir: Path) -> dict[str, dict]:
    out = {}
    for table, columns in COMPARED.items():
        a = f"SELECT {columns} FROM read_parquet('{sql_dir / table}.parquet')"
        renamed = PANDAS_NAMES.get(table, {})
        pandas_columns = ", ".join(renamed.get(c, c) for c in columns.split(", "))
        b = f"SELECT {pandas_columns} FROM read_parquet('{pandas_dir / table}.parquet')"
        only_sql = duckdb.sql(f"{a} EXCEPT ALL {b}").fetchall()
        only_pandas = duckdb.sql(f"{b} EXCEPT ALL {a}").fetchall()
        if only_sql or only_pandas:
            out[table] = {"only in SQL": only_sql[:5], "only in pandas": only_pandas[:5]}
    return out


def differences_on(landing: dict, ds: str) -> dict[str, dict]:
    """Both builds of ``ds`` from one landing; what differs, table by table."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_landing(work / "landing", landing)
        sql_dir = sql_build(work / "sql", work / "landing", ds)
        # the reference reads only the partitions up to ds
        pandas_dir = work / "pandas"
        pandas_reference.build(
            str(work / "landing"), ds, str(pandas_dir), load_rules(IDENTITY_RULES)
        )
        return differences(sql_dir, pandas_dir)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(landing=landings, ds=st.sampled_from(DATES[1:]))
def test_sql_build_matches_the_pandas_reference(landing, ds):
    assert differences_on(landing, ds) == {}


def test_a_landing_with_every_edge_case_at_once():
    """One fixed landing, so a failure here is reproducible without hypothesis's database."""
    landing = {
        "form_entries": [
            ((0, False), "09:30:00", "sess-0", "ann@example.com", "Ann", "", "yes", "", "yes"),
            ((1, True), "09:30:00+02:00", "sess-1", " Ann@Example.COM ", "", "Lee", "no", "", ""),
            ((2, False), "23:59:59", "sess-2", "bob@example.com", "Bob", "", "", "Y", ""),
            ((2, False), "00:00:00", "sess-3", "test@test.com", "", "", "", "", ""),
            ((2, False), "00:00:00", "sess-3", "not-an-email", "", "", "", "", ""),
            ((2, False), "24:61:00", "sess-6", "cat@example.com", "", "", "maybe", "", ""),
            # joining cat's profile (u-1, through the kiosk sess-4) to ann's (u-2) is cut
            ((0, False), "09:30:00", "sess-6", "cat@example.com", "Cat", "", "", "", "no"),
            ((2, False), "09:30:00", "sess-0", "cat@example.com", "", "", "", "", ""),
            # eve's profile (day 1) merges into bob's on the last day
            ((1, False), "09:30:00", "sess-5", "eve@example.com", "Eve", "", "yes", "", ""),
            ((2, False), "09:30:00", "sess-2", "eve@example.com", "", "", "", "", ""),
            *[((1, False), "07:30:00Z", "sess-4", e, "", "", "", "", "") for e in EMAILS[2:6]],
        ],
        "identities": [
            ((1, False), "09:30:00", "sess-1", "u-1", "bob@example.com", "Ann"),
            ((2, False), "09:30:00", "sess-1", "u-2", "", ""),
            ((2, False), "00:00:00", "sess-5", "anonymous", "", ""),
        ],
        "interactions": [((d, False), s, "poll-1", d % 4) for d in range(3) for s in SESSIONS],
        "json": {"identities"},  # as the generator writes them
    }
    assert differences_on(landing, DATES[-1]) == {}
