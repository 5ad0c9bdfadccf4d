"""End to end: the daily build with segments, delivered to the Dotdigital stand-in.

The sample data (audience_profiles.generate) runs through ``run_all`` date by date, with a
segments file using every rule kind and a Dotdigital destination syncing each segment to an
address book. After every date, each address book must hold exactly the consented members of its
segment, where the members are worked out here in Python from the run's other outputs (answers
JSON, attributed interactions, validated form entries), not by the segment SQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from audience_profiles.generate import GenerateOptions, data_dates, generate
from audience_profiles.pipeline import RunWindow, run_all
from tests.services.dotdigital_standin import DOTDIGITAL_CONN_ID
from tests.support import write_config

pytestmark = [pytest.mark.services, pytest.mark.e2e]

PLAYER = "Pick your player of the match"
TEAM = "Which team do you support?"
PARTNER_SEGMENTS = {"partner_marketing"}


def predicted_event(landing: Path) -> str:
    """The event with the most score predictions in the sample's element catalogue."""
    elements = pd.read_csv(landing / "elements" / "elements.csv", dtype=str)
    predictions = elements[elements.element_type == "prediction"].drop_duplicates("poll_id")
    return predictions.event_id.value_counts().index[0]


def segment_definitions(event_id: str) -> dict:
    players = ["Player 1", "Player 2", "Player 3", "Player 4"]
    return {
        "segments": {
            "early_players": {"answer": {"attribute": PLAYER, "in": players}},
            "blue_fans": {"answer": {"attribute": TEAM, "equals": "Manchester Blue"}},
            "competition_regulars": {"form_entries": {"min": 2, "within_days": 30}},
            "event_predictors": {
                "interaction": {"element_type": "prediction", "event_id": event_id}
            },
            "weekly_voters": {"interaction": {"element_type": "vote", "min": 2, "within_days": 3}},
            "partner_marketing": {"attribute": {"column": "optin_2", "equals": True}},
            "engaged_early_players": {
                "all": [
                    {"answer": {"attribute": PLAYER, "in": players}},
                    {
                        "any": [
                            {"form_entries": {"min": 2, "within_days": 3}},
                            {"interaction": {"element_type": "quiz", "min": 3}},
                        ]
                    },
                ]
            },
        }
    }


def book(segment_id: str) -> str:
    return f"AP {segment_id}"


class Expected:
    """Segment members for one run date, from the run's exports and the validated sources."""

    def __init__(self, config, landing: Path, ds: str):
        export = Path(config.work_dir) / "runs" / ds / "export"
        self.ds = dt.date.fromisoformat(ds)
        self.profiles = pd.read_parquet(export / "audience_profiles.parquet")
        self.interactions = pd.read_parquet(export / "audience_profile_interactions.parquet")
        types = pd.read_csv(landing / "elements" / "elements.csv", dtype=str)
        types = types.drop_duplicates("poll_id").set_index("poll_id").element_type
        self.interactions["element_type"] = self.interactions.poll_id.map(types)
        self.interactions["interaction_date"] = pd.to_datetime(
            self.interactions.interaction_date
        ).dt.date
        identifiers = pd.read_parquet(export / "profile_identifiers.parquet")
        emails = identifiers[identifiers.identifier_type == "email"]
        with duckdb.connect(config.warehouse.path, read_only=True) as con:
            entries = con.execute(
                "SELECT email, entry_datetime FROM form_entries "
                f"WHERE dt <= DATE '{ds}' AND entry_datetime < DATE '{ds}' + 1"
            ).df()
        self.entries = entries.merge(emails, left_on="email", right_on="identifier_value")
        self.entries["entry_date"] = self.entries.entry_datetime.dt.date
        self.memberships = pd.read_parquet(export / "segment_memberships.parquet")

    def window(self, days: int | None) -> dt.date:
        return self.ds - dt.timedelta(days=days - 1) if days else dt.date.min

    def answered(self, title: str, options: list[str]) -> dict[str, None]:
        latest = self.profiles.answers.map(lambda a: json.loads(a).get(title))
        return dict.fromkeys(self.profiles.profile_id[latest.isin(options)])

    def nth(self, frame: pd.DataFrame, date_column: str, n: int, days: int | None) -> dict:
        """Profiles with at least n rows in the window -> the date of their n-th."""
        frame = frame[(frame[date_column] >= self.window(days)) & (frame[date_column] <= self.ds)]
        dates = frame.sort_values(date_column).groupby("profile_id")[date_column].apply(list)
        return {pid: d[n - 1] for pid, d in dates.items() if len(d) >= n}

    def interacted(self, n: int = 1, days: int | None = None, **match) -> dict:
        frame = self.interactions
        for column, value in match.items():
            frame = frame[frame[column] == value]
        return self.nth(frame, "interaction_date", n, days)

    def entered(self, n: int, days: int | None) -> dict:
        return self.nth(self.entries, "entry_date", n, days)

    def opted_in_partners(self) -> dict:
        yes = self.profiles[self.profiles.optin_2.eq(True)]
        return dict(zip(yes.profile_id, yes.optin_2_at.dt.date, strict=True))

    def segments(self, event_id: str) -> dict[str, dict]:
        """segment -> {profile_id: since, or None where only membership is checked}."""
        early = self.answered(PLAYER, ["Player 1", "Player 2", "Player 3", "Player 4"])
        active = self.entered(2, 3).keys() | self.interacted(3, element_type="quiz").keys()
        return {
            "early_players": early,
            "blue_fans": self.answered(TEAM, ["Manchester Blue"]),
            "competition_regulars": self.entered(2, 30),
            "event_predictors": self.interacted(element_type="prediction", event_id=event_id),
            "weekly_voters": self.interacted(2, 3, element_type="vote"),
            "partner_marketing": self.opted_in_partners(),
            "engaged_early_players": dict.fromkeys(early.keys() & active),
        }

    def built(self) -> dict[str, dict]:
        return {
            segment: dict(zip(rows.profile_id, rows.since, strict=True))
            for segment, rows in self.memberships.groupby("segment_id")
        }

    def addresses(self, profile_ids, consent_column: str) -> set[str]:
        chosen = self.profiles[self.profiles.profile_id.isin(list(profile_ids))]
        chosen = chosen[chosen[consent_column].eq(True) & chosen.email.fillna("").ne("")]
        return set(chosen.email.str.strip().str.lower())


