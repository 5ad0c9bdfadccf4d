"""Test support for stream destinations: run exports shaped like the build's, and a destination
built from a pipeline.yml entry the way the DAG builds it."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from audience_profiles.config import parse_config
from audience_profiles.destinations import Destination, destination_for
from audience_profiles.destinations.base import RunInfo
from audience_profiles.destinations.streams import records_from_export

RUN = RunInfo(ds="2024-05-01", run_id="scheduled__2024-05-01T00:00:00+00:00")


def profiles_table(count: int) -> pa.Table:
    seen = dt.datetime(2024, 4, 30, 12, 0, 0)
    return pa.table(
        {
            "profile_id": [f"p-{i:05d}" for i in range(count)],
            "email": [f" Fan{i}@Example.com " if i % 5 else None for i in range(count)],
            "external_id": [f"sso-{i}" if i % 3 == 0 else None for i in range(count)],
            "first_name": [f"First{i}" for i in range(count)],
            "last_name": [f"Last{i}" for i in range(count)],
            "optin_1": [i % 2 == 0 for i in range(count)],
            "optin_2": [None if i % 7 == 0 else i % 3 == 0 for i in range(count)],
            "accept_terms": [True] * count,
            "first_seen": pa.array(
                [seen - dt.timedelta(days=i % 30) for i in range(count)], pa.timestamp("us")
            ),
            "last_seen": pa.array([seen] * count, pa.timestamp("us")),
            "sessions": pa.array([1 + i % 4 for i in range(count)], pa.int64()),
            "interactions": pa.array([2 + i % 9 for i in range(count)], pa.int64()),
            "answers": [f'{{"Favourite team": "Team {i % 11}"}}' for i in range(count)],
            "optin_1_source": ["form"] * count,  # a column the contract may add later
        }
    )


def interactions_table(count: int, profiles: int) -> pa.Table:
    return pa.table(
        {
            "profile_id": [f"p-{i % profiles:05d}" for i in range(count)],
            "first_name": [f"First{i % profiles}" for i in range(count)],
            "last_name": [f"Last{i % profiles}" for i in range(count)],
            "email": [f"fan{i % profiles}@example.com" for i in range(count)],
            "interaction_date": pa.array(
                [dt.date(2024, 4, 1 + i % 30) for i in range(count)], pa.date32()
            ),
            "attribute": [f"Question {i % 13}" for i in range(count)],
            "option": [f"Answer {i}" for i in range(count)],
            "poll_id": [f"poll-{i % 17}" for i in range(count)],
            "event_id": [f"event-{i % 3}" for i in range(count)],
            "session_id": [f"s-{i}" for i in range(count)],
            "votes": pa.array([1 + i % 2 for i in range(count)], pa.int32()),
        }
    )


def merges_table(count: int) -> pa.Table:
    return pa.table(
        {
            "merged_profile_id": [f"p-m{i:04d}" for i in range(count)],
            "surviving_profile_id": [f"p-{i:05d}" for i in range(count)],
            "merged_at": pa.array(
                [dt.datetime(2024, 5, 1, 2, 0, i % 60) for i in range(count)], pa.timestamp("us")
            ),
            "reason": ["shared email"] * count,
            "identifier_type": ["email"] * count,
            "identifier_value": [f"fan{i}@example.com" for i in range(count)],
        }
    )


def with_repeats(table: pa.Table, repeats: int) -> pa.Table:
    """``table`` with its first ``repeats`` rows once more at the end: identical rows, as a session
    voting the same option of the same poll twice in a day gives (the table has no row id)."""
    return pa.concat_tables([table, table.slice(0, repeats)])


def write_exports(
    folder: Path,
    profiles: int = 40,
    interactions: int = 120,
    merges: int = 5,
    *,
    repeated_interactions: int = 0,
) -> dict[str, str]:
    """Write the run's exports into ``folder``: table name -> Parquet path, as the build does.
    ``repeated_interactions``: that many interactions appear twice (see :func:`with_repeats`)."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "audience_profiles": profiles_table(profiles),
        "audience_profile_interactions": with_repeats(
            interactions_table(interactions, max(profiles, 1)), repeated_interactions
        ),
        "profile_merges": merges_table(merges),
    }
    paths = {}
    for name, table in tables.items():
        path = folder / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=50)
        paths[name] = str(path)
    return paths


# One work folder for the destinations built here, removed when the test process ends.
_WORK = tempfile.TemporaryDirectory(prefix="audience-profiles-stream-tests-")


def stream_destination(entry: dict) -> Destination:
    """The destination for one ``destinations:`` entry of a minimal pipeline.yml."""
    pipeline = parse_config(
        {
            "start_date": "2024-04-01",
            "landing_root": "data/landing",
            "work_dir": _WORK.name,  # its scratch, not the project's data/work
            "destinations": [entry],
        },
        "pipeline.yml",
    )
    return destination_for(pipeline.destinations[0], pipeline)


def record_ids(exports: dict[str, str], table: str) -> list[str]:
    """The record_ids of one table's export, in the order a delivery sends them."""
    return [r.record_id for r in records_from_export(table, exports[table], RUN.ds)]
