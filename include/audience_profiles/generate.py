"""Deterministic, realistic sample data in the landing layout (``audience-profiles generate``).

What it models, because the pipeline has to get each of these right:
- many elements per event (votes, quizzes, competitions, score predictions, team selectors);
- power-law activity: a few sessions interact a lot, most only once or twice;
- people with several sessions (cookie resets), re-joined only through an email they enter again,
  sometimes in another case or with stray white space;
- people entering several competitions, and shared devices (a stadium kiosk) with many emails;
- a share of signed-in users whose SSO identity links sessions to an external id;
- a small share of dirty rows (bad dates, non-integer options, empty session ids, malformed
  emails) that must end in quarantine;
- always the seed's worked example (David Wilson, poll 54663, "Manchester Blue").

Everything comes from one seeded numpy generator, so the same arguments give the same files, and
rows are built as arrays (never row by row) so ten million interactions take seconds.

It writes only its own files: the list of what it wrote grows beside them as it writes
(:data:`MANIFEST`), and the next run removes those and nothing else. Files it did not write in
the landing's source folders (landed by hand, or a real landing the root points at by mistake)
stop it before it writes anything, unless it is told to keep them (``keep_others``); one it
would overwrite stops it always: it neither deletes nor overwrites what it did not write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from audience_profiles import segments
from audience_profiles.config import ConfigError
from audience_profiles.landing import is_hidden, partition_date, some_names

# What the last run wrote under the landing root, one path a line: the next run removes these
# and nothing else. Hidden (a leading "."), so no pipeline run reads it.
MANIFEST = ".generated-files"
SOURCE_FOLDERS = ("interactions", "elements", "form_entries", "identities")
SEED_SESSION = "e298a949-fa5a-4fae-b4bb-f468cb185dd9"
SEED_EVENT = "73fa2b2b-6e24-4d35-9a01-83d36d4d48f5"
SEED_POLL = "54663"
SEED_TITLE = "Which team do you support?"
SEED_OPTIONS = ("Manchester Blue", "Manchester Red", "North London White", "West London Blue")
SEED_EMAIL = "david.wilson@example.com"
SEED_INTERACTION_DATE = "2022-04-29"
SEED_ENTRY = "2022-01-11T11:34:00"

FIRST_NAMES = (
    "David",
    "Sarah",
    "James",
    "Aisha",
    "Tom",
    "Emma",
    "Ravi",
    "Chloe",
    "Liam",
    "Mia",
    "Noah",
    "Zara",
    "Owen",
    "Priya",
    "Jack",
    "Lucy",
    "Omar",
    "Grace",
    "Ben",
    "Ella",
)
LAST_NAMES = (
    "Wilson",
    "Smith",
    "Jones",
    "Patel",
    "Brown",
    "Taylor",
    "Khan",
    "Davies",
    "Evans",
    "Walker",
    "Wright",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Clarke",
)
DOMAINS = ("example.com", "mail.example.org", "fans.example.net", "example.co.uk")
FORMS = (
    ("Win a Signed Shirt", 29),
    ("Matchday Tickets Draw", 31),
    ("Meet the Squad", 34),
    ("Season Ticket Giveaway", 40),
    ("Away Kit Prize Draw", 42),
)
TEAMS = (
    "Manchester Blue",
    "Manchester Red",
    "North London White",
    "West London Blue",
    "Merseyside Red",
    "Tyneside Black",
)
# How often each of the contract's element types (segments.ELEMENT_TYPES) is generated.
ELEMENT_TYPE_SHARES = {
    "vote": 0.4,
    "quiz": 0.25,
    "competition": 0.1,
    "prediction": 0.15,
    "team_selector": 0.1,
}
assert tuple(ELEMENT_TYPE_SHARES) == segments.ELEMENT_TYPES, "a share for each type, in order"
ELEMENT_TYPES = np.array(list(ELEMENT_TYPE_SHARES))
ELEMENT_TYPE_WEIGHTS = np.array(list(ELEMENT_TYPE_SHARES.values()))


@dataclass(frozen=True)
class GenerateOptions:
    out: Path
    start: dt.date = dt.date(2022, 4, 25)
    days: int = 7
    interactions: int = 20_000
    seed: int = 42
    keep_others: bool = False  # write the sample beside files it did not write (runs read both)
    dirty_rate: float = 0.002
    identified_share: float = 0.2
    signed_in_share: float = 0.08


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    hexes = [f"{a:016x}{b:016x}" for a, b in raw]
    return np.array([f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}" for h in hexes])


def _write(con: duckdb.DuckDBPyConnection, df: pd.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # As Arrow: DuckDB scans it without converting pandas strings row by row (same output).
    con.register("frame", pa.Table.from_pandas(df, preserve_index=False))
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json"
    con.execute(f"COPY frame TO '{path}' ({options})")
    con.unregister("frame")


def _elements(rng: np.random.Generator, dates: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Element catalogue rows and, per element, (date, event_id, poll_id, n_options)."""
    rows, polls = [], []
    next_poll = 60000
    events_per_day = 3
    for date in dates:
        for event_id in _uuids(rng, events_per_day):
            for _ in range(int(rng.integers(6, 12))):
                etype = rng.choice(ELEMENT_TYPES, p=ELEMENT_TYPE_WEIGHTS)
                poll_id = str(next_poll)
                next_poll += 1
                if etype == "team_selector":
                    title, labels = (
                        "Pick your player of the match",
                        [f"Player {i}" for i in range(1, 12)],
                    )
                elif etype == "prediction":
                    title, labels = (
                        f"Predict the score ({poll_id})",
                        ["Home win", "Draw", "Away win"],
                    )
                elif etype == "competition":
                    title, labels = f"Enter the prize draw ({poll_id})", ["Enter"]
                elif etype == "quiz":
                    title, labels = f"Quiz question {poll_id}", ["A", "B", "C", "D"]
                else:
                    title, labels = (
                        f"Fan vote {poll_id}",
                        list(rng.choice(TEAMS, size=3, replace=False)),
                    )
                for i, label in enumerate(labels):
                    rows.append((poll_id, title, i, label, etype, event_id))
                polls.append((date, event_id, poll_id, len(labels)))
    for i, label in enumerate(SEED_OPTIONS):
        rows.append((SEED_POLL, SEED_TITLE, i, label, "team_selector", SEED_EVENT))
    polls.extend((d, SEED_EVENT, SEED_POLL, len(SEED_OPTIONS)) for d in dates)
    elements = pd.DataFrame(
        rows, columns=["poll_id", "title", "option", "option_label", "element_type", "event_id"]
    )
    return elements, pd.DataFrame(polls, columns=["date", "event_id", "poll_id", "n_options"])


