"""Alerts: a short Slack-compatible message to a webhook when a task retries or fails, and when
a daily run is late (not finished ``alerts.late_after_hours`` after its day ended).

The webhook is an Airflow HTTP connection named in pipeline.yml (``alerts: {webhook_conn_id:
...}``) and reached through ``hooks.http.QuietHttpHook``, the http provider's ``HttpHook`` without
its logging of the URL. The connection's host holds the whole webhook URL (Slack's
``https://hooks.slack.com/services/...``), so the secret part lives in the connection or a
secrets backend, never in code or in pipeline.yml. Any receiver that accepts
Slack's ``{"text": ..., "blocks": [...]}`` works (Slack, Mattermost, Rocket.Chat ...).

An alert is a courtesy: if it cannot be sent, the reason is logged and the task carries on exactly
as it would have without it. The late alert is Airflow's deadline callback (``on_late_run``, set by
``dag_defaults.late_run_deadline``): the scheduler notices the missed deadline and the triggerer
runs the callback, so it is sent for a run whose tasks hang, wait in a queue or were killed
without a callback of their own. This module is imported when DAG files are parsed (it provides the
callbacks in ``dag_defaults``), so it imports nothing heavy at module level.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from audience_profiles.errors import NotRetryable
from audience_profiles.redaction import redact

log = logging.getLogger(__name__)

ERROR_CHARS = 600  # enough for a check name or a stack's last line; Slack truncates at 3000
TIMEOUT_SECONDS = 10


def on_retry(context: dict[str, Any]) -> None:
    notify(context, "will retry")


def on_failure(context: dict[str, Any]) -> None:
    notify(context, "failed")


def error_text(error: BaseException | str | None) -> str:
    if error is None:
        return "no error recorded (killed, timed out or marked failed)"
    if isinstance(getattr(error, "__cause__", None), NotRetryable):
        error = error.__cause__  # wrapped by dag_defaults.fails_fast: the cause is the news
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    # The channel is no place for personal data: an error may quote an address (a value a
    # library could not read, a contact's URL); the task log behind the link keeps what it says.
    text = redact(text).replace("```", "'''").strip()
    text = text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."
    return escaped(text)


def escaped(text: str) -> str:
    # Slack's control characters: unescaped, "<!channel>" or "<http://x|y>" in an error (a file
    # name, a value quoted by a library) or a run id would notify a channel or render as a link.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alert_message(context: dict[str, Any], event: str) -> dict[str, Any]:
    """The Slack-compatible payload: a one-line ``text`` (notifications) and ``blocks``."""
    ti = context["ti"]
    task = ti.task_id
    if ti.map_index is not None and ti.map_index >= 0:
        task += f"[{getattr(ti, 'rendered_map_index', None) or ti.map_index}]"
    ds = context.get("ds") or "-"
    attempt = f"{ti.try_number} of {ti.max_tries + 1}"
    error = error_text(context.get("exception"))
    log_url = ti.log_url
    headline = f"{ti.dag_id} · {task} {event} for {ds} (try {attempt})"
    icon = ":red_circle:" if event == "failed" else ":warning:"
    return _message(
        f"{icon} {headline}: {error.splitlines()[0]} <{log_url}|log>",
        f"{icon} *{headline}*",
        {"DAG": f"`{ti.dag_id}`", "Task": f"`{task}`", "Date": ds, "Try": attempt},
        ("Open the task log", log_url),
        code=error,
    )


def _message(
    text: str, headline: str, fields: dict[str, str], button: tuple[str, str], code: str = ""
) -> dict[str, Any]:
    """Slack's ``{"text", "blocks"}``: the headline, the fields, a code block, a link button."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields.items()],
        },
    ]
    if code:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{code}```"}})
    label, url = button
    element = {"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}
    blocks.append({"type": "actions", "elements": [element]})
    return {"text": text, "blocks": blocks}


def send(conn_id: str, message: dict[str, Any]) -> None:
    # Quiet: the provider's hook logs the URL (the secret) in three places (hooks/http.py).
    from audience_profiles.hooks.http import QuietHttpHook

    QuietHttpHook(method="POST", http_conn_id=conn_id).post_json(message, timeout=TIMEOUT_SECONDS)


def notify(context: dict[str, Any], event: str) -> None:
    """Send the alert for ``context``; log, never raise, when that is impossible."""
    _post(event, lambda: alert_message(context, event))


def _post(event: str, message: Callable[[], dict[str, Any]]) -> None:
    try:
        from audience_profiles.config import read_alerts_conn_id

        conn_id = read_alerts_conn_id()
        if not conn_id:
            log.info("no alerts.webhook_conn_id in pipeline.yml: alert (%s) not sent", event)
            return
        body = message()
        send(conn_id, body)
        log.info("alert sent through %s: %s", conn_id, body["text"])
    except Exception as exc:
        import requests

        # A connection error's message holds the webhook URL, whose path is the secret.
        reason = type(exc).__name__ if isinstance(exc, requests.RequestException) else str(exc)
        log.warning("alert (%s) not sent: %s", event, reason[:300])


async def on_late_run(context: dict[str, Any], **_: Any) -> None:
    """The daily DAG's deadline callback (``dag_defaults.late_run_deadline``), awaited by the
    triggerer with Airflow's short context: the run (as the REST API shows it) and the deadline."""
    import asyncio

    # The connection look-up and the webhook call block: off the triggerer's event loop.
    await asyncio.to_thread(notify_late, context)


def notify_late(context: dict[str, Any]) -> None:
    """Post the late alert for the run in ``context``, unless the run was made after its deadline
    or has succeeded.

    A run made after its deadline (a backfill or a re-run of an older date, a catch-up after the
    scheduler was down past the deadline) misses it as soon as it is made: whoever made it knows
    the date is not built yet, and a backfill of a year would post 365 alerts. A run marked
    successful by hand keeps its deadline (Airflow 3.3.2 drops it only for a run that succeeds by
    itself): someone has decided the date is done.
    """
    try:
        dag_run = context["dag_run"]
        deadline = _instant(context["deadline"]["deadline_time"])
        made = _instant(dag_run.get("queued_at") or dag_run.get("run_after"))
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("late alert not sent: the deadline's context is not as expected (%r)", exc)
        return
    if dag_run.get("state") == "success":
        log.info("%s has succeeded (marked so by hand): no late alert", dag_run.get("dag_run_id"))
        return
    if made is not None and made >= deadline:
        log.info(
            "%s was made at %s, after its deadline %s (a backfill, a re-run or a catch-up): "
            "no late alert",
            dag_run.get("dag_run_id"),
            made.isoformat(),
            deadline.isoformat(),
        )
        return
    _post("late", lambda: late_message(dag_run, deadline))


def _instant(value: Any) -> dt.datetime | None:
    """A UTC datetime from the context's ISO text (or a datetime); None for None."""
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def late_message(dag_run: dict[str, Any], deadline: dt.datetime) -> dict[str, Any]:
    """The Slack-compatible payload for a late run, shaped like the task alerts'."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    dag_id = str(dag_run["dag_id"])
    run_id = str(dag_run["dag_run_id"])
    day_start = _instant(dag_run.get("logical_date") or dag_run.get("data_interval_start"))
    # the deadline's own terms (dag_defaults.late_run_deadline): the logical date, a day, hours
    after = _span((deadline - day_start - dt.timedelta(days=1)).total_seconds())
    ds = day_start.date().isoformat()
    state = escaped(str(dag_run.get("state") or "unknown"))
    base_url = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    run_url = f"{base_url}/dags/{quote(dag_id)}/runs/{quote(run_id)}"
    headline = f"{escaped(dag_id)} · {ds} is late: not finished {after} after the day ended"
    return _message(
        f":alarm_clock: {headline} (run {state}) <{run_url}|run>",
        f":alarm_clock: *{headline}*",
        {
            "DAG": f"`{escaped(dag_id)}`",
            "Date": ds,
            "Run": f"`{escaped(run_id)}` ({state})",
            "Deadline": f"{deadline.strftime('%Y-%m-%d %H:%M')} UTC",
        },
        ("Open the run", run_url),
    )


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{round(seconds / 3600, 2):g} h"
    return f"{round(seconds / 60, 1):g} min" if seconds >= 60 else f"{seconds:g} s"
