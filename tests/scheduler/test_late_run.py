"""A daily run still unfinished at its deadline posts a "late" alert, on a real deployment: the
scheduler notices the missed deadline, the triggerer awaits ``alerts.on_late_run``, and the alert
reaches a webhook through an HTTP connection kept in Airflow's metadata database.

The probe DAG takes its deadline from ``dag_defaults.late_run_deadline`` (the daily DAG's, with
seconds in place of hours), so the test waits seconds, not a day.
"""

from __future__ import annotations

import datetime as dt
import textwrap
import time

import pytest

from tests.services.airflow_stack import AirflowStack, wait_until
from tests.support import write_config

pytestmark = pytest.mark.scheduler

DAG_ID = "late_run_probe"
CONN_ID = "late_run_alerts"
LATE_AFTER_SECONDS = 15
PROBE_DAG = f'''
"""A task that sleeps for the seconds its run's conf asks, under the daily DAG's deadline."""

import datetime as dt
import time

from airflow.sdk import dag, get_current_context, task

from audience_profiles.dag_defaults import DEFAULT_ARGS, late_run_deadline


@dag(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
    deadline=late_run_deadline({LATE_AFTER_SECONDS} / 3600),
    default_args={{**DEFAULT_ARGS, "retries": 0}},
)
def late_run_probe():
    @task
    def work():
        time.sleep(get_current_context()["dag_run"].conf["seconds"])

    work()


late_run_probe()
'''


def _trigger(stack: AirflowStack, logical_date: dt.datetime, seconds: float) -> dict:
    return stack.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={
            "logical_date": logical_date.isoformat().replace("+00:00", "Z"),
            "conf": {"seconds": seconds},
        },
    )


def test_a_run_unfinished_at_its_deadline_posts_one_late_alert(airflow_stack, webhook):
    stack = airflow_stack
    write_config(stack.config_path.parent, alerts={"webhook_conn_id": CONN_ID})
    stack.api(
        "POST",
        "/api/v2/connections",
        json={"connection_id": CONN_ID, "conn_type": "http", "host": webhook.url},
    )
    (stack.root / "dags" / f"{DAG_ID}.py").write_text(textwrap.dedent(PROBE_DAG))
    stack.wait_for_dag(DAG_ID, timeout=180)
    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # Its day ended a moment ago: the deadline is LATE_AFTER_SECONDS away, the work a minute.
    late = _trigger(stack, now - dt.timedelta(days=1), seconds=90)
    # An older date run now (a backfill, say): made after its deadline, so no alert.
    old = _trigger(stack, now - dt.timedelta(days=3), seconds=20)

    started = time.monotonic()
    wait_until(lambda: webhook.requests, 120, "a late alert at the webhook", interval=1)
    waited = time.monotonic() - started
    # the old run's deadline was missed at once; give its callback time to post, if it did
    wait_until(
        lambda: (
            stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{old['dag_run_id']}")["state"]
            in ("success", "failed")
        ),
        120,
        "the old date's run finished",
        interval=1,
    )
    time.sleep(5)
    stack.api(
        "PATCH",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{late['dag_run_id']}",
        json={"state": "failed"},
    )

    [alert] = [r["json"] for r in webhook.requests]
    late_day = (now - dt.timedelta(days=1)).date().isoformat()
    assert alert["text"].startswith(
        f":alarm_clock: {DAG_ID} · {late_day} is late: not finished "
        f"{LATE_AFTER_SECONDS} s after the day ended (run running)"
    ), alert["text"]
    button = next(b for b in alert["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"].startswith(f"{stack.base_url}/dags/{DAG_ID}/runs/")
    assert waited < 110, waited  # sent at the deadline, not when the run ended
