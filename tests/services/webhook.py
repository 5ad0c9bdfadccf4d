"""A webhook receiver on loopback: records every POST, answers with a status the test chooses.

Stands in for Slack's incoming webhooks in the alert tests, reached the way production reaches
Slack: through an Airflow HTTP connection whose host is the whole webhook URL.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

WEBHOOK_PATH = "/services/T0000/B0000/not-a-real-secret"


@dataclass
class WebhookReceiver:
    url: str
    status: int = 200
    requests: list[dict] = field(default_factory=list)

    def connection_json(self) -> str:
        """``AIRFLOW_CONN_*`` value of an HTTP connection to this receiver."""
        return json.dumps({"conn_type": "http", "host": self.url})


@pytest.fixture
def webhook() -> WebhookReceiver:
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "json": json.loads(body) if body else None,
                }
            )
            self.send_response(receiver.status)
            self.end_headers()
            # an error page that echoes the path, as Express's "Cannot POST /..." does
            self.wfile.write(b"ok" if receiver.status < 400 else b"no: " + self.path.encode())

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_PATH}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
