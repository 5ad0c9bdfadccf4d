"""Dotdigital API client: the provider's ``HttpHook`` with Dotdigital's regions, limits and paths.

Connection (``conn_type`` http; id ``dotdigital_default`` unless the destination names another)::

    login     API user (apiuser-...@apiconnector.com)
    password  its password
    extra     {"region": "r1"}        -> https://r1-api.dotdigital.com
    host      optional override of the region URL (tests point it at the stand-in server)

Endpoints used (Dotdigital's published v2 API unless noted):

    GET    /v2/address-books?select=&skip=                 list address books (paged, 1000 max)
    POST   /v2/address-books                               create one {name, visibility}
    GET    /v2/address-books/{id}/contacts?select=&skip=   members of an address book (paged)
    POST   /v2/address-books/{id}/contacts/import          bulk CSV import (multipart, filename required)
    POST   /v2/address-books/{id}/contacts/delete          remove members: body is a JSON array of contact ids
    GET    /v2/contacts/import/{importId}                  import status
    GET    /v2/contacts/import/{importId}/report           import summary (counts per outcome)
    GET    /v2/contacts/import/{importId}/report-faults    per-contact faults, CSV "Reason,Email"
    GET    /v2/contacts/suppressed-since/{date}?select=&skip=  suppressed/unsubscribed contacts
    GET    /v2/data-fields, POST /v2/data-fields           contact data fields
    PATCH  /contacts/v3/email/{email}                      v3 contact upsert, used for ``consentRecords``

Throttling: a 429 waits until ``x-ratelimit-reset`` (epoch seconds; ``Retry-After`` as a fallback,
and back-off when the reset is unreadable or already past on this clock),
5xx and connection errors back off exponentially, and every call gives up after ``max_attempts``.
A reset further away than ``max_rate_limit_wait`` (Dotdigital counts calls per minute, or per hour
for an API user on its older flat scheme) fails the call with the wait instead of holding a worker
for up to an hour; Airflow's task retry comes back later.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import email.utils
import io
import json
import math
import random
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import requests

from audience_profiles.hooks.http import QuietHttpHook
from audience_profiles.redaction import redact

PAGE_SIZE = 1000  # the v2 API's maximum ``select``
# Dotdigital rejects import files of 50 MB and more; read as decimal megabytes, the smaller of
# the two readings (50 MiB would be 52.4 million bytes).
MAX_IMPORT_BYTES = 50_000_000
MAX_ACTIVE_IMPORTS = 25  # Dotdigital runs at most 25 imports per account at a time
IMPORT_FINISHED = "Finished"
IMPORT_NOT_FINISHED = "NotFinished"
# Every other status (RejectedByWatchdog, InvalidFileFormat, Unknown, Failed,
# ExceedsAllowedContactLimit, NotAvailableInThisVersion) is terminal: not all was imported.
_REGION = re.compile(r"^r\d{1,2}$")
_EPOCH_2001 = 1_000_000_000  # an x-ratelimit-reset below this is a delay, not a timestamp


class DotdigitalApiError(RuntimeError):
    """A call Dotdigital answered with an error (after retries), with its status and message;
    contact addresses (in paths, in messages) redacted: they are personal data."""

    def __init__(self, method: str, endpoint: str, status: int | None, message: str):
        self.status = status
        self.message = redact(message)
        super().__init__(
            f"Dotdigital {method} {redact(endpoint)} failed ({status}): {self.message}"
        )


class DotdigitalRateLimitError(DotdigitalApiError):
    """Rate limited until a reset too far away to wait for inside one task attempt."""


def api_base_url(host: str | None, schema: str | None, port: int | None, extra: Mapping) -> str:
    """Base URL of the API: the connection's host when set, else the account's region."""
    if host:
        base = host if "://" in host else f"{schema or 'https'}://{host}"
        return f"{base}:{port}" if port else base.rstrip("/")
    region = str(extra.get("region", "r1"))
    if not _REGION.match(region):
        raise ValueError(
            f"Dotdigital connection: extra.region must look like r1, r2, r3 (not {region!r})"
        )
    return f"https://{region}-api.dotdigital.com"


def backoff_seconds(attempt: int, base: float, cap: float = 60.0) -> float:
    """Exponential back-off with jitter, so parallel tasks do not retry in lock-step."""
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _reset_wait(reset: str | None) -> float | None:
    """``x-ratelimit-reset`` (epoch seconds, or a delay) as seconds from now; None if unreadable
    or already past: a 429 whose reset has passed on this clock says the clocks disagree, and
    waiting 0.05 s each time spent every attempt inside the limit."""
    value = _number(reset) if reset else None
    if value is None:
        return None
    if value > _EPOCH_2001:
        value -= time.time()
        if value <= 0:
            return None
    return max(value, 0.0) + 0.05


def _retry_after_wait(retry_after: str | None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) as seconds from now; None if unreadable."""
    if not retry_after:
        return None
    seconds = _number(retry_after)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": a date in UTC with no zone information
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def retry_wait(status: int, headers: Mapping[str, str], attempt: int, base: float) -> float | None:
    """Seconds to wait before retrying a response with ``status``; ``None`` if it is final.

    A 429 whose headers cannot be read (neither a number nor a date) backs off like a 5xx
    instead of failing the call on a parse error.
    """
    if status == 429:
        wait = _reset_wait(headers.get("x-ratelimit-reset"))
        if wait is None:
            wait = _retry_after_wait(headers.get("Retry-After"))
        return backoff_seconds(attempt, base) if wait is None else wait
    if status >= 500:
        return backoff_seconds(attempt, base)
    return None


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:500]