def test_daily_build_syncs_each_segment_to_its_address_book_exactly(tmp_path, dotdigital):
    landing = tmp_path / "landing"
    generate(GenerateOptions(out=landing, interactions=3_000, days=4, seed=42))
    event_id = predicted_event(landing)
    definitions = segment_definitions(event_id)
    segments_file = tmp_path / "segments.yml"
    segments_file.write_text(yaml.safe_dump(definitions))
    config = write_config(
        tmp_path,
        segments_config=str(segments_file),
        destinations=[
            {
                "name": "dotdigital",
                "kind": "dotdigital",
                "conn_id": DOTDIGITAL_CONN_ID,
                "tables": ["segment_memberships", "audience_profiles"],
                "segments": {
                    s: {"address_book": book(s), "partner": s in PARTNER_SEGMENTS}
                    for s in definitions["segments"]
                },
                "consent": {"text": "Yes, club news.", "partner_text": "Yes, partner offers."},
                "data_fields": {"TEAM": f"answers.{TEAM}", "LASTINTERACTION": "last_seen"},
                "poll_interval": 0.01,
                "backoff_base": 0.01,
            }
        ],
    )

    history: dict[str, list[set[str]]] = {s: [] for s in definitions["segments"]}
    for ds in data_dates(landing):
        result = run_all(RunWindow.for_date(ds), config)
        expected = Expected(config, landing, ds)
        wanted = expected.segments(event_id)
        built = expected.built()
        report = result["deliveries"][0]
        for segment, members in wanted.items():
            got = built.get(segment, {})
            assert set(got) == set(members), f"{ds} {segment}: membership"
            dated = {p: s for p, s in members.items() if s is not None}
            assert {p: got[p] for p in dated} == dated, f"{ds} {segment}: since dates"
            column = "optin_2" if segment in PARTNER_SEGMENTS else "optin_1"
            addresses = expected.addresses(members, column)
            assert dotdigital.members(book(segment)) == addresses, f"{ds} {segment}: address book"
            history[segment].append(addresses)
        assert report["details"]["segments"].keys() <= set(definitions["segments"])

    # The sample exercises the sync: every segment reached its book, and members also left.
    assert all(any(books) for books in history.values()), history
    removals = sum(len(a - b) for books in history.values() for a, b in itertools.pairwise(books))
    assert removals > 0

    # Re-running the last date changes nothing: same memberships, nothing sent or removed.
    last = data_dates(landing)[-1]
    export = Path(config.work_dir) / "runs" / last / "export" / "segment_memberships.parquet"
    before = pd.read_parquet(export)
    rerun = run_all(RunWindow.for_date(last), config)
    pd.testing.assert_frame_equal(pd.read_parquet(export), before)
    assert rerun["deliveries"][0]["rows"] == {"added": 0, "changed": 0, "removed": 0, "rejected": 0}
