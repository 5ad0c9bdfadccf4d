"""Small landings made of the identity rules' edge cases, and the daily pipeline's steps on them.

A landing is a dict of rows per source (tuples: the landing date's index in ``DATES``, whether
the row arrives a day after it was observed, then the values), plus which sources land as
newline-delimited JSON. ``landings`` draws random ones (hypothesis), ``EDGE_CASE_LANDING`` is one
fixed landing of all the cases at once. Used by ``tests/bench/test_pandas_reference.py`` (the
build against the pandas reference), ``tests/identity/test_point_in_time.py`` (day by day, re-run
and rebuilt), ``tests/warehouse/test_snowflake_pushdown.py`` (both engines),
``tests/privacy/test_retention_properties.py`` (retention on random schedules),
``tests/privacy/test_erasure_properties.py`` (an erasure of a random identifier) and
``tests/stream/test_stream_properties.py`` (micro-batches against the daily build).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from audience_profiles import pipeline
from audience_profiles.landing import SOURCES
from tests.support import write_config, write_csv, write_ndjson

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
    "not-an-email",  # a form entry's: quarantined; an SSO row's: no identifier (audited)
    "bob@example.com\u00a0",  # bob: a no-break space is white space too
]
EXTERNAL_IDS = ["u-1", "u-2", "u-3", "anonymous", "0"]  # the last two are blocked
NAMES = ["", "Ann", "Bob", " Cat ", "\u2003Dee\u00a0"]  # trimmed of any white space
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


def load_date(config, date: str) -> None:
    """The daily pipeline's steps before identity for ``date``: its partitions extracted,
    validated and enriched into the warehouse."""
    loaded = pipeline.RunWindow.for_date(date)
    staged = [pipeline.extract_source(s, loaded, config) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(loaded, staged, config)
    pipeline.enrich(loaded, config)


def build_date(config, ds: str) -> Path:
    """The daily pipeline's steps from identity on for ``ds``; returns the folder of its exports."""
    window = pipeline.RunWindow.for_date(ds)
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    pipeline.check_quality(window, config)
    exports = Path(pipeline.publish(window, config)["audience_profiles"]).parent
    assert exports.parent.name == ds, exports
    return exports


def edge_config(
    work: Path,
    landing_root: Path,
    warehouse: dict | None = None,
    identity_config: str | None = None,
):
    """A pipeline config for a landing of ``DATES``, with no destinations and no volume check.
    ``warehouse``: the config's warehouse section (default: a DuckDB file under ``work``);
    ``identity_config``: an identity.yml (default: the shipped one)."""
    work.mkdir(parents=True, exist_ok=True)
    overrides = {"warehouse": warehouse} if warehouse else {}
    if identity_config:
        overrides["identity_config"] = identity_config
    # The volume check is off: in a landing of a handful of people, one later email can merge
    # three profiles into one, a real merge that the check (made for a day's drop in a
    # production's thousands) would stop.
    return write_config(
        work,
        destinations=[],
        landing_root=str(landing_root),
        start_date=DATES[0],
        quality={"min_profiles_kept": 0},
        **overrides,
    )


def sql_build(
    work: Path,
    landing_root: Path,
    ds: str,
    warehouse: dict | None = None,
    identity_config: str | None = None,
) -> Path:
    """The daily pipeline: every date loaded (later ones too, as when a past date is re-run),
    then ``ds`` built; returns the folder of its exports."""
    config = edge_config(work, landing_root, warehouse, identity_config)
    for date in DATES:
        load_date(config, date)
    return build_date(config, ds)


# Every edge case at once, fixed, so that a failure is reproducible without hypothesis's
# database: a kiosk (sess-3) and a session whose fourth email is blocked (sess-4, no kiosk), a
# per-session limit (sess-1 signs in as u-1, then u-2), a profile-limit cut, a merge on the last
# day (eve into bob), blocked values, two quarantined rows (a malformed email; no time of day and
# an invalid consent), SSO logins with a malformed and a placeholder email (kept, the emails
# audited), a blocked account with an email, an observation landing a day late, and answers to
# two polls, some landing a day late, so that the latest answer is decided by the interaction
# date, then the landing date.
KIOSK_EMAILS = ["dan@example.com", "fay@example.com", "gus@example.com", "hal@example.com"]
EDGE_CASE_LANDING = {
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
        # white space beyond ASCII is trimmed: a name, and a last name of nothing else (blank)
        (
            (2, False),
            "09:30:00",
            "sess-8",
            "gil@example.com",
            "\u2003Gil\u00a0",
            "\u00a0",
            "",
            "",
            "",
        ),
        # sess-4 carries four emails, one of them blocked: three count, so it is no kiosk
        *[((1, False), "07:30:00Z", "sess-4", e, "", "", "", "", "") for e in EMAILS[2:6]],
        # sess-3 carries four that count: a kiosk, linked to none of them
        *[((1, False), "07:30:00Z", "sess-3", e, "", "", "", "", "") for e in KIOSK_EMAILS],
    ],
    "identities": [
        ((1, False), "09:30:00", "sess-1", "u-1", "bob@example.com", "Ann"),
        ((2, False), "09:30:00", "sess-1", "u-2", "", ""),
        ((2, False), "00:00:00", "sess-5", "anonymous", "", ""),
        # a blocked account's email is a profile of its own, its email column filled, not Jon
        ((1, False), "12:00:00", "sess-6", "anonymous", "jon@example.com", "Jon"),
        # an SSO platform's malformed and placeholder emails: the logins stay, the emails go
        ((1, False), "10:00:00", "sess-7", "u-3", "not-an-email", ""),
        ((2, False), "10:00:00", "sess-7", "u-3", "NULL", "Ida"),
        # white space beyond ASCII (a no-break space) is trimmed like any other: bob's email
        ((2, False), "11:00:00", "sess-9", "u-1", "bob@example.com\u00a0", ""),
    ],
    "interactions": [
        *[((d, False), s, "poll-1", d % 4) for d in range(3) for s in SESSIONS],
        # sess-0..3 answer poll-2 twice on day 1, the second landing a day late: it wins
        *[((1, False), s, "poll-2", 0) for s in SESSIONS[:4]],
        *[((2, True), s, "poll-2", 1) for s in SESSIONS[:4]],
        # sess-4..6 answer it on day 2, then (in a later line of the same file) a row of day 1
        # lands: the answer of day 2 stays
        *[((2, False), s, "poll-2", 1) for s in SESSIONS[4:]],
        *[((2, True), s, "poll-2", 0) for s in SESSIONS[4:]],
    ],
    "json": {"identities"},  # as the generator writes them
}


# Random landings of the same values, for hypothesis.
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
