"""Retry and failure alerts reach a Slack-compatible webhook over HTTP; a broken webhook never
fails a task. DAGs run in-process with dag.test(); the webhook is a real HTTP server on loopback,
reached through an Airflow HTTP connection, as Slack is in production."""

from __future__ import annotations

import datetime as dt
import socket
from types import SimpleNamespace

import pytest
from airflow.sdk import dag, task

from audience_profiles import alerts
from audience_profiles.config import CONFIG_ENV, ConfigError
from audience_profiles.dag_defaults import DEFAULT_ARGS, fails_fast
from audience_profiles.pipeline import DataQualityError
from tests.services.webhook import WEBHOOK_PATH
from tests.support import load_daily_dag, register_dag, write_config

ALERT_CONN = "alerts_test"
DAY = dt.datetime(2022, 4, 29, tzinfo=dt.UTC)
CHECK_ERROR = "data quality checks failed, nothing delivered: a check (3 row(s))"


@pytest.fixture
def alerting(tmp_path, webhook, monkeypatch, airflow_db):
    """pipeline.yml names the webhook connection; the connection points at the receiver."""
    config = write_config(tmp_path, alerts={"webhook_conn_id": ALERT_CONN})
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    monkeypatch.setenv(f"AIRFLOW_CONN_{ALERT_CONN.upper()}", webhook.connection_json())
    return webhook


def probe_dag(failures: int, error: Exception | None = None, wrap=lambda f: f):
    """A one-task DAG with the project's defaults (one quick retry) that fails ``failures`` times
    (with ``error``: a failed check by default); ``wrap`` goes under ``@task``."""
    attempts = []
    error = error or DataQualityError(CHECK_ERROR)

    @dag(
        dag_id="alert_probe",
        schedule=None,
        start_date=dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
        default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": dt.timedelta(0)},
    )
    def alert_probe():
        @task
        @wrap
        def audit():
            attempts.append(1)
            if len(attempts) <= failures:
                raise error

        audit()

    probe = alert_probe()
    register_dag(probe)
    return probe


def fields(message: dict) -> dict[str, str]:
    section = next(b for b in message["blocks"] if "fields" in b)
    return dict(f["text"].split("\n", 1) for f in section["fields"])


def test_a_retry_and_the_final_failure_each_post_an_alert(alerting):
    run = probe_dag(failures=2).test(logical_date=DAY)

    assert str(run.state) == "failed"
    assert [r["path"] for r in alerting.requests] == [WEBHOOK_PATH, WEBHOOK_PATH]
    assert {r["content_type"] for r in alerting.requests} == {"application/json"}
    retry, failure = (r["json"] for r in alerting.requests)
    assert fields(retry) == {
        "*DAG*": "`alert_probe`",
        "*Task*": "`audit`",
        "*Date*": "2022-04-29",
        "*Try*": "1 of 2",
    }
    assert "audit will retry for 2022-04-29" in retry["text"]
    assert fields(failure)["*Try*"] == "2 of 2"
    assert "audit failed for 2022-04-29" in failure["text"]
    for message in (retry, failure):
        assert f"DataQualityError: {CHECK_ERROR}" in message["text"]
        assert any(CHECK_ERROR in b.get("text", {}).get("text", "") for b in message["blocks"])
        button = next(b for b in message["blocks"] if b["type"] == "actions")["elements"][0]
        assert "/dags/alert_probe/runs/" in button["url"]
        assert "/tasks/audit" in button["url"]


@pytest.mark.parametrize(
    "error", [DataQualityError(CHECK_ERROR), ConfigError("segments.yml: fans: unknown key")]
)
def test_what_a_retry_would_repeat_fails_at_once_and_the_alert_names_it(alerting, error):
    run = probe_dag(failures=2, error=error, wrap=fails_fast).test(logical_date=DAY)

    assert str(run.state) == "failed"
    [failure] = [r["json"] for r in alerting.requests]  # no retry, so no retry alert
    assert fields(failure)["*Try*"] == "1 of 2"
    assert f"{type(error).__name__}: {error}" in failure["text"]


