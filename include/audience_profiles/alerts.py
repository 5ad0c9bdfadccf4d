"""Task alerts: a short Slack-compatible message to a webhook when a task retries or fails.

The webhook is an Airflow HTTP connection named in pipeline.yml (``alerts: {webhook_conn_id:
...}``) and reached through ``hooks.http.QuietHttpHook``, the http provider's ``HttpHook`` without
its logging of the URL. The connection's host holds the whole webhook URL (Slack's
``https://hooks.slack.com/services/...``), so the secret part lives in the connection or a
secrets backend, never in code or in pipeline.yml. Any receiver that accepts
Slack's ``{"text": ..., "blocks": [...]}`` works (Slack, Mattermost, Rocket.Chat ...).

An alert is a courtesy: if it cannot be sent, the reason is logged and the task carries on exactly
as it would have without it. This module is imported when DAG files are parsed (it provides the
callbacks in ``dag_defaults``), so it imports nothing heavy at module level.
"""

from __future__ import annotations

import logging
from typing import Any

from audience_profiles.errors import NotRetryable

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
    text = text.replace("```", "'''").strip()
    text = text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."
    # Slack's control characters: unescaped, "<!channel>" or "<http://x|y>" in an error (a file
    # name, a value quoted by a library) would notify a channel or render as a link.
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
    return {
        "text": f"{icon} {headline}: {error.splitlines()[0]} <{log_url}|log>",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{headline}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*DAG*\n`{ti.dag_id}`"},
                    {"type": "mrkdwn", "text": f"*Task*\n`{task}`"},
                    {"type": "mrkdwn", "text": f"*Date*\n{ds}"},
                    {"type": "mrkdwn", "text": f"*Try*\n{attempt}"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{error}```"}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the task log"},
                        "url": log_url,
                    }
                ],
            },
        ],
    }


def send(conn_id: str, message: dict[str, Any]) -> None:
    # Quiet: the provider's hook logs the URL (the secret) in three places (hooks/http.py).
    from audience_profiles.hooks.http import QuietHttpHook

    QuietHttpHook(method="POST", http_conn_id=conn_id).post_json(message, timeout=TIMEOUT_SECONDS)


def notify(context: dict[str, Any], event: str) -> None:
    """Send the alert for ``context``; log, never raise, when that is impossible."""
    try:
        from audience_profiles.config import read_alerts_conn_id

        conn_id = read_alerts_conn_id()
        if not conn_id:
            log.info("no alerts.webhook_conn_id in pipeline.yml: alert (%s) not sent", event)
            return
        message = alert_message(context, event)
        send(conn_id, message)
        log.info("alert sent through %s: %s", conn_id, message["text"])
    except Exception as exc:
        import requests

        # A connection error's message holds the webhook URL, whose path is the secret.
        reason = type(exc).__name__ if isinstance(exc, requests.RequestException) else str(exc)
        log.warning("alert (%s) not sent: %s", event, reason[:300])
