"""Errors that a retry would only repeat.

A task failing with one of these fails at once instead of retrying (``dag_defaults.fails_fast``):
the same configuration or the same data gives the same error, and the failure alert should reach
the operator now, not after three retries and minutes of back-off.
"""

from __future__ import annotations


class NotRetryable(Exception):
    """Base of every error whose cause a retry cannot change (a config mistake, a failed check)."""
