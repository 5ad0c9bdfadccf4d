"""The lock between deliveries and the erasure's rewrites of the run exports (exports_lock.py)."""

from __future__ import annotations

import threading
import time

import pytest

from audience_profiles import exports_lock as locks
from audience_profiles.exports_lock import ExportsBusyError, exports_lock


def test_a_waiting_erasure_holds_back_new_deliveries_not_those_under_way(tmp_path):
    """flock prefers no one: deliveries starting one after another kept the erasure waiting
    (and the warehouse pool's slot with it) for as long as they overlapped."""
    events, under_way_done = [], threading.Event()

    def delivery(name, hold: threading.Event | None = None):
        with exports_lock(str(tmp_path), exclusive=False, holder=name):
            events.append(f"{name} in")
            if hold:
                hold.wait(10)
            events.append(f"{name} out")

    def erasure():
        with exports_lock(str(tmp_path), exclusive=True, holder="erasure"):
            events.append("erasure")

    first = threading.Thread(target=delivery, args=("first", under_way_done))
    first.start()
    while "first in" not in events:
        time.sleep(0.01)
    waiting = threading.Thread(target=erasure)
    waiting.start()
    while not _held_alone(tmp_path / locks.INTENT_FILE):  # the erasure waits for the first
        time.sleep(0.01)
    later = threading.Thread(target=delivery, args=("later",))
    later.start()
    time.sleep(0.3)
    assert events == ["first in"]  # the later delivery waits behind the erasure
    under_way_done.set()
    for thread in (first, waiting, later):
        thread.join(10)
    assert events == ["first in", "first out", "erasure", "later in", "later out"]


def _held_alone(path) -> bool:
    """Whether someone holds ``path``'s lock alone (a slept-for 0.3 s was not always enough
    on a loaded machine for the erasure to take its intent)."""
    import fcntl

    with open(path, "a+") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def test_an_erasure_waits_a_bounded_time_then_lets_deliveries_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "EXCLUSIVE_WAIT_SECONDS", 0.5)
    with exports_lock(str(tmp_path), exclusive=False, holder="delivery"):
        with (
            pytest.raises(ExportsBusyError, match="deliveries under way held the run exports"),
            exports_lock(str(tmp_path), exclusive=True, holder="erasure"),
        ):
            pass
        # its intent given up: a delivery starting now is not held back
        with exports_lock(str(tmp_path), exclusive=False, holder="another delivery"):
            pass


def test_a_delivery_within_a_delivery_does_not_queue_behind_a_waiting_erasure(
    tmp_path, monkeypatch
):
    """The inner one waited for the intent an erasure held while it waited for the outer one:
    both stuck until the erasure gave up."""
    # (bounds a starved machine does not run out of: the erasure re-tries the lock each second)
    monkeypatch.setattr(locks, "EXCLUSIVE_WAIT_SECONDS", 30)
    inner_done, erasure_waiting, failures = threading.Event(), threading.Event(), []

    def erasure():
        erasure_waiting.set()
        try:
            with exports_lock(str(tmp_path), exclusive=True, holder="erasure"):
                pass
        except ExportsBusyError as exc:
            failures.append(exc)

    with exports_lock(str(tmp_path), exclusive=False, holder="outer"):
        waiting = threading.Thread(target=erasure)
        waiting.start()
        erasure_waiting.wait(5)
        while not _held_alone(tmp_path / locks.INTENT_FILE):  # the erasure waits for the outer
            time.sleep(0.01)
        with exports_lock(str(tmp_path), exclusive=False, holder="inner"):
            inner_done.set()
        assert inner_done.is_set()
    waiting.join(10)
    assert not waiting.is_alive() and failures == []


def test_a_destinations_erasure_queues_behind_another_for_longer(tmp_path, monkeypatch):
    """Two file drops' erasures each hold the lock alone while they read every partition kept
    (158 s after a year): at EXCLUSIVE_WAIT_SECONDS the second failed and the run alerted. The
    wait for another erasure holds no delivery back; the wait for deliveries keeps its bound."""
    monkeypatch.setattr(locks, "EXCLUSIVE_WAIT_SECONDS", 0.5)
    holding, release = threading.Event(), threading.Event()

    def first_erasure():
        with exports_lock(str(tmp_path), exclusive=True, holder="erase drop_1"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=first_erasure)
    thread.start()
    holding.wait(10)
    with (
        pytest.raises(ExportsBusyError, match="another erasure held the run exports"),
        exports_lock(str(tmp_path), exclusive=True, holder="remove_from_warehouse"),
    ):
        pass
    threading.Timer(1.0, release.set).start()  # longer than EXCLUSIVE_WAIT_SECONDS
    with exports_lock(str(tmp_path), exclusive=True, holder="erase drop_2", queue_seconds=30):
        pass
    thread.join(10)
    # behind deliveries under way, it still gives up at EXCLUSIVE_WAIT_SECONDS
    with (
        exports_lock(str(tmp_path), exclusive=False, holder="delivery"),
        pytest.raises(ExportsBusyError, match="deliveries under way held"),
        exports_lock(str(tmp_path), exclusive=True, holder="erase drop_2", queue_seconds=5),
    ):
        pass
