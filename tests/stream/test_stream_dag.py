"""The stream DAG through Airflow (dag.test()) on a local landing folder, emitting to Kinesis on
moto: micro-batches, exactly-once emission per interaction, watermarks, crash and re-run."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections import Counter

import pytest

from audience_profiles import stream
from audience_profiles.config import CONFIG_ENV, PROJECT_ROOT
from audience_profiles.dag_defaults import WAREHOUSE_POOL
from tests.stream.support import (
    daily_build,
    emitted,
    form_row,
    kinesis_config,
    of_type,
    query,
    record_ids,
    write_forms,
    write_interactions,
)
from tests.support import SEED_SESSION, write_seed_example

pytestmark = [pytest.mark.services, pytest.mark.e2e]
DAG_FILE = PROJECT_ROOT / "dags" / "audience_profiles_stream.py"


def load_dag():
    spec = importlib.util.spec_from_file_location("stream_dag_file", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.audience_profiles_stream()


@pytest.fixture
def stream_dag(airflow_db, monkeypatch):
    monkeypatch.delenv("AUDIENCE_PROFILES_STREAM_SQS_QUEUE_URL", raising=False)
    return load_dag()


def test_with_a_queue_url_an_sqs_watcher_and_a_reconciliation_schedule(monkeypatch):
    queue = "http://127.0.0.1:4566/123456789012/landed"
    monkeypatch.setenv("AUDIENCE_PROFILES_STREAM_SQS_QUEUE_URL", queue)
    monkeypatch.setenv("AUDIENCE_PROFILES_STREAM_RECONCILE_SECONDS", "120")
    dag = load_dag()

    assert dag.timetable.timetable.delta == dt.timedelta(seconds=120)
    _, kwargs = dag.timetable.asset_condition.watchers[0].trigger.serialize()
    assert (kwargs["sqs_queue"], kwargs["waiter_delay"], kwargs["aws_conn_id"]) == (
        queue,
        0,
        "aws_default",
    )
    assert dag.max_active_runs == 1 and dag.is_paused_upon_creation
    task = dag.get_task("process_landed_files")
    assert task.pool == WAREHOUSE_POOL
    # The task reads the landing asset's events back (stream.landing_event_extras).
    landed = dag.timetable.asset_condition
    assert task.inlets == [landed]

    # A worker parsing the file to run the task skips the trigger (and its imports); the asset
    # stays its inlet.
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "process_landed_files")
    (inlet,) = load_dag().get_task("process_landed_files").inlets
    assert (inlet.name, inlet.uri, inlet.watchers) == (landed.name, landed.uri, [])


@pytest.fixture
def config(tmp_path, aws_conn, moto_server, monkeypatch):
    config = kinesis_config(tmp_path, aws_conn, moto_server)
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    return config


def run_dag(dag) -> str:
    """One micro-batch, as the schedule would start it."""
    run = dag.test(logical_date=dt.datetime.now(dt.UTC))
    return str(run.state)


def test_two_batches_emit_each_interaction_once_and_advance_the_watermark(
    stream_dag, config, moto_server, tmp_path
):
    landing = tmp_path / "landing"
    # Batch 1: the seed (David's form entry and interaction) and a session nobody knows yet.
    write_seed_example(landing)
    write_interactions(landing, "2022-04-29", "b1.csv", [("2022-04-29", "s-ann", 1)])
    assert run_dag(stream_dag) == "success"
    first = emitted(config, moto_server)
    assert [(r["event_type"], r["payload"]["email"]) for r in first] == [
        ("profile_upsert", "david.wilson@example.com"),
        ("interaction", "david.wilson@example.com"),
    ]
    marks = dict(query(config, "SELECT source, watermark FROM stream_watermarks"))

    # Batch 2: s-ann fills in a form (claiming her earlier interaction), David votes again, and a
    # third session stays anonymous.
    write_forms(
        landing,
        "2022-04-30",
        "b2.csv",
        [form_row("2022-04-30T10:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    write_interactions(
        landing,
        "2022-04-30",
        "b2.csv",
        [("2022-04-30", SEED_SESSION, 2), ("2022-04-30", "s-anon", 3)],
    )
    assert run_dag(stream_dag) == "success"

    records = emitted(config, moto_server)
    interactions = of_type(records, "interaction")
    assert Counter(r["record_id"] for r in interactions).most_common(1)[0][1] == 1
    assert sorted((r["payload"]["session_id"], r["payload"]["option"]) for r in interactions) == [
        (SEED_SESSION, "Manchester Blue"),
        (SEED_SESSION, "North London White"),
        ("s-ann", "Manchester Red"),
    ]
    upserts = of_type(records, "profile_upsert")
    assert sorted(r["payload"]["email"] for r in upserts[1:]) == [
        "ann@x.org",
        "david.wilson@example.com",
    ]
    latest = {r["payload"]["email"]: r["payload"]["interactions"] for r in upserts}
    assert latest == {"david.wilson@example.com": 2, "ann@x.org": 1}

    files = query(config, "SELECT source, count(*) FROM stream_files GROUP BY ALL ORDER BY 1")
    assert files == [("elements", 1), ("form_entries", 2), ("interactions", 3)]
    later = dict(query(config, "SELECT source, watermark FROM stream_watermarks"))
    assert later["form_entries"] > marks["form_entries"]
    assert later["interactions"] > marks["interactions"]
    assert later["elements"] == marks["elements"]

    # The daily build of the same files gives the same profile ids and, for the interactions,
    # the very same records: a consumer dedups the daily run's stream against the micro-batches.
    daily = daily_build(config, ["2022-01-11", "2022-04-29", "2022-04-30"])
    daily_ids = dict(query(config, "SELECT identifier_value, profile_id FROM profile_identifiers"))
    assert {r["payload"]["email"]: r["profile_id"] for r in upserts} == {
        "david.wilson@example.com": daily_ids["david.wilson@example.com"],
        "ann@x.org": daily_ids["ann@x.org"],
    }
    assert {r["record_id"] for r in interactions} == record_ids(
        "audience_profile_interactions", daily["audience_profile_interactions"], "2022-04-30"
    )


def test_a_crash_before_the_commit_re_emits_the_same_records(
    stream_dag, config, moto_server, tmp_path, monkeypatch
):
    landing = tmp_path / "landing"
    write_seed_example(landing)

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost after delivery")

    stream_dag.get_task("process_landed_files").retries = 0
    with monkeypatch.context() as patched:
        patched.setattr(stream, "commit", crash)
        assert run_dag(stream_dag) == "failed"
    crashed = emitted(config, moto_server)
    assert len(crashed) == 2
    assert query(config, "SELECT count(*) FROM stream_files") == [(0,)]
    assert query(config, "SELECT count(*) FROM stream_watermarks") == [(0,)]

    assert run_dag(stream_dag) == "success"
    again = emitted(config, moto_server)[len(crashed) :]
    assert [r["record_id"] for r in again] == [r["record_id"] for r in crashed]
    assert query(config, "SELECT count(*) FROM stream_files") == [(3,)]

    assert run_dag(stream_dag) == "success"
    assert len(emitted(config, moto_server)) == 2 * len(crashed)


def test_a_suppressed_person_never_reaches_the_stream(stream_dag, config, moto_server, tmp_path):
    import duckdb

    from audience_profiles.privacy import hash_identifier
    from audience_profiles.warehouse import open_warehouse

    with open_warehouse(config) as wh:
        wh.run_sql("setup/tables")
    with duckdb.connect(config.warehouse.path) as con:
        con.execute(
            "INSERT INTO suppression_list (identifier_type, identifier_hash, kind, request_id, added_at) VALUES ('email', ?, 'suppress', 'R-1', now()::TIMESTAMP)",
            [hash_identifier(" Ann@X.org ")],
        )
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_forms(
        landing,
        "2022-04-29",
        "f.csv",
        [form_row("2022-04-29T10:00:00", "Ann", "ann@x.org", "s-ann")],
    )
    write_interactions(landing, "2022-04-29", "b1.csv", [("2022-04-29", "s-ann", 1)])
    assert run_dag(stream_dag) == "success"

    records = emitted(config, moto_server)
    assert {r["payload"].get("email") for r in records} == {"david.wilson@example.com"}
    assert all(r["payload"].get("session_id") != "s-ann" for r in records)
