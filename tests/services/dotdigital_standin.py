"""A stand-in for Dotdigital's API on loopback, for tests that drive the real client over HTTP.

It follows the published v2/v3 contract for the calls the destination makes (see the paths in
include/audience_profiles/hooks/dotdigital.py): basic auth (401 otherwise); address books, data
fields; multipart CSV imports that need ``filename=`` (400 "file must be valid" without it) and
answer an import id (GUID) whose status goes NotFinished -> Finished; import reports and per-contact
faults (invalid address, suppressed contact); removal from address books; suppressed contacts;
consent records through the v3 contact PATCH.

Fault modes a test switches on: ``rate_limit_for(seconds)`` (from the next call on, every call
429s with ``x-ratelimit-limit`` / ``x-ratelimit-reset`` for that long), ``watchdog = True`` (the next imports
end RejectedByWatchdog), ``fail_next(n)`` (5xx), ``fault_emails`` (extra per-contact faults),
``refuse(call)`` (the next matching call answers an error quoting the contact it carries, as an
answer naming the offending row or contact does).
Tests read what landed with ``members(book_name)``, ``contact(email)`` and ``calls()``.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import email.parser
import email.policy
import io
import itertools
import json
import math
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DOTDIGITAL_CONN_ID = "dotdigital_test"
API_USER = "apiuser-standin@apiconnector.com"
API_PASSWORD = "stand-in-password"
DEFAULT_FIELDS = ("FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE")
RESERVED_COLUMNS = {"email", "optintype", "emailtype"}
EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[a-z]{2,}$", re.IGNORECASE)
FAULT_FOR_SUPPRESSION = {"Unsubscribed": "Unsubscribed", "HardBounced": "Hard Bounced"}
REPORT_KEYS = {
    "Invalid Entries": "invalidEntries",
    "Globally Suppressed": "globallySuppressed",
    "Unsubscribed": "unsubscribed",
    "Hard Bounced": "hardBounced",
    "Duplicate": "duplicateEmails",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


class DotdigitalStandIn:
    """The account's data and fault switches; one instance per test session, reset per test."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.address_books: dict[int, dict] = {}
            self.contacts: dict[int, dict] = {}
            self.contacts_by_email: dict[str, dict] = {}  # an import looks up every row
            self.data_fields = {
                n: {"name": n, "type": "String", "visibility": "Private", "defaultValue": None}
                for n in DEFAULT_FIELDS
            }
            self.imports: dict[str, dict] = {}
            self.suppressed: list[dict] = []
            self.requests: list[tuple[str, str, int, float]] = []  # method, path, status, time
            self.ids = itertools.count(1001)
            self.rate_limit_until = 0.0
            self.storm_seconds: float | None = None
            self.rate_limited_at: list[float] = []
            self.watchdog = False
            self.failures_left = 0
            self.polls_before_finish = 1
            self.fault_emails: dict[str, str] = {}
            self.refusals: list[tuple[str, int]] = []

    # -- switches and views for tests ---------------------------------------------------------

    def rate_limit_for(self, seconds: float) -> None:
        """429 every call for ``seconds`` from the next call on (then see ``rate_limit_until``)."""
        self.storm_seconds = seconds

    def fail_next(self, count: int) -> None:
        self.failures_left = count

    def refuse(self, call: str, status: int = 400) -> None:
        """The next call matching ``call`` (a regex over "METHOD /path") answers ``status`` with a
        message quoting the contact it carries, whole: an import's first row (every column; for
        the import's status, report or faults too), the contact of a v3 call, the first contact of an address-book removal (its id, address and
        data fields, as the account holds them)."""
        self.refusals.append((call, status))

    def suppress(self, address: str, reason: str = "Unsubscribed", when: dt.datetime | None = None):
        with self.lock:
            contact = self._upsert_contact(address)
            contact["status"] = reason
            when = when or dt.datetime.now(dt.UTC).replace(tzinfo=None)
            self.suppressed.append({"contact": contact, "reason": reason, "date": when})

    def book(self, name: str) -> dict | None:
        return next((b for b in self.address_books.values() if b["name"] == name), None)

    def members(self, book_name: str) -> set[str]:
        book = self.book(book_name)
        return {self.contacts[c]["email"] for c in book["members"]} if book else set()

    def contact(self, address: str) -> dict | None:
        return self.contacts_by_email.get(address.lower())

    def calls(self, method: str | None = None) -> list[tuple[str, str, int, float]]:
        return [r for r in self.requests if method is None or r[0] == method]

    # -- request handling ---------------------------------------------------------------------

    def handle(self, method: str, target: str, headers, body: bytes) -> tuple[int, dict, object]:
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self.lock:
            try:
                self._authorise(headers)
                self._throttle()
                self._refuse(f"{method} {path}", headers, body)
                status, payload = self._route(method, path, query, headers, body)
                extra = {}
            except ApiError as err:
                status, payload, extra = err.status, {"message": err.message}, err.headers
            self.requests.append((method, path, status, time.time()))
        return status, extra, payload

    def _authorise(self, headers) -> None:
        expected = base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            raise ApiError(401, "Authorization has been denied for this request.")

    def _throttle(self) -> None:
        now = time.time()
        if self.storm_seconds is not None:
            self.rate_limit_until, self.storm_seconds = now + self.storm_seconds, None
        if now < self.rate_limit_until:
            self.rate_limited_at.append(now)
            reset = math.ceil(self.rate_limit_until)
            raise ApiError(
                429,
                "Too many requests",
                {
                    "x-ratelimit-limit": "2000",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(reset),
                },
            )
        if self.failures_left:
            self.failures_left -= 1
            raise ApiError(503, "Service unavailable")

    def _refuse(self, call: str, headers, body: bytes) -> None:
        for i, (pattern, status) in enumerate(self.refusals):
            if re.fullmatch(pattern, call):
                del self.refusals[i]
                raise ApiError(status, self._quoting(call, headers, body))

    def _quoting(self, call: str, headers, body: bytes) -> str:
        if call.endswith("/contacts/import"):
            row = next(csv.DictReader(io.StringIO(self._upload(headers, body) or "")), {})
            return "Invalid row 1: " + "; ".join(f"{k}={v}" for k, v in row.items())
        if m := re.fullmatch(r"GET /v2/contacts/import/([0-9a-f-]{36}).*", call):
            text = (self.imports.get(m[1]) or {}).get("text", "")
            row = next(csv.DictReader(io.StringIO(text)), {})
            return "Import row 1 unreadable: " + "; ".join(f"{k}={v}" for k, v in row.items())
        if m := re.fullmatch(r"PATCH /contacts/v3/email/(.+)", call):
            contact = self.contact(m[1]) or {"email": m[1], "dataFields": {}}
            return f"contact {contact['email']} {contact['dataFields']} cannot take consent records"
        if call.endswith("/contacts/delete"):
            contact = self.contacts.get((json.loads(body) or [None])[0]) or {}
            return (
                f"contact {contact.get('id')} ({contact.get('email')}, "
                f"{contact.get('dataFields')}) cannot be removed"
            )
        return f"refused {call}"

    def _route(self, method, path, query, headers, body):
        select = int(query.get("select", ["1000"])[0])
        skip = int(query.get("skip", ["0"])[0])
        page = slice(skip, skip + min(select, 1000))
        call = f"{method} {path}"
        if call == "GET /v2/address-books":
            return 200, [self._book_json(b) for b in self.address_books.values()][page]
        if call == "POST /v2/address-books":
            return 200, self._create_book(json.loads(body))
        if m := re.fullmatch(r"GET /v2/address-books/(\d+)/contacts", call):
            members = sorted(self._book(int(m[1]))["members"])
            return 200, [self._contact_json(self.contacts[c]) for c in members][page]
        if m := re.fullmatch(r"POST /v2/address-books/(\d+)/contacts/import", call):
            return 201, self._start_import(self._book(int(m[1])), headers, body)
        if m := re.fullmatch(r"POST /v2/address-books/(\d+)/contacts/delete", call):
            self._book(int(m[1]))["members"].difference_update(json.loads(body))
            return 204, None
        if m := re.fullmatch(r"DELETE /v2/address-books/(\d+)/contacts/(\d+)", call):
            self._book(int(m[1]))["members"].discard(int(m[2]))
            return 204, None
        if m := re.fullmatch(
            r"GET /v2/contacts/import/([0-9a-f-]{36})(/report|/report-faults)?", call
        ):
            return 200, self._import_view(m[1], m[2])
        if m := re.fullmatch(r"GET /v2/contacts/suppressed-since/([0-9T:.\-]+)Z?", call):
            since = dt.datetime.fromisoformat(m[1])
            rows = [
                {
                    "suppressedContact": self._contact_json(s["contact"]),
                    "dateRemoved": s["date"].isoformat(timespec="seconds") + "Z",
                    "reason": s["reason"],
                }
                for s in self.suppressed
                if s["date"] >= since
            ]
            return 200, rows[page]
        if call == "GET /v2/data-fields":
            return 200, list(self.data_fields.values())
        if call == "POST /v2/data-fields":
            return 200, self._create_field(json.loads(body))
        if m := re.fullmatch(r"PATCH /contacts/v3/email/(.+)", call):
            return 200, self._patch_contact(m[1], json.loads(body))
        raise ApiError(404, f"No HTTP resource was found that matches {call}")

    # -- resources ----------------------------------------------------------------------------

    def _book(self, book_id: int) -> dict:
        if book_id not in self.address_books:
            raise ApiError(404, "ERROR_ADDRESSBOOK_NOT_FOUND")
        return self.address_books[book_id]

    @staticmethod
    def _book_json(book: dict) -> dict:
        return {k: book[k] for k in ("id", "name", "visibility")} | {
            "contacts": len(book["members"])
        }

    def _create_book(self, body: dict) -> dict:
        name = (body.get("name") or "").strip()
        if not name:
            raise ApiError(400, "ERROR_ADDRESSBOOK_NAME_REQUIRED")
        if self.book(name):
            raise ApiError(400, "ERROR_ADDRESSBOOK_DUPLICATE")
        book = {
            "id": next(self.ids),
            "name": name,
            "visibility": body.get("visibility", "Private"),
            "members": set(),
        }
        self.address_books[book["id"]] = book
        return self._book_json(book)

    def _create_field(self, body: dict) -> dict:
        name = body.get("name", "")
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,19}", name):
            raise ApiError(400, "ERROR_DATAFIELD_NAME_INVALID")
        if name in self.data_fields:
            raise ApiError(400, "ERROR_NON_UNIQUE_DATAFIELD")
        if body.get("type") not in ("String", "Numeric", "Date", "Boolean"):
            raise ApiError(400, "ERROR_DATAFIELD_TYPE_INVALID")
        field = {k: body.get(k) for k in ("name", "type", "visibility", "defaultValue")}
        self.data_fields[name] = field
        return field

    @staticmethod
    def _contact_json(contact: dict) -> dict:
        return {
            "id": contact["id"],
            "email": contact["email"],
            "optInType": "Unknown",
            "emailType": "Html",
            "dataFields": None,
            "status": contact["status"],
        }

    def _upsert_contact(self, address: str) -> dict:
        address = address.strip().lower()
        contact = self.contact(address)
        if contact is None:
            contact = {
                "id": next(self.ids),
                "email": address,
                "status": "Subscribed",
                "dataFields": {},
                "consentRecords": [],
            }
            self.contacts[contact["id"]] = contact
            self.contacts_by_email[address] = contact
        return contact

    def _patch_contact(self, address: str, body: dict) -> dict:
        if not EMAIL.match(address):
            raise ApiError(400, "contacts:invalidEmail")
        contact = self._upsert_contact(address)
        for record in body.get("consentRecords") or []:
            if not record.get("text"):
                raise ApiError(400, "consentRecords:textRequired")
            contact["consentRecords"].append(record)
        contact["dataFields"].update(body.get("dataFields") or {})
        return {
            "contactId": contact["id"],
            "identifiers": {"email": contact["email"]},
            "dataFields": contact["dataFields"],
            "consentRecords": contact["consentRecords"],
            "status": contact["status"],
        }

    # -- imports ------------------------------------------------------------------------------

    @staticmethod
    def _upload(headers, body: bytes) -> str | None:
        """The CSV of a multipart import, None without a named ``file`` part."""
        raw = b"Content-Type: " + headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        upload = None
        if message.is_multipart():
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    upload = part
        if upload is None or not upload.get_filename():
            return None
        return upload.get_payload(decode=True).decode("utf-8-sig")

    def _start_import(self, book: dict, headers, body: bytes) -> dict:
        text = self._upload(headers, body)
        if text is None:
            raise ApiError(400, "file must be valid")
        import_id = str(uuid.uuid4())
        self.imports[import_id] = {
            "book": book["id"],
            "text": text,
            "polls": 0,
            "status": "NotFinished",
            "watchdog": self.watchdog,
            "faults": [],
            "report": {},
        }
        return {"id": import_id, "status": "NotFinished"}

    def _import_view(self, import_id: str, view: str | None):
        job = self.imports.get(import_id)
        if job is None:
            raise ApiError(404, "ERROR_IMPORT_NOT_FOUND")
        if view is None:
            job["polls"] += 1
            if job["status"] == "NotFinished" and job["polls"] > self.polls_before_finish:
                self._finish(job)
            return {"id": import_id, "status": job["status"]}
        if job["status"] != "Finished":
            raise ApiError(400, "ERROR_IMPORT_REPORT_NOT_FOUND")
        if view == "/report":
            return job["report"]
        lines = ["Reason,Email"] + [f"{reason},{address}" for address, reason in job["faults"]]
        return "\ufeff" + "\r\n".join(lines) + "\r\n"

    def _finish(self, job: dict) -> None:
        if job["watchdog"]:
            job["status"] = "RejectedByWatchdog"
            return
        rows = csv.DictReader(io.StringIO(job["text"]))
        columns = rows.fieldnames or []
        lower = {c.lower(): c for c in columns}
        unknown = [
            c for c in columns if c.lower() not in RESERVED_COLUMNS and c not in self.data_fields
        ]
        if "email" not in lower or unknown:
            job["status"] = "InvalidFileFormat"
            return
        report = dict.fromkeys(["newContacts", "updatedContacts", *REPORT_KEYS.values()], 0)
        suppressed = {s["contact"]["email"]: s["reason"] for s in self.suppressed}
        seen: set[str] = set()
        book = self.address_books[job["book"]]
        for row in rows:
            address = (row[lower["email"]] or "").strip().lower()
            if not EMAIL.match(address):
                reason = "Invalid Entries"
            elif address in seen:
                reason = "Duplicate"
            elif address in suppressed:
                reason = FAULT_FOR_SUPPRESSION.get(suppressed[address], "Globally Suppressed")
            else:
                reason = self.fault_emails.get(address)
            if reason:
                job["faults"].append((address, reason))
                report[REPORT_KEYS.get(reason, "invalidEntries")] += 1
                continue
            seen.add(address)
            existed = self.contact(address) is not None
            contact = self._upsert_contact(address)
            contact["dataFields"].update(
                {c: (row[c] or None) for c in columns if c.lower() not in RESERVED_COLUMNS}
            )
            book["members"].add(contact["id"])
            report["updatedContacts" if existed else "newContacts"] += 1
        job["report"] = report
        job["status"] = "Finished"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms ACK stalls
    standin: DotdigitalStandIn

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.standin.handle(self.command, self.path, self.headers, body)
        if payload is None:
            data, ctype = b"", "application/json"
        elif isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/csv; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format, *args) -> None:  # keep pytest output quiet
        pass


@pytest.fixture(scope="session")
def dotdigital_standin():
    """The stand-in server, shared by the session (``http.server`` on a free loopback port)."""
    standin = DotdigitalStandIn()
    handler = type("Handler", (_Handler,), {"standin": standin})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="dotdigital-standin", daemon=True)
    thread.start()
    yield standin
    server.shutdown()
    server.server_close()


@pytest.fixture
def dotdigital(dotdigital_standin, monkeypatch) -> DotdigitalStandIn:
    """A clean stand-in account, reachable through the Airflow connection ``dotdigital_test``."""
    dotdigital_standin.reset()
    connection = {
        "conn_type": "http",
        "host": dotdigital_standin.url,
        "login": API_USER,
        "password": API_PASSWORD,
        "extra": {"region": "r1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{DOTDIGITAL_CONN_ID.upper()}", json.dumps(connection))
    return dotdigital_standin
