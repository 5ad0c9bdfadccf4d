"""The daily DAG's operational wiring: ordering across dates, the report's place, the pool."""

from __future__ import annotations

import inspect
import re

import pytest

from audience_profiles.config import PROJECT_ROOT
from audience_profiles.dag_defaults import WAREHOUSE_POOL
from tests.support import load_daily_dag


@pytest.fixture(scope="module")
def daily():
    return load_daily_dag()


def test_partition_writers_wait_for_the_previous_date(daily):
    # Date D's build reads every partition up to D: in a backfill with parallel runs, D must not
    # load or enrich its partition before D-1 has.
    waiting = {t.task_id for t in daily.tasks if t.depends_on_past}
    assert waiting == {"validate", "enrich"}
    # validate replaces the element catalogue: D-1's enrich must have read it first (with D's
    # validate in between, D-1's interactions took D's titles, as no sequential run gives).
    assert {t.task_id for t in daily.tasks if t.wait_for_downstream} == {"validate"}


def test_the_report_runs_last_whatever_happened_and_leaves_the_run_state_alone(daily):
    report = daily.get_task("report")
    assert report.is_teardown  # left out of the run's state: a failed run stays failed
    assert report.upstream_task_ids == {"cleanup"}
    assert not any(daily.get_task(t).is_setup for t in report.upstream_task_ids)  # all done
    assert report.pool == WAREHOUSE_POOL
    assert not report.downstream_task_ids


def test_restate_catalogue_is_a_param_off_by_default_that_validate_hands_on(daily, monkeypatch):
    # a scheduled run keeps each date's titles; a backfill's or trigger's config turns it on
    assert daily.params["restate_catalogue"] == ""
    import audience_profiles.pipeline as pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "validate", lambda *a, **kw: seen.update(kw) or {})
    validate = inspect.unwrap(daily.get_task("validate").python_callable)
    monkeypatch.setitem(validate.__globals__, "_window", lambda: None)  # (no task context)
    validate([], params={"restate_catalogue": "2026-12-04 typo"})
    assert seen == {"restate_catalogue": "2026-12-04 typo"}


def test_the_documented_redelivery_clears_the_list_of_destinations_too(daily):
    # docs/operations.md, "Re-running a date": deliver a date again, "a destination was down, or a
    # new one was added". `deliver` is mapped over the `destinations` task's list of enabled
    # destinations; cleared without it, `deliver` expands to that run's old list again, and a
    # destination added since gets nothing (drilled on a real scheduler).
    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    paragraph = text[text.index("To deliver a date again without rebuilding it") :]
    command = re.search(r"airflow tasks clear audience_profiles -t (\S+) -d", paragraph)
    assert command, "the re-delivery command is not in docs/operations.md"
    # the CLI's own selection: -t is matched as part of a task id, -d adds the downstream tasks
    cleared = daily.partial_subset(task_ids=command.group(1), include_downstream=True)
    assert {"destinations", "deliver", "cleanup", "report"} <= set(cleared.task_ids)
    assert not {"validate", "resolve_identities", "check_quality"} & set(cleared.task_ids)


def test_the_report_waits_for_tasks_still_retrying_beside_one_that_failed(daily):
    # A failed task marks what follows it upstream_failed at once, while the tasks beside it (the
    # other map indexes of `extract`, `destinations` beside `publish`) may still be retrying. The
    # teardowns, which wait only for their direct upstream tasks, then ran: on a real scheduler
    # the report of a run whose extracts of interactions and form_entries both failed named only
    # the first (`extract[interactions] failed`), the second failing four seconds after the report.
    cleanup = daily.get_task("cleanup")
    waited_for = cleanup.upstream_task_ids
    for task in daily.tasks:
        if task.is_teardown:
            continue
        for upstream_id in task.upstream_task_ids:
            upstream = daily.get_task(upstream_id)
            beside_others = len(task.upstream_task_ids) > 1
            if beside_others or type(upstream).__name__ == "MappedOperator":
                assert upstream_id in waited_for, (task.task_id, upstream_id)
