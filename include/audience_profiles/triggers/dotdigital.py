"""Wait for Dotdigital bulk imports to reach a terminal status.

Two ways to wait, same result (``{import_id: status}``):

- :class:`DotdigitalImportTrigger`: deferrable. A task submits its imports, defers with this
  trigger and frees its worker slot; the triggerer polls over aiohttp and resumes the task with a
  :class:`~airflow.triggers.base.TriggerEvent` once every import is terminal.
- :func:`wait_for_imports`: a plain blocking poll for runs without a triggerer (``dag.test()``,
  the CLI, the destination's own ``deliver``).

Dotdigital answers ``NotFinished`` while an import runs and one terminal status after:
``Finished`` or a failure (``RejectedByWatchdog``, ``InvalidFileFormat``, ``Failed``...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from audience_profiles.hooks.dotdigital import IMPORT_NOT_FINISHED, DotdigitalHook


class DotdigitalImportTimeout(TimeoutError):
    def __init__(self, pending: list[str], timeout: float):
        self.pending = pending
        super().__init__(
            f"Dotdigital imports still running after {timeout:.0f}s: {', '.join(pending)}; "
            "a re-run picks them up where they are"
        )


def wait_for_imports(
    hook: DotdigitalHook,
    import_ids: list[str],
    *,
    poll_interval: float = 10.0,
    timeout: float = 3600.0,
) -> dict[str, str]:
    """Block until every import is terminal; return each one's final status."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    pending = list(import_ids)
    while True:
        for import_id in pending:
            statuses[import_id] = hook.get_import_status(import_id)
        pending = [i for i in pending if statuses[i] == IMPORT_NOT_FINISHED]
        if not pending:
            return statuses
        if time.monotonic() >= deadline:
            raise DotdigitalImportTimeout(pending, timeout)
        time.sleep(poll_interval)


class DotdigitalImportTrigger(BaseTrigger):
    """Poll imports until all are terminal, then fire one event with their statuses.

    Event payload: ``{"status": "done", "imports": {id: status}}``, or
    ``{"status": "timeout" | "error", "imports": {...so far}, "message": str}``.
    """

    def __init__(
        self,
        conn_id: str,
        import_ids: list[str],
        poll_interval: float = 10.0,
        timeout: float = 3600.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        max_rate_limit_wait: float = 900.0,
    ):
        super().__init__()
        self.conn_id = conn_id
        self.import_ids = list(import_ids)
        self.poll_interval = poll_interval
        self.timeout = timeout
        # The destination's retry settings, so polling retries like the rest of its calls.
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.max_rate_limit_wait = max_rate_limit_wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "import_ids": self.import_ids,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "max_attempts": self.max_attempts,
                "backoff_base": self.backoff_base,
                "max_rate_limit_wait": self.max_rate_limit_wait,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DotdigitalHook(
            self.conn_id,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            max_rate_limit_wait=self.max_rate_limit_wait,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        statuses: dict[str, str] = {}
        pending = list(self.import_ids)
        while True:
            try:
                statuses.update(await hook.aget_import_statuses(pending))
            except Exception as exc:  # the task decides; an event beats a silently dead trigger
                yield TriggerEvent({"status": "error", "imports": statuses, "message": str(exc)})
                return
            pending = [i for i in pending if statuses[i] == IMPORT_NOT_FINISHED]
            if not pending:
                yield TriggerEvent({"status": "done", "imports": statuses})
                return
            if loop.time() >= deadline:
                message = str(DotdigitalImportTimeout(pending, self.timeout))
                yield TriggerEvent({"status": "timeout", "imports": statuses, "message": message})
                return
            self.log.info("Dotdigital imports still running: %s", ", ".join(pending))
            await asyncio.sleep(self.poll_interval)
