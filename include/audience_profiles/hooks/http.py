"""``HttpHook`` without the warning that names the URL.

The http provider's ``run_and_check`` logs a connection error's text before re-raising it, and
that text holds the request's URL. For the alert webhook the URL's path is the secret (Slack's
``/services/T.../B.../<token>``); for Dotdigital's v3 contact calls it holds a contact's address.
Callers here log failures themselves, without the URL.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.http.hooks.http import HttpHook


class QuietHttpHook(HttpHook):
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
            self.check_response(response)  # raises without the URL: "<status>:<reason>"
        return response
