"""Shared by the stream tests: a pipeline.yml with a Kinesis destination, landing rows, reading
what the stream emitted and what the warehouse remembers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb

from audience_profiles.config import PipelineConfig
from audience_profiles.destinations.streams import records_from_export
from audience_profiles.pipeline import RunWindow, run_all
from tests.destinations.test_kinesis import create_stream, read_stream
from tests.support import FORM_HEADER, INTERACTION_HEADER, write_config, write_csv

TABLES = ["profile_merges", "audience_profiles", "audience_profile_interactions"]
POLL = "54663"  # the seed's element: options 0..3


def kinesis_config(root: Path, conn_id: str, moto_url: str, **overrides) -> PipelineConfig:
    """pipeline.yml under ``root`` with one Kinesis destination on a new stream."""
    destination = {
        "name": "profile_stream",
        "kind": "kinesis",
        "conn_id": conn_id,
        "stream_name": create_stream(moto_url, shards=1),
        "tables": TABLES,
    }
    return write_config(root, destinations=[destination], **overrides)


def emitted(config: PipelineConfig, moto_url: str) -> list[dict]:
    """Every record in the configured Kinesis stream, in order."""
    stream = config.destinations[0].options["stream_name"]
    return [record for _, record in read_stream(moto_url, stream)]


def of_type(records: list[dict], event_type: str) -> list[dict]:
    return [r for r in records if r["event_type"] == event_type]


def profile_ids(config: PipelineConfig, moto_url: str, *emails: str) -> list[str]:
    """The profile ids the stream's latest upserts give these emails."""
    by_email = {
        r["payload"]["email"]: r["profile_id"]
        for r in of_type(emitted(config, moto_url), "profile_upsert")
    }
    return [by_email[e] for e in emails]


def interaction_rows(rows: list[tuple]) -> list[list]:
    """Landing rows for interactions: (date, session_id, option)."""
    return [[day, "event-1", POLL, session, option, 1] for day, session, option in rows]


def write_interactions(landing: Path, ds: str, name: str, rows: list[tuple]) -> Path:
    return write_csv(
        landing / "interactions" / f"date={ds}" / name, INTERACTION_HEADER, interaction_rows(rows)
    )


def form_row(when: str, first: str, email: str, session: str) -> list:
    return [when, first, "Fan", email, "Yes", "No", "Yes", session, "Match quiz", 7]


def write_forms(landing: Path, ds: str, name: str, rows: list[list]) -> Path:
    return write_csv(landing / "form_entries" / f"date={ds}" / name, FORM_HEADER, rows)


def query(config: PipelineConfig, sql: str) -> list[tuple]:
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        return con.execute(sql).fetchall()


def daily_build(config: PipelineConfig, dates: list[str]) -> dict[str, str]:
    """Run the daily build for ``dates`` (no destinations) and return the last run's exports."""
    quiet = dataclasses.replace(config, destinations=())
    for ds in dates:
        run_all(RunWindow.for_date(ds), quiet)
    export = Path(config.work_dir) / "runs" / dates[-1] / "export"
    return {t: str(export / f"{t}.parquet") for t in TABLES}


def record_ids(table: str, path: str, ds: str) -> set[str]:
    return {r.record_id for r in records_from_export(table, path, ds)}
