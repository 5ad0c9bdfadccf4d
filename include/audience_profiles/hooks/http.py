"""``HttpHook`` that never writes the request's URL to the log.

The http provider's hook logs it in three places: ``run`` at DEBUG before sending, and
``run_and_check`` / ``check_response`` a connection error's text (which holds the URL) and an
error response's body (which may echo it: "Cannot POST /services/..."). For the alert webhook the
URL's path is the secret (Slack's ``/services/T.../B.../<token>``); for Dotdigital's v3 contact
calls it holds a contact's address. Callers here log failures themselves, without the URL.
"""

from __future__ import annotations

from typing import Any

import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.http.hooks.http import HttpHook


class QuietHttpHook(HttpHook):
    def post_json(self, body: Any, *, timeout: float) -> requests.Response:
        """POST ``body`` as JSON to the connection's URL (``run`` without its DEBUG line)."""
        session = self.get_conn()
        prepared = session.prepare_request(
            requests.Request(
                "POST",
                self.url_from_endpoint(None),
                json=body,
                headers={"Content-Type": "application/json"},
            )
        )
        return self.run_and_check(session, prepared, {**self.merged_extra, "timeout": timeout})

    def run_and_check(self, session, prepped_request, extra_options: dict[str, Any]):
        settings = session.merge_environment_settings(
            prepped_request.url,
            proxies=session.proxies,
            stream=session.stream,
            verify=session.verify,
            cert=session.cert,
        )
        response = session.send(
            prepped_request,
            timeout=extra_options.get("timeout"),
            allow_redirects=extra_options.get("allow_redirects", True),
            **settings,
        )
        if extra_options.get("check_response", True):
            self.check_response(response)
        return response

    def check_response(self, response: requests.Response) -> None:
        """Raise ``<status>:<reason>`` for a 4xx or 5xx, without logging the body."""
        if not response.ok:
            raise AirflowException(f"{response.status_code}:{response.reason}")