def test_a_mistake_in_pipeline_yml_is_alerted_too(alerting):
    # The alert read the whole file to find its webhook and failed on the very mistake that
    # failed the task: "alert (failed) not sent", and nobody was told.
    import yaml

    from audience_profiles.config import config_path

    path = config_path()
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "retention": {"interaction_days": 400}}))

    def reading_the_config(function):
        def audit():  # as every task does first
            from audience_profiles.config import load_config

            load_config()
            function()

        return fails_fast(audit)

    probe = probe_dag(failures=0, wrap=reading_the_config)
    assert str(probe.test(logical_date=DAY).state) == "failed"
    [failure] = [r["json"] for r in alerting.requests]
    assert "retention.interaction_days: unknown key" in failure["text"]


def test_fails_fast_keeps_the_retries_of_any_other_error(alerting):
    run = probe_dag(failures=1, error=OSError("landing unreachable"), wrap=fails_fast).test(
        logical_date=DAY
    )

    assert str(run.state) == "success"
    [retry] = [r["json"] for r in alerting.requests]
    assert "OSError: landing unreachable" in retry["text"]


@pytest.mark.parametrize("broken", ["answers 500", "unreachable"])
def test_a_broken_webhook_never_fails_the_task(alerting, monkeypatch, broken):
    if broken == "answers 500":
        alerting.status = 500
    else:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        url = f"http://127.0.0.1:{closed}{WEBHOOK_PATH}"
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{ALERT_CONN.upper()}", f'{{"conn_type": "http", "host": "{url}"}}'
        )

    run = probe_dag(failures=1).test(logical_date=DAY)

    assert str(run.state) == "success"  # failed once, alert not delivered, retried, succeeded
    assert len(alerting.requests) == (1 if broken == "answers 500" else 0)


@pytest.mark.parametrize("broken", ["unreachable", "answers 404 with its path"])
def test_a_broken_webhook_s_url_is_never_in_the_log(
    tmp_path, webhook, monkeypatch, caplog, capfd, broken
):
    """The webhook URL's path is its secret. The http provider's own hook logs the URL before
    sending (DEBUG), a connection error's text (which holds it) and an error response's body
    (which may echo it); the alert's hook must do none of these, at any log level."""
    if broken == "unreachable":
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        url, expected = f"http://127.0.0.1:{closed}{WEBHOOK_PATH}", "ConnectionError"
    else:
        webhook.status = 404
        url, expected = webhook.url, "404:Not Found"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{ALERT_CONN.upper()}", f'{{"conn_type": "http", "host": "{url}"}}'
    )
    monkeypatch.setenv(
        CONFIG_ENV, write_config(tmp_path, alerts={"webhook_conn_id": ALERT_CONN}).source_file
    )
    ti = SimpleNamespace(
        dag_id="d", task_id="t", map_index=-1, try_number=1, max_tries=3, log_url="http://x/log"
    )
    caplog.set_level("DEBUG")
    # urllib3 itself logs every request line at DEBUG, whoever sends (docs/operations.md)
    caplog.set_level("INFO", logger="urllib3")

    alerts.on_failure({"ti": ti, "ds": "2022-04-29", "exception": ValueError("boom")})

    logged = caplog.text + "".join(capfd.readouterr())
    assert f"alert (failed) not sent: {expected}" in logged
    assert WEBHOOK_PATH not in logged and WEBHOOK_PATH.rsplit("/", 1)[-1] not in logged


def test_without_a_webhook_nothing_is_sent_and_nothing_breaks(tmp_path, webhook, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, write_config(tmp_path).source_file)
    ti = SimpleNamespace(
        dag_id="d", task_id="t", map_index=-1, try_number=1, max_tries=3, log_url="http://x/log"
    )
    alerts.on_failure({"ti": ti, "ds": "2022-04-29", "exception": ValueError("boom")})
    assert webhook.requests == []


def test_a_mapped_task_is_named_by_its_map_index_template():
    ti = SimpleNamespace(
        dag_id="audience_profiles",
        task_id="deliver",
        map_index=0,
        rendered_map_index="local_drop",
        try_number=2,
        max_tries=3,
        log_url="http://127.0.0.1:8080/dags/audience_profiles/runs/r/tasks/deliver/mapped/0",
    )
    message = alerts.alert_message({"ti": ti, "ds": "2022-04-29", "exception": None}, "failed")
    assert fields(message)["*Task*"] == "`deliver[local_drop]`"
    assert fields(message)["*Try*"] == "2 of 4"
    assert "no error recorded" in message["text"]


def test_every_task_of_the_daily_dag_alerts_on_retry_and_failure():
    daily = load_daily_dag()
    for t in daily.tasks:
        for callbacks, alert in (
            (t.on_retry_callback, alerts.on_retry),
            (t.on_failure_callback, alerts.on_failure),
        ):
            assert alert in (callbacks if isinstance(callbacks, list) else [callbacks]), t.task_id


