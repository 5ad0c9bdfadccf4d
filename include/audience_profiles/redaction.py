"""Text as logs, alerts and state tables may keep it: personal data taken out of error messages.

One rule for every error text that may quote a person (an exception's message, a service's
answer): anything that looks like an email address becomes ``<email>``, and every value the
caller knows to be personal (an erasure request's SSO ids, sessions, profile ids; a contact's
name) becomes ``<its type>``, whatever it looks like. Imports nothing heavy: the alert callbacks
use it (alerts.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Loose on purpose (it errs towards redacting): %-escapes too, as a URL path spells an address;
# an apostrophe inside (o'brien@), not the quote opening a quoted address.
EMAIL = re.compile(r"[\w.+%-][\w.+%'-]*@[\w%-]+(\.[\w%-]+)+")


def redact(text: str, known: Iterable[tuple[str, str]] = ()) -> str:
    """``text`` without email addresses and without the ``known`` ``(label, value)`` pairs' values,
    each replaced by ``<label>``: matched whatever their case (an error may spell an id another
    way), and only as a whole (not inside a longer letter-or-digit run: ``sso-1`` is not taken out
    of ``sso-12``, nor ``a`` out of every word). Longer values first, so a value holding a shorter
    one goes whole."""
    labels: dict[str, str] = {}
    for label, value in known:
        value = str(value or "").strip()
        if value:
            labels.setdefault(value.lower(), label)
    if labels:
        # One pass: a mark put in (``<session_id>``) is never searched for a shorter value.
        either = "|".join(re.escape(v) for v in sorted(labels, key=len, reverse=True))
        pattern = re.compile(rf"(?<![^\W_])(?:{either})(?![^\W_])", re.IGNORECASE)
        text = pattern.sub(lambda m: f"<{labels.get(m[0].lower(), 'identifier')}>", text)
    return EMAIL.sub("<email>", text)
