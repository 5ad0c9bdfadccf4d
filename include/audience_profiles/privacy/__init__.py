"""Normalise and pseudonymise personal identifiers (and, in submodules, erasure and retention).

One function is the single source of truth for how an identifier is matched and hashed: trim
surrounding white space, lower-case, then SHA-256 of the UTF-8 bytes as lower-case hex (the form
ad platforms and marketing tools match on). Exactly:

- white space is every character Python's ``str.isspace`` accepts (:data:`WHITESPACE`), trimmed
  from both ends;
- lower-casing maps each character on its own with Unicode's simple case mapping, which is what
  SQL engines do: ``İ`` becomes ``i`` (not ``i̇``) and a final ``Σ`` becomes ``σ`` (not ``ς``);
- an empty result is "no identifier": ``None``, never the hash of the empty string.

The warehouse SQL spells the same rule as the macros in ``include/sql/privacy/_macros.sql``, so a
hash computed in the warehouse equals one computed here (tests/privacy/test_hashing.py).

Submodules: ``suppression`` (the daily filter), ``erasure`` (requests, the erasure DAG's steps),
``retention`` (removing old partitions).
"""

from __future__ import annotations

import hashlib

from audience_profiles.warehouse.base import sql_macro

# Pragmatic address check: one @, a dot in the domain, no spaces, a top-level domain of letters
# or in punycode (.xn--p1ai is .рф). RFC 5322 allows more, but marketing platforms reject those
# addresses anyway. The validate and identity SQL take it as `email_pattern`;
# include/config/identity.yml's commented default repeats it.
# No backslashes: Snowflake string literals treat them as escapes, so dots are written [.].
EMAIL_PATTERN = r"^[a-z0-9._%+'-]+@[a-z0-9-]+([.][a-z0-9-]+)*[.]([a-z]{2,}|xn--[a-z0-9-]+)$"

PII_COLUMNS = ("email", "first_name", "last_name")
# What a hashed email is called, as a column and as an identifier type, under pii `hashed`: the
# drops, streams and warehouse loads write it, and their erasures find people by it.
HASHED_EMAIL = "email_sha256"

# The characters str.isspace() accepts, spelled out for the SQL twin (privacy/_macros.sql).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The one character whose full lower-case mapping (Python's) differs from its simple one (SQL's).
_SIMPLE_LOWER = {"\u0130": "i"}


def _lower(value: str) -> str:
    if value.isascii():
        return value.lower()
    return "".join(_SIMPLE_LOWER.get(c) or c.lower() for c in value)


def normalise_identifier(value: str | None) -> str | None:
    """Trimmed and lower-cased as documented above; ``None`` when nothing is left."""
    if value is None:
        return None
    value = _lower(value.strip(WHITESPACE))
    return value or None


def sql_normalised(expr: str) -> str:
    """SQL (DuckDB and Snowflake) of ``expr`` trimmed and lower-cased as
    :func:`normalise_identifier` does, blank kept blank, for SQL built in Python: the
    ``trimmed`` macro of include/sql/privacy/_macros.sql, lower-cased."""
    return f"lower({sql_macro('privacy/_macros.sql', 'trimmed', expr)})"


def hash_identifier(value: str | None) -> str | None:
    """SHA-256 hex of the normalised value; ``None`` stays ``None`` (so does a blank value)."""
    normalised = normalise_identifier(value)
    if normalised is None:
        return None
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def exact_hash(identifier_type: str, value: str | None) -> str | None:
    """SHA-256 hex of ``value`` as identity compares identifiers of its type: an email as
    :func:`hash_identifier` has it, a session or SSO id only trimmed, case and all (``SSO-1``
    and ``sso-1`` are two accounts). The ``exact_hashed`` macro's twin."""
    if identifier_type == "email":
        return hash_identifier(value)
    trimmed = value.strip(WHITESPACE) if value is not None else ""
    return hashlib.sha256(trimmed.encode("utf-8")).hexdigest() if trimmed else None
