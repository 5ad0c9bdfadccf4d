"""The daily DAG end to end through Airflow (dag.test()) on generated data.

Counts are checked against the landing files read independently here (Python's csv and json),
so the pipeline's own bookkeeping is not what proves that nothing was lost.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
from pathlib import Path

import duckdb
import pytest

from audience_profiles.assets import DELIVERED, PUBLISHED, delivered_to
from audience_profiles.config import CONFIG_ENV, PROJECT_ROOT
from audience_profiles.generate import GenerateOptions, generate
from tests.support import write_config

pytestmark = pytest.mark.e2e
DATES = ("2022-04-25", "2022-04-26")
NOT_LANDED = "2022-04-27"  # after the generated days: no partition


def landing_rows(folder: Path) -> int:
    total = 0
    for path in sorted(folder.glob("*")):
        if path.suffix == ".csv":
            with path.open(newline="") as fh:
                total += sum(1 for _ in csv.reader(fh)) - 1
        elif path.suffix == ".json":
            total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def drop_rows(output: Path, table: str, ds: str) -> int:
    manifest = json.loads((output / table / f"dt={ds}" / "_manifest.json").read_text())
    with (output / table / f"dt={ds}" / "part-00000.csv").open(newline="") as fh:
        csv_rows = sum(1 for _ in csv.DictReader(fh))
    assert manifest["rows"] == csv_rows
    return csv_rows


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("e2e")
    # Both partitions are waited for; the generated days have them.
    config = write_config(root, landing_wait={"required": ["interactions", "form_entries"]})
    generate(GenerateOptions(out=root / "landing", interactions=3_000, days=2, dirty_rate=0.01))
    spec = importlib.util.spec_from_file_location(
        "daily_dag_file", PROJECT_ROOT / "dags" / "audience_profiles.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.audience_profiles()
    mp = pytest.MonkeyPatch()
    mp.setenv(CONFIG_ENV, config.source_file)
    try:
        runs = [
            dag.test(logical_date=dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC))
            for ds in (*DATES, NOT_LANDED)
        ]
    finally:
        mp.undo()
    return root, config, runs


def test_runs_succeed(daily_run):
    _, _, runs = daily_run
    assert [str(r.state) for r in runs[: len(DATES)]] == ["success", "success"]


def test_a_date_whose_landing_never_came_fails_at_wait_for_landing(daily_run):
    # Past its deadline: one look, then the run fails, rather than build the day from no rows.
    _, config, runs = daily_run
    missing = runs[-1]
    assert str(missing.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in missing.get_task_instances()}
    assert states["wait_for_landing"] == "failed"
    assert states["extract"] == "upstream_failed"
    assert states["report"] == "success"  # the teardown still reports the run
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        row = con.execute(
            f"SELECT state, report FROM pipeline_runs WHERE ds = DATE '{NOT_LANDED}'"
        ).fetchall()
    ((state, report),) = row
    assert state == "failed"
    assert "wait_for_landing" in json.loads(report)["failed_tasks"]


def test_every_landing_row_is_in_an_output_or_in_quarantine(daily_run):
    root, config, _ = daily_run
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        for ds in DATES:
            for source, table in (
                ("interactions", "interactions_enriched"),
                ("form_entries", "form_entries"),
                ("identities", "identities"),
            ):
                read = landing_rows(root / "landing" / source / f"date={ds}")
                kept = con.execute(
                    f"SELECT count(*) FROM {table} WHERE dt = DATE '{ds}'"
                ).fetchall()[0][0]
                quarantined = con.execute(
                    f"SELECT count(*) FROM quarantine WHERE dt = DATE '{ds}' AND source = '{source}'"
                ).fetchall()[0][0]
                assert read == kept + quarantined, (source, ds)
        assert (
            con.execute("SELECT count(*) FROM quarantine WHERE source = 'interactions'").fetchall()[
                0
            ][0]
            > 0
        )


def test_local_drops_match_the_warehouse(daily_run):
    root, config, _ = daily_run
    output = root / "output"
    last = DATES[-1]
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        for table in ("audience_profiles", "audience_profile_interactions", "profile_identifiers"):
            assert (
                drop_rows(output, table, last)
                == con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            )
        for ds in DATES:
            enriched = con.execute(
                f"SELECT count(*) FROM interactions_enriched WHERE dt = DATE '{ds}'"
            ).fetchall()[0][0]
            assert drop_rows(output, "interactions_enriched", ds) == enriched
            quarantined = con.execute(
                f"SELECT count(*) FROM quarantine WHERE dt = DATE '{ds}'"
            ).fetchall()[0][0]
            assert drop_rows(output, "quarantine", ds) == quarantined


def test_run_scratch_is_cleaned_up(daily_run):
    root, config, _ = daily_run
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        schemas = {
            r[0]
            for r in con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
        }
    assert not {s for s in schemas if s.startswith("run_")}
    assert not (root / "work" / "runs" / DATES[0] / "extract").exists()


def test_each_date_published_and_each_delivery_is_an_asset_event(daily_run):
    """What downstream DAGs schedule on (docs/operations.md, "Scheduling on the outputs"): one
    event per date published and one per destination delivered, each naming its date, and none
    for the date whose landing never came."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    root, config, runs = daily_run
    run_ds = {r.run_id: r.logical_date.date().isoformat() for r in runs}
    with create_session() as session:
        events = session.execute(
            select(AssetModel.name, AssetModel.uri, AssetEvent.source_run_id, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_run_id.in_(list(run_ds)))
        ).all()
    published = [e for e in events if e.name == PUBLISHED.name]
    delivered = [e for e in events if e.name == DELIVERED.name]
    assert {e.uri for e in published} == {PUBLISHED.uri}
    assert {e.uri for e in delivered} == {DELIVERED.uri}
    assert sorted(e.extra["ds"] for e in published) == list(DATES)
    for event in published:
        assert event.extra["ds"] == run_ds[event.source_run_id]
        assert event.extra["current"] is True  # the dates ran in order: each was the latest
        assert event.extra["interval_end"] > event.extra["interval_start"]
        assert set(event.extra["tables"]) >= {"audience_profiles", "profile_merges"}
    last = next(e for e in published if e.extra["ds"] == DATES[-1])
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        profiles = con.execute("SELECT count(*) FROM audience_profiles").fetchall()[0][0]
    assert last.extra["rows"]["audience_profiles"] == profiles
    destinations = sorted(d.name for d in config.enabled_destinations)
    assert sorted((e.extra["ds"], e.extra["destination"]) for e in delivered) == [
        (ds, name) for ds in DATES for name in destinations
    ]
    # each also to the destination's own asset, for a DAG that follows one destination
    for name in destinations:
        own = [e for e in events if e.name == delivered_to(name).name]
        assert {e.uri for e in own} == {delivered_to(name).uri}
        assert sorted(e.extra["ds"] for e in own) == list(DATES)
        assert {e.extra["destination"] for e in own} == {name}
    drop = next(
        e for e in delivered if e.extra == {**e.extra, "ds": DATES[-1], "destination": "local_drop"}
    )
    assert drop.extra["kind"] == "local"
    assert drop.extra["rows"]["audience_profiles"] == drop_rows(
        root / "output", "audience_profiles", DATES[-1]
    )