def _email(first: str, last: str, n: int, domain: str) -> str:
    return f"{first}.{last}{n}@{domain}".lower()


def _variant(rng: np.random.Generator, email: str) -> str:
    """How people type their email again: other case, stray spaces."""
    roll = rng.random()
    if roll < 0.2:
        return email.upper()
    if roll < 0.35:
        return email.capitalize()
    if roll < 0.5:
        return f" {email} "
    return email


def _last_generated(out: Path) -> set[str]:
    """The files the last run wrote under ``out``, as its manifest lists them."""
    manifest = out / MANIFEST
    return set(manifest.read_text().splitlines()) if manifest.is_file() else set()


def _check_files_not_ours(out: Path, dates: list[str], keep_others: bool) -> None:
    """Stop, naming them, before writing over a file the last run did not write (landed by
    hand, a real landing's, or a sample's of a version before MANIFEST), or beside such files
    unless ``keep_others``."""
    others = files_not_generated(out)
    days = sorted({*dates, SEED_ENTRY[:10], SEED_INTERACTION_DATE})
    ours_to_be = {"elements/elements.csv"} | {
        f"{source}/date={day}/{name}"
        for source in ("interactions", "form_entries", "identities")
        for day in days
        for name in ("part-0.csv", "part-1.json", "part-0.json")  # as generate() names them
    }
    theirs = [name for name in others if name in ours_to_be]
    if theirs:
        raise ConfigError(
            f"{out} holds {len(theirs)} file(s) generate would overwrite and did not write "
            f"({some_names(theirs)}): pass --out a folder of its own, or move them away (a "
            "sample written by a version before .generated-files is one: remove its "
            f"{', '.join(f'{s}/' for s in SOURCE_FOLDERS)} folders)"
        )
    if others and not keep_others:
        # a real landing, most likely: synthetic rows in its partitions would reach its outputs
        raise ConfigError(
            f"{out} holds {len(others)} file(s) generate did not write ({some_names(others)}): "
            "pass --out a folder of its own, or --keep-others to write the sample beside them "
            "(runs read both)"
        )


