"""Text as logs, alerts and state tables may keep it: personal data taken out of error messages.

One rule for every error text that may quote a person (an exception's message, a service's
answer): anything that looks like an email address becomes ``<email>``, and every value the
caller knows to be personal (an erasure request's SSO ids, sessions, profile ids; a contact's
name) becomes ``<its type>``, whatever it looks like. Imports nothing heavy: the alert callbacks
use it (alerts.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# Loose on purpose (it errs towards redacting): %-escapes too, as a URL path spells an address;
# an apostrophe inside (o'brien@), not the quote opening a quoted address.
EMAIL = re.compile(r"[\w.+%-][\w.+%'-]*@[\w%-]+(\.[\w%-]+)+")


def redact(text: str, known: Iterable[tuple[str, str]] = ()) -> str:
    """``text`` without email addresses and without the ``known`` ``(label, value)`` pairs' values,
    each replaced by ``<label>``: matched whatever their case (an error may spell an id another
    way), and only as a whole (not inside a longer letter-or-digit run: ``sso-1`` is not taken out
    of ``sso-12``, nor ``a`` out of every word). Longer values first, so a value holding a shorter
    one goes whole."""
    return redactor(known)(text)


def redactor(known: Iterable[tuple[str, str]] = ()) -> Callable[[str], str]:
    """:func:`redact` with ``known`` read once, for several texts (an error, its message, the
    errors chained to it). Cheap for a batch of many thousand values: only those a text holds
    (a plain substring test) go into the pattern for it, not one alternation of them all."""
    labels: dict[str, str] = {}
    folded: list[tuple[str, str]] = []  # (casefolded, key): a superset of what IGNORECASE finds
    for label, value in known:
        value = str(value or "").strip()
        if value and value.lower() not in labels:
            labels[value.lower()] = label
            folded.append((value.casefold(), value.lower()))

    def apply(text: str) -> str:
        haystack = text.casefold()
        present = sorted({key for fold, key in folded if fold in haystack}, key=len, reverse=True)
        if present:
            # One pass: a mark put in (``<session_id>``) is never searched for a shorter value.
            either = "|".join(re.escape(v) for v in present)
            pattern = re.compile(rf"(?<![^\W_])(?:{either})(?![^\W_])", re.IGNORECASE)
            text = pattern.sub(lambda m: f"<{labels.get(m[0].lower(), 'identifier')}>", text)
        return EMAIL.sub("<email>", text)

    return apply
