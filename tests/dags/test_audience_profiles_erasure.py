"""The erasure DAG's shape (a whole run is in tests/privacy/test_erasure_dag_run.py)."""

from __future__ import annotations

import re

import pytest
from airflow.sdk.exceptions import AirflowFailException

from audience_profiles.config import PROJECT_ROOT
from audience_profiles.dag_defaults import WAREHOUSE_POOL, Tag
from audience_profiles.pipeline import logical_ds
from tests.privacy.dags import load_dag

WAREHOUSE_TASKS = (
    "resolve_requests",
    "remove_from_warehouse",
    "pending_erasures",
    "record_erasures",
    "retention",
    "compact_warehouse",
)


@pytest.fixture(scope="module")
def dag():
    return load_dag("audience_profiles_erasure")


def test_shape_schedule_and_pools(dag):
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.tags) == {Tag.AUDIENCE_PROFILES, Tag.PRIVACY}
    assert "CronTriggerTimetable" in type(dag.timetable).__name__
    for task_id in WAREHOUSE_TASKS:
        assert dag.get_task(task_id).pool == WAREHOUSE_POOL, task_id
    # Destinations are called without holding the warehouse.
    for task_id in ("read_requests", "erase", "cleanup"):
        assert dag.get_task(task_id).pool != WAREHOUSE_POOL, task_id
    assert dag.get_task("cleanup").is_teardown
    assert dag.get_task("erase").upstream_task_ids == {"pending_erasures", "destinations"}
    # after the last steps that delete rows: the finished requests' plain identifiers go last
    assert dag.get_task("compact_warehouse").upstream_task_ids == {"record_erasures", "retention"}


def test_the_documented_trigger_gives_the_run_the_logical_date_its_tasks_need():
    # docs/operations.md, "Losing the warehouse": run the erasure DAG once, triggered by hand.
    # Airflow 3.3.2's `airflow dags trigger` without --logical-date makes a run with none, and
    # every task of this DAG fails on it at once (drilled on a real scheduler).
    with pytest.raises(AirflowFailException, match="has no logical date"):
        logical_ds({"run_id": "manual__2026-12-05T11:36:11+00:00", "ds": None})
    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    step = text[text.index("**Erasures first.**") :][:2000]
    command = re.search(r"airflow dags trigger audience_profiles_erasure[^`]*", step)
    assert command, "the step gives no command to trigger the erasure DAG"
    assert "--logical-date" in command.group(0)
