"""The lock between deliveries, which read the run exports kept under ``<work_dir>/runs/`` and
write the destinations, and the erasure DAG's rewrites of both without the people it erases.

A delivery reads an export more than once (a drop counts its rows, then cuts it into parts),
and nothing else keeps it apart from the erasure: ``deliver`` runs outside the warehouse pool.
An export rewritten half-way through a delivery left the erased person in the parts already
written (after the erasure had cleaned the destination) and cut the later parts from the
shorter file: other people's rows went missing and the manifest counted rows no file held.

So every delivery holds the lock shared (deliveries of several dates and destinations run at
once), and the rewrite of the exports (``remove_from_warehouse``) and each destination's
erasure (``erase``) hold it alone: they wait for the deliveries under way to finish, which the
erasure then cleans up after, and deliveries starting meanwhile wait for them and read the
rewritten exports. ``flock`` on a file in the work folder, which every worker
already shares (tasks hand each other paths in it); the lock goes with the process, so a
killed task never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "exports.lock"


@contextlib.contextmanager
def exports_lock(work_dir: str, *, exclusive: bool, holder: str) -> Iterator[None]:
    """Hold the exports lock, shared (a delivery) or alone (the erasure's rewrite), logging a
    wait so that a task that seems stuck says what it waits for. ``holder``: who, for the log."""
    path = Path(work_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            other = "deliveries under way" if exclusive else "the erasure DAG's rewrite"
            log.info("%s: waiting for %s to finish with the run exports (%s)", holder, other, path)
            started = time.monotonic()
            fcntl.flock(lock, mode)
            log.info("%s: waited %.1f s for the run exports", holder, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
