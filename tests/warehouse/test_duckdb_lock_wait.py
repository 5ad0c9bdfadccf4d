"""The DuckDB engine waits for a warehouse file locked by another process, and says so in the log.

The lock is held by a real second process (as an analyst's read-write shell holds it), so the log
lines and the error quote DuckDB's own message; the clock is simulated, so 5 minutes pass at once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from itertools import pairwise
from types import SimpleNamespace

import pytest

from audience_profiles.warehouse import duckdb as duckdb_engine
from audience_profiles.warehouse.duckdb import DuckDBWarehouse, WarehouseLockedError

HOLD_OPEN = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True);"
    "sys.stdin.read()"
)


@pytest.fixture
def holder(tmp_path):
    """A process holding ``warehouse.duckdb`` open for writing until its stdin is closed."""
    path = tmp_path / "warehouse.duckdb"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout.readline().strip() == "open"
        yield SimpleNamespace(path=str(path), process=process)
        process.stdin.close()


class Clock:
    """time.monotonic and time.sleep as _connect uses them: a sleep only moves the clock on."""

    def __init__(self):
        self.now = 1000.0
        self.on_sleep = lambda now: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep(self.now)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(duckdb_engine, "time", clock)
    return clock


def lock_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == duckdb_engine.__name__]


def test_a_wait_that_runs_out_says_what_it_waited_for_and_what_to_do(holder, clock, caplog):
    caplog.set_level(logging.INFO, logger=duckdb_engine.__name__)
    with pytest.raises(WarehouseLockedError) as raised:
        DuckDBWarehouse._connect(holder.path)

    pid = f"PID {holder.process.pid}"
    message = str(raised.value)
    # the retries are 5 seconds apart by then: the last one is past the 300 seconds
    assert message.startswith(f"waited 301 seconds for the lock on {holder.path}: ")
    assert pid in message  # DuckDB's message: who holds the lock
    assert message.endswith("Close that process's connection to the warehouse, then clear the task")
    first, *progress = lock_lines(caplog)
    assert first.startswith(f"{holder.path} is locked by another process, waiting up to 300 ")
    assert pid in first
    # about every 30 seconds, and short
    assert len(progress) == 9
    assert all(
        line.startswith(f"still waiting for the lock on {holder.path} (") for line in progress
    )
    seconds = [int(line.rsplit("(", 1)[1].split()[0]) for line in progress]
    assert all(30 <= later - earlier <= 35 for earlier, later in pairwise(seconds))


def test_the_wait_ends_when_the_other_process_lets_go(holder, clock, caplog):
    caplog.set_level(logging.INFO, logger=duckdb_engine.__name__)
    started = clock.now

    def let_go_after_45_seconds(now):
        if now - started >= 45 and holder.process.poll() is None:
            holder.process.stdin.close()
            holder.process.wait()

    clock.on_sleep = let_go_after_45_seconds
    DuckDBWarehouse._connect(holder.path).close()

    first, progress = lock_lines(caplog)
    assert f"PID {holder.process.pid}" in first
    assert progress.startswith(f"still waiting for the lock on {holder.path} (3")
