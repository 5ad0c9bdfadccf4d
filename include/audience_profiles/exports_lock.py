"""The lock between deliveries, which read the run exports kept under ``<work_dir>/runs/`` and
write the destinations, and the erasure DAG's rewrites of both without the people it erases.

A delivery reads an export more than once (a drop counts its rows, then cuts it into parts),
and nothing else keeps it apart from the erasure: ``deliver`` runs outside the warehouse pool.
An export rewritten half-way through a delivery left the erased person in the parts already
written (after the erasure had cleaned the destination) and cut the later parts from the
shorter file: other people's rows went missing and the manifest counted rows no part held.

So every delivery holds the lock shared (deliveries of several dates and destinations run at
once), and the rewrite of the exports (``remove_from_warehouse``) and the erasure of a
destination that writes files (``erase``: it rewrites the parts a delivery writes) hold it
alone. They wait for the deliveries under way, which the erasure then cleans up after.

``flock`` prefers no one: deliveries starting one after another would keep a shared lock held
and the erasure waiting, with the warehouse pool's slot. So an erasure first takes a second
lock, the intent, which deliveries pass through on their way in: from then on new deliveries
wait for the erasure, which waits only for those already under way, and at most
``EXCLUSIVE_WAIT_SECONDS`` in all (then it fails and is tried again: ``remove_from_warehouse``
by the task's retries, ``erase`` by the next erasure run), so that neither the pool nor the
deliveries held back wait long on a delivery that takes a while. ``flock`` on files in the
work folder, which every worker already shares (tasks hand each other paths in it), opened for
reading too (an NFS client maps a shared flock to a read lock); a lock goes with its process,
so a killed task never leaves one held.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_FILE = "exports.lock"
INTENT_FILE = "exports.lock.intent"
EXCLUSIVE_WAIT_SECONDS = 120
# How long a destination's erasure (``erase``: outside the warehouse pool) waits for another
# erasure to finish. Waiting for the intent holds nothing back, and two file drops' erasures
# each read every partition kept (158 s after a year): at 120 s the second one failed, the
# erasure run alerted, and the request waited for the next hourly run.
ERASE_QUEUE_SECONDS = 3600


# The work folders whose shared lock this thread holds, and how many times: a delivery within
# a delivery does not take it again. (Each thread takes its own: another thread's delivery
# is another delivery, whose end must not release this one's hold.)
_held = threading.local()


class ExportsBusyError(RuntimeError):
    """Deliveries held the run exports for longer than the erasure waits: retried."""


@contextlib.contextmanager
def exports_lock(
    work_dir: str, *, exclusive: bool, holder: str, queue_seconds: float | None = None
) -> Iterator[None]:
    """Hold the exports lock, shared (a delivery) or alone (an erasure), logging a wait so that
    a task that seems stuck says what it waits for. ``holder``: who, for the log.

    Alone, it waits at most ``EXCLUSIVE_WAIT_SECONDS`` in all; ``queue_seconds``, when given,
    bounds instead the wait for another erasure (the intent), which holds no delivery back: the
    wait for the deliveries under way, which holds new ones back, keeps its own bound."""
    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    shared_here = _held.__dict__.setdefault("shared", {})
    if not exclusive and shared_here.get(key):
        # Already held shared by this thread (a delivery within a delivery): taking it again
        # would queue behind an erasure that waits for the first hold, until it gave up.
        shared_here[key] += 1
        try:
            yield
        finally:
            shared_here[key] -= 1
        return
    with open(folder / LOCK_FILE, "a+") as lock, open(folder / INTENT_FILE, "a+") as intent:
        if exclusive:
            queued = time.monotonic() + (
                EXCLUSIVE_WAIT_SECONDS if queue_seconds is None else queue_seconds
            )
            _take(intent, fcntl.LOCK_EX, holder, "another erasure", queued)
            deadline = (
                queued if queue_seconds is None else time.monotonic() + EXCLUSIVE_WAIT_SECONDS
            )
            try:
                _take(lock, fcntl.LOCK_EX, holder, "deliveries under way", deadline)
            except BaseException:
                fcntl.flock(intent, fcntl.LOCK_UN)
                raise
        else:
            _take(intent, fcntl.LOCK_SH, holder, "the erasure DAG's rewrite")
            _take(lock, fcntl.LOCK_SH, holder, "the erasure DAG's rewrite")
            fcntl.flock(intent, fcntl.LOCK_UN)
            shared_here[key] = 1
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(intent, fcntl.LOCK_UN)
            else:
                shared_here.pop(key, None)


def _take(file: IO, mode: int, holder: str, other: str, deadline: float | None = None) -> None:
    """Lock ``file`` in ``mode``; past ``deadline`` (if given), ``ExportsBusyError``."""
    try:
        fcntl.flock(file, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    log.info("%s: waiting for %s to finish with the run exports (%s)", holder, other, file.name)
    started = time.monotonic()
    while True:
        if deadline is None:
            fcntl.flock(file, mode)
            break
        try:
            fcntl.flock(file, mode | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ExportsBusyError(
                    f"{holder}: {other} held the run exports ({file.name}) for "
                    f"{time.monotonic() - started:.0f} s: retried later"
                ) from None
            time.sleep(1)
    log.info("%s: waited %.1f s for the run exports", holder, time.monotonic() - started)
