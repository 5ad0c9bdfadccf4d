"""The erasure DAG's shape (a whole run is in tests/privacy/test_erasure_dag_run.py)."""

from __future__ import annotations

import pytest

from audience_profiles.dag_defaults import WAREHOUSE_POOL, Tag
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
