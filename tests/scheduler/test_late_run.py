"""A daily run still unfinished at its deadline posts a "late" alert, on a real deployment: the
scheduler notices the missed deadline, the triggerer awaits ``alerts.on_late_run``, and the alert
reaches a webhook through an HTTP connection kept in Airflow's metadata database.

The probe DAG takes its deadline from ``dag_defaults.late_run_deadline`` (the daily DAG's, with
seconds in place of hours), so the test waits seconds, not a day. It is edited half way: Airflow
3.2.2 lost a DAG's deadlines when the DAG changed in anything else (apache/airflow#68732), which
would silence the alert after a deploy without a word.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.services.airflow_stack import AirflowStack, wait_until
from tests.support import write_config

pytestmark = pytest.mark.scheduler

DAG_ID = "late_run_probe"
CONN_ID = "late_run_alerts"
LATE_AFTER_SECONDS = 15
WORK_SECONDS = 300  # the late runs' work: failed once the alert is in
PROBE_DAG = '''"""A task that sleeps for the seconds its run's conf asks, under the daily DAG's deadline."""

import datetime as dt
import time

from airflow.sdk import dag, get_current_context, task

from audience_profiles.dag_defaults import DEFAULT_ARGS, late_run_deadline


@dag(
    dag_id="{dag_id}",
    schedule=None,
    start_date=dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
    deadline=late_run_deadline({seconds} / 3600),
    default_args={{**DEFAULT_ARGS, "retries": 0}},
    doc_md="# version {version}",
)
def late_run_probe():
    @task
    def work():
        time.sleep(get_current_context()["dag_run"].conf["seconds"])

    work()


late_run_probe()
'''


def _write_probe(stack: AirflowStack, version: int) -> None:
    text = PROBE_DAG.format(dag_id=DAG_ID, seconds=LATE_AFTER_SECONDS, version=version)
    (stack.root / "dags" / f"{DAG_ID}.py").write_text(text)


def _trigger(stack: AirflowStack, logical_date: dt.datetime, seconds: float) -> dict:
    return stack.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={
            "logical_date": logical_date.isoformat().replace("+00:00", "Z"),
            "conf": {"seconds": seconds},
        },
    )


def _run_state(stack: AirflowStack, run: dict) -> str:
    return stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}")["state"]


def _late_day_alerted(stack: AirflowStack, webhook, late_run: dict) -> tuple[dict, float]:
    """Wait for the alert of ``late_run`` (minutes of work, its deadline seconds away); then
    fail the run, which would otherwise work on. The alert and the seconds it took."""
    started = time.monotonic()
    count = len(webhook.requests)
    wait_until(lambda: len(webhook.requests) > count, 120, "a late alert", interval=1)
    waited = time.monotonic() - started
    stack.api(
        "PATCH",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{late_run['dag_run_id']}",
        json={"state": "failed"},
    )
    return webhook.requests[count]["json"], waited


def _expected_text(day: dt.datetime) -> str:
    return (
        f":alarm_clock: {DAG_ID} · {day.date().isoformat()} is late: not finished "
        f"{LATE_AFTER_SECONDS} s after the day ended (run running)"
    )


def test_a_run_unfinished_at_its_deadline_posts_one_late_alert(airflow_stack, webhook):
    stack = airflow_stack
    write_config(stack.config_path.parent, alerts={"webhook_conn_id": CONN_ID})
    stack.api(
        "POST",
        "/api/v2/connections",
        json={"connection_id": CONN_ID, "conn_type": "http", "host": webhook.url},
    )
    _write_probe(stack, version=1)
    stack.wait_for_dag(DAG_ID, timeout=180)
    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # Its day ended a moment ago: the deadline is LATE_AFTER_SECONDS away, the work 5 minutes.
    late = _trigger(stack, now - dt.timedelta(days=1), seconds=WORK_SECONDS)
    # An older date run now (a backfill, say): made after its deadline, so no alert.
    old = _trigger(stack, now - dt.timedelta(days=3), seconds=20)

    alert, waited = _late_day_alerted(stack, webhook, late)
    assert alert["text"].startswith(_expected_text(now - dt.timedelta(days=1))), alert["text"]
    assert waited < 90, waited  # sent at the deadline, long before the run would have ended
    button = next(b for b in alert["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"].startswith(f"{stack.base_url}/dags/{DAG_ID}/runs/")
    # what the UI shows of the run's deadline
    [deadline] = stack.api("GET", f"/ui/dags/{DAG_ID}/dagRuns/{late['dag_run_id']}/deadlines")[
        "deadlines"
    ]
    assert (deadline["alert_name"], deadline["missed"]) == ("late_run", True)
    # the old date's deadline was missed at once; its callback has had time to post, if it did
    wait_until(lambda: _run_state(stack, old) in ("success", "failed"), 120, "the old run ended")
    assert len(webhook.requests) == 1

    # A new version of the DAG, changed in something else than its deadline.
    _write_probe(stack, version=2)
    # now, not when the dag-processor next looks (nor 30 s after the last write, its default)
    stack.cli("dags", "reserialize", env={"AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"})
    versions = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagVersions")["dag_versions"]
    assert [v["version_number"] for v in versions] == [1, 2]
    later = dt.datetime.now(dt.UTC).replace(microsecond=0)
    late_again = _trigger(stack, later - dt.timedelta(days=1), seconds=WORK_SECONDS)
    alert, _ = _late_day_alerted(stack, webhook, late_again)
    assert alert["text"].startswith(_expected_text(later - dt.timedelta(days=1))), alert["text"]
    assert len(webhook.requests) == 2