class DotdigitalHook(QuietHttpHook):
    """Dotdigital v2/v3 API calls over one pooled ``requests`` session from ``HttpHook``.

    Quiet: a connection error's text holds the URL, which for the v3 contact calls holds a
    contact's address; ``request`` logs (and redacts) every failed attempt itself."""

    conn_name_attr = "dotdigital_conn_id"
    default_conn_name = "dotdigital_default"
    conn_type = "http"
    hook_name = "Dotdigital"

    def __init__(
        self,
        dotdigital_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        max_rate_limit_wait: float = 900.0,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(method="GET", http_conn_id=dotdigital_conn_id)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base = backoff_base
        self.max_rate_limit_wait = max_rate_limit_wait
        self.timeout = timeout
        self._session: requests.Session | None = None

    # -- HttpHook plumbing --------------------------------------------------------------------

    def _set_base_url(self, connection) -> None:
        self.base_url = api_base_url(
            connection.host, connection.schema, connection.port, connection.extra_dejson
        )
        self._base_url_initialized = True

    def _configure_session_from_extra(self, session, connection, extra_options):
        session = super()._configure_session_from_extra(session, connection, extra_options)
        # HttpHook sends unknown extra keys as headers; the region is ours, not a header.
        session.headers.pop("region", None)
        return session

    def _conn(self) -> requests.Session:
        if self._session is None:
            self._session = self.get_conn(headers={"Accept": "application/json"})
        return self._session

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
    ) -> requests.Response:
        """Send one call, waiting out 429s and retrying 5xx; raise :class:`DotdigitalApiError`."""
        session = self._conn()
        prepared = session.prepare_request(
            requests.Request(
                method, self.url_from_endpoint(endpoint), params=params, json=json, files=files
            )
        )
        options = {"timeout": self.timeout, **self.merged_extra, "check_response": False}
        label = redact(endpoint)
        response: requests.Response | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.run_and_check(session, prepared, options)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.max_attempts:
                    # from None: the error's text, and so a traceback chaining it, holds the URL
                    # (a contact's address); this one's message is redacted
                    raise DotdigitalApiError(method, label, None, str(exc)) from None
                wait = backoff_seconds(attempt, self.backoff_base)
            else:
                wait = retry_wait(
                    response.status_code, response.headers, attempt, self.backoff_base
                )
                if wait is None or attempt == self.max_attempts:
                    break
            if wait > self.max_rate_limit_wait:
                raise DotdigitalRateLimitError(
                    method,
                    label,
                    429,
                    f"rate limited for another {wait:.0f}s; retry the task later",
                )
            self.log.warning(
                "Dotdigital %s %s: %s, retrying in %.2fs (attempt %d of %d)",
                method,
                label,
                response.status_code if response is not None else "connection error",
                wait,
                attempt,
                self.max_attempts,
            )
            time.sleep(wait)
        assert response is not None
        if response.status_code >= 400:
            raise DotdigitalApiError(
                method, label, response.status_code, _error_message(response.text)
            )
        return response

    def _paged(self, endpoint: str) -> Iterator[dict]:
        skip = 0
        while True:
            page = self.request("GET", endpoint, params={"select": PAGE_SIZE, "skip": skip}).json()
            yield from page
            if len(page) < PAGE_SIZE:
                return
            skip += PAGE_SIZE

    # -- address books ------------------------------------------------------------------------

    def list_address_books(self) -> list[dict]:
        return list(self._paged("/v2/address-books"))

    def create_address_book(self, name: str, visibility: str = "Private") -> dict:
        return self.request(
            "POST", "/v2/address-books", json={"name": name, "visibility": visibility}
        ).json()

    def ensure_address_book(self, name: str) -> dict:
        """The address book called ``name``, created when missing."""
        for book in self.list_address_books():
            if book["name"] == name:
                return book
        try:
            return self.create_address_book(name)
        except DotdigitalApiError:
            # A retried create may have succeeded the first time (names are unique): look again.
            for book in self.list_address_books():
                if book["name"] == name:
                    return book
            raise

    def list_address_book_contacts(self, address_book_id: int) -> Iterator[dict]:
        return self._paged(f"/v2/address-books/{address_book_id}/contacts")

    def remove_contacts(self, address_book_id: int, contact_ids: list[int]) -> None:
        """Take contacts out of an address book (they stay in the account)."""
        for start in range(0, len(contact_ids), PAGE_SIZE):
            self.request(
                "POST",
                f"/v2/address-books/{address_book_id}/contacts/delete",
                json=contact_ids[start : start + PAGE_SIZE],
            )

    # -- data fields --------------------------------------------------------------------------

    def list_data_fields(self) -> list[dict]:
        return self.request("GET", "/v2/data-fields").json()

    def create_data_field(self, name: str, data_type: str, visibility: str = "Private") -> dict:
        body = {"name": name, "type": data_type, "visibility": visibility, "defaultValue": None}
        return self.request("POST", "/v2/data-fields", json=body).json()

    # -- bulk import --------------------------------------------------------------------------

    def import_contacts(self, address_book_id: int, path: Path) -> dict:
        """Start a bulk import of a CSV into an address book; returns ``{"id", "status"}``."""
        size = path.stat().st_size
        if size >= MAX_IMPORT_BYTES:
            raise ValueError(f"{path} is {size} bytes; Dotdigital imports must be under 50 MB")
        with path.open("rb") as fh:
            # The filename is required: without it Dotdigital answers 400 "file must be valid".
            files = {"file": (path.name, fh, "text/csv")}
            return self.request(
                "POST", f"/v2/address-books/{address_book_id}/contacts/import", files=files
            ).json()

    def get_import_status(self, import_id: str) -> str:
        return self.request("GET", f"/v2/contacts/import/{import_id}").json()["status"]

    def get_import_report(self, import_id: str) -> dict[str, int]:
        return self.request("GET", f"/v2/contacts/import/{import_id}/report").json()

    def get_import_faults(self, import_id: str) -> list[dict[str, str]]:
        """Contacts an import did not take: ``[{"email", "reason"}]`` from the faults CSV."""
        text = self.request("GET", f"/v2/contacts/import/{import_id}/report-faults").text
        rows = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        fields = {name.lower(): name for name in rows.fieldnames or []}
        if not fields:
            return []
        email_col, reason_col = fields.get("email"), fields.get("reason")
        return [
            {
                "email": (row.get(email_col) or "").strip(),
                "reason": (row.get(reason_col) or "").strip(),
            }
            for row in rows
        ]

    # -- suppressions and consent -------------------------------------------------------------

    def list_suppressed_since(self, since: dt.date) -> Iterator[dict]:
        """Suppressed contacts (unsubscribed, bounced, complaints...) since ``since``."""
        return self._paged(f"/v2/contacts/suppressed-since/{since.isoformat()}")

    def add_consent_records(self, email_address: str, records: list[dict[str, str]]) -> dict:
        """Attach consent records (text, dateTimeConsented, url...) to a contact (v3 API)."""
        body = {"identifiers": {"email": email_address}, "consentRecords": records}
        return self.request(
            "PATCH", f"/contacts/v3/email/{quote(email_address, safe='@')}", json=body
        ).json()

    # -- async path, for the triggerer --------------------------------------------------------

    async def aget_import_statuses(self, import_ids: list[str]) -> dict[str, str]:
        """Status of each import, polled over aiohttp (no thread blocks while waiting)."""
        from airflow.providers.common.compat.connection import (
            get_async_connection,
            get_async_extra_dejson,
        )

        conn = await get_async_connection(self.http_conn_id, hook=self)
        extra = await get_async_extra_dejson(conn)
        base = api_base_url(conn.host, conn.schema, conn.port, extra)
        # A header, not ClientSession(auth=BasicAuth(...)): aiohttp 3.14 deprecates both for 4.0.
        # Latin-1, as BasicAuth did and as requests does on the worker (encode_basic_auth's
        # default is UTF-8: a password with an accented letter would work there and not here).
        credentials = aiohttp.encode_basic_auth(
            conn.login or "", conn.password or "", encoding="latin1"
        )
        auth = {"Authorization": credentials}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        statuses: dict[str, str] = {}
        async with aiohttp.ClientSession(headers=auth, timeout=timeout) as session:
            for import_id in import_ids:
                body = await self._aget_json(session, f"{base}/v2/contacts/import/{import_id}")
                statuses[import_id] = body["status"]
        return statuses

    async def _aget_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with session.get(url, headers={"Accept": "application/json"}) as response:
                    if response.status < 400:
                        return await response.json(content_type=None)
                    text = await response.text()
                    wait = retry_wait(response.status, response.headers, attempt, self.backoff_base)
                    if wait is None or attempt == self.max_attempts:
                        raise DotdigitalApiError("GET", url, response.status, _error_message(text))
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == self.max_attempts:
                    raise DotdigitalApiError("GET", url, None, str(exc)) from exc
                wait = backoff_seconds(attempt, self.backoff_base)
            if wait > self.max_rate_limit_wait:
                raise DotdigitalRateLimitError("GET", url, 429, f"rate limited for {wait:.0f}s")
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")
