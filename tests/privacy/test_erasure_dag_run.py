"""A whole run of the erasure DAG through dag.test(): it erases, and its logs name no one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from audience_profiles.assets import ERASED
from tests.privacy.dags import load_dag
from tests.privacy.people import ANN, ANN_SESSION, DAVID, file_request, mentions, query
from tests.support import SEED_SESSION, asset_event_extras


def test_a_run_erases_and_logs_no_personal_data(
    airflow_db, built, tmp_path, monkeypatch, capfd, caplog
):
    monkeypatch.setenv("AUDIENCE_PROFILES_CONFIG", built.source_file)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)
    file_request(tmp_path / "landing", "r-2", "session_id", ANN_SESSION, kind="suppress")

    run = load_dag("audience_profiles_erasure").test(
        logical_date=dt.datetime(2022, 4, 30, 6, tzinfo=dt.UTC)
    )

    assert "success" in str(run.state)
    assert mentions(built, DAVID) == {}
    # nor in the bytes the deleted rows freed: compact_warehouse copied the file
    assert DAVID.encode() not in Path(built.warehouse.path).read_bytes()
    assert {t for t in mentions(built, ANN) if not t.startswith("restricted_")} == set()
    assert query(built, "SELECT request_id, status FROM erasure_requests ORDER BY 1") == [
        ("r-1", "done"),
        ("r-2", "done"),
    ]
    assert not list((tmp_path / "work" / "erasure").glob("*/*"))  # staged requests removed
    # Downstream DAGs holding copies are told, by an event that names no one.
    (erased,) = asset_event_extras(ERASED, run.run_id)
    assert erased["erased_by"] == run.run_id and erased["requests"] == 2
    assert erased["rows_removed"]["audience_profiles"] >= 1
    assert erased["rows_removed"]["run exports"] >= 1
    # the dates whose kept exports held them: the seed's date among those `built` built
    built_dates = sorted(p.name for p in (tmp_path / "work" / "runs").glob("*-*-*"))
    assert "2022-04-29" in erased["exports_rewritten"]
    assert set(erased["exports_rewritten"]) <= set(built_dates)
    for personal in (DAVID, SEED_SESSION, ANN, ANN_SESSION, "sso-ann"):
        assert personal.lower() not in json.dumps(erased).lower(), personal

    # A run with nothing to take out skips the announcement: no event wakes consumers hourly.
    again = load_dag("audience_profiles_erasure").test(
        logical_date=dt.datetime(2022, 4, 30, 7, tzinfo=dt.UTC)
    )
    states = {ti.task_id: str(ti.state) for ti in again.get_task_instances()}
    assert "success" in str(again.state) and "skipped" in states["announce_erasure"]
    assert "skipped" in states["compact_warehouse"]  # no row freed: no copy
    assert asset_event_extras(ERASED, again.run_id) == []
    logs = capfd.readouterr()
    text = logs.out + logs.err + caplog.text
    assert "request r-1 (delete): 1 profile(s)" in text  # the capture sees the task logs
    for personal in (DAVID, SEED_SESSION, ANN, ANN_SESSION, "sso-ann"):
        assert personal.lower() not in text.lower(), personal


def test_with_no_destination_enabled_requests_still_finish(
    airflow_db, built, tmp_path, monkeypatch
):
    """erase maps over no destination and is skipped; record_erasures must run all the same."""
    from tests.support import write_config

    config = write_config(tmp_path, destinations=[])  # the warehouse only
    monkeypatch.setenv("AUDIENCE_PROFILES_CONFIG", config.source_file)
    file_request(tmp_path / "landing", "r-1", "email", DAVID)

    run = load_dag("audience_profiles_erasure").test(
        logical_date=dt.datetime(2022, 4, 30, 6, tzinfo=dt.UTC)
    )

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert "success" in states["record_erasures"]
    assert query(config, "SELECT request_id, status FROM erasure_requests") == [("r-1", "done")]
    assert query(config, "SELECT count(*) FROM erasure_subjects") == [(0,)]