def _remove_last_generated(out: Path) -> None:
    """Remove the files the last run wrote under ``out`` (its manifest's), and the partition
    folders that leaves empty; nothing else. It removed every source folder whole: files landed
    there by hand went with them."""
    for name in sorted(_last_generated(out)):
        parts = Path(name).parts
        if not parts or parts[0] not in SOURCE_FOLDERS or ".." in parts:  # not one of its own
            continue
        path = out / name
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else is in it
            path.parent.rmdir()
    (out / MANIFEST).unlink(missing_ok=True)


def files_not_generated(out: Path) -> list[str]:
    """The files under ``out``'s source folders that the last run did not write (landed by hand,
    or left by a version before :data:`MANIFEST`), which runs read with the sample: not the
    hidden ones (``_SUCCESS``, ``.DS_Store``), which no run reads."""
    written = _last_generated(out)
    found = (
        path.relative_to(out).as_posix()
        for source in SOURCE_FOLDERS
        for path in (out / source).rglob("*")
        if path.is_file() and not is_hidden(path.name)
    )
    return sorted(name for name in found if name not in written)


def generate(options: GenerateOptions) -> dict[str, int]:
    rng = np.random.default_rng(options.seed)
    dates = [(options.start + dt.timedelta(days=i)).isoformat() for i in range(options.days)]
    out = Path(options.out)
    _check_files_not_ours(out, dates, options.keep_others)
    _remove_last_generated(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text("")

    con = duckdb.connect()  # one connection for every file: connecting costs more than writing

    def write(df: pd.DataFrame, path: Path, fmt: str) -> None:
        # each name before its file: the files of a run cut short are its own to the next
        with (out / MANIFEST).open("a") as manifest:
            manifest.write(f"{path.relative_to(out).as_posix()}\n")
        _write(con, df, path, fmt)

    elements, polls = _elements(rng, dates)
    write(elements, out / "elements" / "elements.csv", "csv")

    # People and their sessions: 80% one session, the rest reset their cookie once or more.
    n_sessions = max(options.interactions // 6, 50)
    sessions = _uuids(rng, n_sessions)
    sessions_per_person = rng.choice([1, 2, 3], size=n_sessions, p=[0.8, 0.15, 0.05])
    person_of_session = np.repeat(np.arange(n_sessions), sessions_per_person)[:n_sessions]
    n_people = int(person_of_session.max()) + 1

    # Power-law activity: Pareto weights over sessions.
    weights = rng.pareto(1.2, n_sessions) + 1
    weights /= weights.sum()
    n = options.interactions
    session_idx = rng.choice(n_sessions, size=n, p=weights)
    poll_idx = rng.integers(0, len(polls), size=n)
    chosen = polls.iloc[poll_idx]
    option = (rng.random(n) * chosen["n_options"].to_numpy()).astype(int)
    interactions = pd.DataFrame(
        {
            "date": chosen["date"].to_numpy(),
            "event_id": chosen["event_id"].to_numpy(),
            "poll_id": chosen["poll_id"].to_numpy(),
            "session_id": sessions[session_idx],
            "option": option.astype(str),
            "votes": np.ones(n, dtype=int).astype(str),
        }
    )
    seed_row = pd.DataFrame(
        [
            {
                "date": SEED_INTERACTION_DATE,
                "event_id": SEED_EVENT,
                "poll_id": SEED_POLL,
                "session_id": SEED_SESSION,
                "option": "0",
                "votes": "1",
            }
        ]
    )
    interactions = pd.concat([interactions, seed_row], ignore_index=True)
    interactions["partition"] = interactions["date"]

    # Dirty rows, so quarantine has something real to say.
    n_dirty = int(n * options.dirty_rate)
    if n_dirty:
        dirty = rng.choice(n, size=n_dirty, replace=False)
        kinds = rng.integers(0, 3, size=n_dirty)
        interactions.loc[dirty[kinds == 0], "date"] = "29/04/2022"
        interactions.loc[dirty[kinds == 1], "option"] = "first"
        interactions.loc[dirty[kinds == 2], "session_id"] = ""

    # Identified people: competition entrants (some enter several times, some from a new
    # session after a cookie reset) and signed-in users.
    first = rng.choice(FIRST_NAMES, size=n_people)
    last = rng.choice(LAST_NAMES, size=n_people)
    domain = rng.choice(DOMAINS, size=n_people)
    emails = np.array(
        [
            _email(fn, ln, i, d)
            for i, (fn, ln, d) in enumerate(zip(first, last, domain, strict=True))
        ]
    )
    # person_of_session is sorted: each person's sessions are one run of consecutive indices
    sessions_of = np.split(np.arange(n_sessions), np.flatnonzero(np.diff(person_of_session)) + 1)
    entrants = rng.choice(
        n_people, size=max(int(n_people * options.identified_share), 1), replace=False
    )
    entry_rows = []
    for person in entrants:
        person_sessions = sessions_of[person]
        for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
            s = person_sessions[int(rng.integers(0, len(person_sessions)))]
            day = dates[int(rng.integers(0, len(dates)))]
            form_name, form_id = FORMS[int(rng.integers(0, len(FORMS)))]
            entry_rows.append(
                {
                    "entry_datetime": f"{day}T{int(rng.integers(8, 22)):02d}:{int(rng.integers(0, 60)):02d}:00",
                    "first_name": first[person],
                    "last_name": last[person],
                    "email": _variant(rng, emails[person]),
                    "optin_1": "Yes" if rng.random() < 0.7 else "No",
                    "optin_2": "Yes" if rng.random() < 0.4 else "No",
                    "accept_terms": "Yes",
                    "session_id": sessions[s],
                    "form_name": form_name,
                    "form_id": str(form_id),
                }
            )
    # Shared devices: one kiosk session per three days collects many strangers' entries.
    kiosks = _uuids(rng, max(len(dates) // 3, 1))
    for k, kiosk in enumerate(kiosks):
        for j in range(6):
            person = int(rng.integers(0, n_people))
            entry_rows.append(
                {
                    "entry_datetime": f"{dates[(k * 3) % len(dates)]}T15:{10 + j:02d}:00",
                    "first_name": first[person],
                    "last_name": last[person],
                    "email": emails[person],
                    "optin_1": "Yes",
                    "optin_2": "No",
                    "accept_terms": "Yes",
                    "session_id": kiosk,
                    "form_name": "Stadium Kiosk Draw",
                    "form_id": "50",
                }
            )
    signed_in = rng.choice(
        n_people, size=max(int(n_people * options.signed_in_share), 1), replace=False
    )
    id_rows = []
    for person in signed_in:
        external_id = f"sso-{person:08d}"
        share_email = rng.random() < 0.5
        for s in sessions_of[person]:
            day = dates[int(rng.integers(0, len(dates)))]
            id_rows.append(
                {
                    "observed_at": f"{day}T{int(rng.integers(8, 22)):02d}:00:00",
                    "session_id": sessions[s],
                    "external_id": external_id,
                    "email": emails[person] if share_email else None,
                    "first_name": first[person] if share_email else None,
                    "last_name": last[person] if share_email else None,
                }
            )
    # Cookie resets re-joined later: a person's second session signs in (its own profile), and
    # on the last day enters a competition with the person's email: the two profiles merge.
    multi = [p for p in entrants if len(sessions_of[p]) > 1][: max(len(entrants) // 20, 1)]
    for person in multi:
        second = sessions_of[person][1]
        id_rows.append(
            {
                "observed_at": f"{dates[0]}T09:00:00",
                "session_id": sessions[second],
                "external_id": f"sso-reset-{person:08d}",
                "email": None,
                "first_name": None,
                "last_name": None,
            }
        )
        entry_rows.append(
            {
                "entry_datetime": f"{dates[-1]}T20:00:00",
                "first_name": first[person],
                "last_name": last[person],
                "email": _variant(rng, emails[person]),
                "optin_1": "No",
                "optin_2": "No",
                "accept_terms": "Yes",
                "session_id": sessions[second],
                "form_name": FORMS[0][0],
                "form_id": str(FORMS[0][1]),
            }
        )
    identities = pd.DataFrame(
        id_rows,
        columns=["observed_at", "session_id", "external_id", "email", "first_name", "last_name"],
    )
    identities["partition"] = identities["observed_at"].str[:10]

    forms = pd.DataFrame(entry_rows)
    n_bad_forms = max(int(len(forms) * options.dirty_rate * 5), 1)
    bad = rng.choice(len(forms), size=min(n_bad_forms, len(forms)), replace=False)
    forms.loc[bad, "email"] = forms.loc[bad, "email"].str.replace("@", " at ", regex=False)
    forms["partition"] = forms["entry_datetime"].str[:10]

    # The seed's form entry, on its own (earlier) date.
    seed_entry = pd.DataFrame(
        [
            {
                "entry_datetime": SEED_ENTRY,
                "first_name": "David",
                "last_name": "Wilson",
                "email": SEED_EMAIL,
                "optin_1": "Yes",
                "optin_2": "Yes",
                "accept_terms": "Yes",
                "session_id": SEED_SESSION,
                "form_name": "Win a Signed Shirt",
                "form_id": "29",
                "partition": SEED_ENTRY[:10],
            }
        ]
    )
    forms = pd.concat([forms, seed_entry], ignore_index=True)

    counts = {"elements": len(elements)}
    # Interactions: half of each day as CSV, half as newline-delimited JSON (both are contract).
    for name, frame in (
        ("interactions", interactions),
        ("form_entries", forms),
        ("identities", identities),
    ):
        total = 0
        for day, part in frame.groupby("partition", sort=True):
            part = part.drop(columns=["partition"])
            folder = out / name / f"date={day}"
            if name == "interactions" and len(part) > 1:
                half = len(part) // 2
                write(part.iloc[:half], folder / "part-0.csv", "csv")
                write(part.iloc[half:], folder / "part-1.json", "json")
            elif name == "identities":
                write(part, folder / "part-0.json", "json")
            else:
                write(part, folder / "part-0.csv", "csv")
            total += len(part)
        counts[name] = total
    con.close()
    return counts


def data_dates(landing_root: str | Path) -> list[str]:
    """Every date that has a landing partition, for running the sample without a scheduler."""
    # A misnamed folder (date=2022-4-30) is no date: the runs' extracts fail naming it.
    found = {partition_date(p.name) for p in Path(landing_root).glob("*/date=*") if p.is_dir()}
    return sorted(found - {None})
