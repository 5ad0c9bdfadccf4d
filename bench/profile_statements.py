"""Where the daily build's time goes, statement by statement (figures, never asserts).

    python bench/profile_statements.py --size 10000000      # after bench_build.py generated it

Loads the history of a size ``bench_build.py`` generated (its landing under
``<work>/n<size>/landing``) into a warehouse of its own, then runs the daily build on a copy and
prints every warehouse statement that took longer than ``--over`` seconds, slowest first, with
the step totals. DuckDB only; the landing extract (an in-memory DuckDB per file) is timed as a
step, not per statement.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_build  # noqa: E402  (bench/ on the path first)

from audience_profiles.warehouse import duckdb as duckdb_warehouse  # noqa: E402

TIMES: list[tuple[float, str]] = []


class TimedConnection:
    """The warehouse's connection, timing ``execute`` (scripts and single statements alike)."""

    def __init__(self, con, over: float):
        self._con, self._over = con, over

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            took = time.perf_counter() - started
            if took > self._over:
                text = getattr(sql, "query", sql)  # a parsed statement, or its text
                TIMES.append((took, " ".join(str(text).split())[:160]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/audience-profiles-bench"))
    parser.add_argument("--memory-limit", default="1536MB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--over", type=float, default=0.15, help="seconds a statement must take")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()

    landing = args.work / f"n{args.size}" / "landing"
    if not landing.is_dir():
        sys.exit(f"no landing at {landing}: run bench/bench_build.py --sizes {args.size} first")
    root = args.work / f"profile-n{args.size}"
    build = root / "build"  # bench_build's config reads <build>/../landing
    build.mkdir(parents=True, exist_ok=True)
    (root / "landing").unlink(missing_ok=True)
    (root / "landing").symlink_to(landing)
    loaded = build / "after_load.duckdb"
    child = {"work": str(build), "memory_limit": args.memory_limit, "threads": args.threads}
    if not loaded.exists():
        print(f"loading the history of {args.size:,} interactions (once) ...", flush=True)
        bench_build.child_load(child)
        shutil.copy(build / "warehouse.duckdb", loaded)
    shutil.copy(loaded, build / "warehouse.duckdb")
    shutil.rmtree(build / "work", ignore_errors=True)

    original_init = duckdb_warehouse.DuckDBWarehouse.__init__

    def timed_init(self, *a, **kw):
        original_init(self, *a, **kw)
        self.con = TimedConnection(self.con, args.over)

    duckdb_warehouse.DuckDBWarehouse.__init__ = timed_init
    started = time.perf_counter()
    result = bench_build.child_daily(child)
    total = time.perf_counter() - started
    steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["steps"].items())
    print(f"daily build {total:.1f} s ({steps})")
    for took, text in sorted(TIMES, reverse=True)[: args.top]:
        print(f"{took:7.2f}  {text}")
    print(f"statements over {args.over} s: {sum(t for t, _ in TIMES):.1f} s in all")


if __name__ == "__main__":
    main()
