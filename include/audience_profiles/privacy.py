"""Normalise and pseudonymise personal identifiers.

One function is the single source of truth for how an email is matched and hashed: trim
surrounding white space, lower-case, then SHA-256 as lower-case hex (the form ad platforms and
marketing tools match on). The SQL transforms use the same rule (``lower(trim(email))``).
"""

from __future__ import annotations

import hashlib
import re

# Pragmatic address check: one @, a dot in the domain, no spaces. RFC 5322 allows more, but
# marketing platforms reject those addresses anyway. The SQL twin lives in include/sql/validate.
# No backslashes: Snowflake string literals treat them as escapes, so dots are written [.].
EMAIL_PATTERN = r"^[a-z0-9._%+'-]+@[a-z0-9-]+([.][a-z0-9-]+)*[.][a-z]{2,}$"
_EMAIL_RE = re.compile(EMAIL_PATTERN)

PII_COLUMNS = ("email", "first_name", "last_name")


def normalise_email(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


def is_valid_email(value: str | None) -> bool:
    normalised = normalise_email(value)
    return bool(normalised) and bool(_EMAIL_RE.match(normalised))


def hash_identifier(value: str | None) -> str | None:
    """SHA-256 hex of the normalised value; ``None`` stays ``None``."""
    normalised = normalise_email(value)
    if normalised is None:
        return None
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()