def test_an_error_cannot_mention_a_channel_or_forge_a_link():
    text = alerts.error_text(ValueError("<!channel> see <http://evil.example|the fix> & more"))
    assert "<" not in text and ">" not in text
    assert text == "ValueError: &lt;!channel&gt; see &lt;http://evil.example|the fix&gt; &amp; more"


def test_an_error_quoting_an_address_is_alerted_without_it():
    """The channel is no place for personal data; the task log behind the link keeps it all."""
    text = alerts.error_text(ValueError("Could not convert 'David.Wilson@example.com' to INT"))
    assert text == "ValueError: Could not convert '&lt;email&gt;' to INT"


def late_context(
    queued_at: str | None, state: str = "running", run_id: str = "scheduled__2022-04-29"
) -> dict:
    """The short context Airflow gives a deadline callback (models/deadline.py): the run as the
    REST API shows it (JSON mode) and the deadline."""
    return {
        "dag_run": {
            "dag_run_id": run_id,
            "dag_id": "audience_profiles",
            "logical_date": "2022-04-29T00:00:00Z",
            "data_interval_start": "2022-04-29T00:00:00Z",
            "data_interval_end": "2022-04-30T00:00:00Z",
            "run_after": "2022-04-30T00:00:00Z",
            "queued_at": queued_at,
            "run_type": "scheduled",
            "state": state,
        },
        "deadline": {"id": "0199", "deadline_time": dt.datetime(2022, 4, 30, 8, tzinfo=dt.UTC)},
    }


def test_a_run_not_finished_at_its_deadline_posts_a_late_alert(alerting, monkeypatch):
    import asyncio

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")

    # awaited as the triggerer awaits it (triggers/callback.py)
    asyncio.run(alerts.on_late_run(context=late_context("2022-04-30T00:00:04Z", state="failed")))

    [request] = alerting.requests
    message = request["json"]
    assert message["text"].startswith(
        ":alarm_clock: audience_profiles · 2022-04-29 is late: "
        "not finished 8 h after the day ended (run failed)"
    )
    assert fields(message) == {
        "*DAG*": "`audience_profiles`",
        "*Date*": "2022-04-29",
        "*Run*": "`scheduled__2022-04-29` (failed)",
        "*Deadline*": "2022-04-30 08:00 UTC",
    }
    [button] = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    assert button["url"] == (
        "https://airflow.example.com/dags/audience_profiles/runs/scheduled__2022-04-29"
    )


def test_a_run_made_after_its_deadline_posts_no_late_alert(alerting, caplog):
    # a backfill, a re-run or a catch-up: its deadline had passed before it was queued
    caplog.set_level("INFO")
    alerts.notify_late(late_context("2026-12-02T16:00:00Z", run_id="backfill__2022-04-29"))
    assert alerting.requests == []
    assert "backfill__2022-04-29 was made at 2026-12-02T16:00:00+00:00" in caplog.text
    assert "no late alert" in caplog.text


def test_a_late_alert_cannot_mention_a_channel_and_an_odd_context_is_logged(alerting, caplog):
    alerts.notify_late(late_context("2022-04-30T00:00:04Z", run_id="manual <!channel>"))
    [request] = alerting.requests
    assert "<!channel>" not in str(request["json"])
    assert fields(request["json"])["*Run*"] == "`manual &lt;!channel&gt;` (running)"

    alerts.notify_late({"deadline": {}})  # not what Airflow sends: logged, nothing raised
    assert len(alerting.requests) == 1
    assert "late alert not sent: the deadline's context is not as expected" in caplog.text


@pytest.mark.parametrize(
    ("queued_at", "state", "alerted"),
    [
        ("2022-04-30T08:00:00Z", "running", False),  # made at its deadline: made after it
        ("2022-04-30T07:59:59Z", "queued", True),
        (None, "running", True),  # no queued_at: made when its day ended (run_after)
        ("2022-04-30T00:00:04Z", "success", False),  # marked successful by hand, deadline kept
    ],
)
def test_which_runs_at_their_deadline_post_a_late_alert(alerting, queued_at, state, alerted):
    alerts.notify_late(late_context(queued_at, state=state))
    assert len(alerting.requests) == (1 if alerted else 0)
