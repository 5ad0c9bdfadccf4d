"""``audience-profiles``: sample data, and running dates without a scheduler.

audience-profiles generate [--interactions N] [--days D] [--start YYYY-MM-DD] [--seed S]
                           [--keep-others] [--out FOLDER]
audience-profiles run [--date D ...] [--restate-catalogue]  # the daily DAG via dag.test()
audience-profiles show                      # where the outputs are, and a few profile rows
audience-profiles compact                   # copy the DuckDB warehouse without its freed space
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from audience_profiles.config import PROJECT_ROOT, load_config

DAG_FILE = PROJECT_ROOT / "dags" / "audience_profiles.py"
STOP_GRACE_SECONDS = 5  # for Ctrl-C's way out, before Ctrl-C or SIGTERM ends the process


def _iso_date(text: str) -> str:
    """argparse type: a calendar date written YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text).isoformat() if len(text) == 10 else _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str):
    raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD")


def _at_least(minimum: int):
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least {minimum}")
        return value

    return whole


def _generate(args: argparse.Namespace) -> int:
    from audience_profiles.generate import GenerateOptions, files_not_generated, generate
    from audience_profiles.landing import some_names

    config = load_config()
    root = args.out or config.landing_root
    if "://" in str(root):
        # Path("s3://bucket/x") is the local folder ./s3:/bucket/x: generated there, it would
        # look like success and the next `run` would read the bucket instead.
        print(f"generate writes local folders only, not {root}: pass --out a local folder")
        return 2
    if dt.date.fromisoformat(args.start) < config.start_date:
        print(
            f"warning: --start {args.start} is before start_date {config.start_date} of "
            f"{config.source_file}: the daily DAG has no runs for the dates before it (each "
            "run's report lists their partitions)"
        )
    out = Path(root)
    started = time.monotonic()
    counts = generate(
        GenerateOptions(
            out=out,
            start=dt.date.fromisoformat(args.start),
            days=args.days,
            interactions=args.interactions,
            seed=args.seed,
            keep_others=args.keep_others,
        )
    )
    print(f"generated {counts} under {out} in {time.monotonic() - started:.1f}s")
    others = files_not_generated(out)
    if others:  # --keep-others
        print(
            f"warning: {len(others)} file(s) under {out} that generate did not write are kept, "
            f"and `run` reads them with the sample: {some_names(others)}"
        )
    return 0


def _load_dag():
    """Import the daily DAG from its file (dags/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("audience_profiles_dag_file", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.audience_profiles()
    # Runs through dag.test() never reach a scheduler, so no deadline could be missed; and
    # Airflow 3.3.2's dag.test() fails a successful run of a DAG with one (docs/operations.md).
    dag.deadline = None
    return dag


def _default_airflow_env(log_dir: Path) -> None:
    """The Makefile's Airflow settings (the project's ``.airflow`` home, its dags and plugins),
    for a command started without them, such as ``.venv/bin/audience-profiles run`` from a shell
    the Makefile did not set up: Airflow made ``~/airflow`` and failed on its empty database with
    a traceback. That home's database is set up until it is whole (a set-up cut short is done
    again). A home given is left alone."""
    if "AIRFLOW_HOME" in os.environ:
        return
    home = PROJECT_ROOT / ".airflow"
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    if _migrated(home / "airflow.db") or "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in os.environ:
        return
    import subprocess

    from audience_profiles.config import ConfigError

    print(f"AIRFLOW_HOME is not set: using {home}, setting up its database", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "airflow-db-migrate.log"
    with log_file.open("ab") as log:
        migrate = [sys.executable, "-m", "airflow", "db", "migrate"]
        if subprocess.run(migrate, stdout=log, stderr=log).returncode:
            raise ConfigError(f"setting up Airflow's database in {home} failed: see {log_file}")


def _airflow_database_problem() -> str | None:
    """Why dag.test() failed, when the Airflow home given (``eval "$(make -s env)"`` in a new
    checkout, or after ``make clean``) has a SQLite database ``airflow db migrate`` has not set
    up: it failed with a traceback ending ``no such table: task_instance``. A home given is not
    set up here (:func:`_default_airflow_env`); other databases are not looked at."""
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    if not url.startswith("sqlite:///"):
        return None
    database = Path(url.removeprefix("sqlite:///").split("?")[0])
    if _migrated(database):
        return None
    return (
        f"Airflow's database {database} (AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}) is not "
        "set up: run `airflow db migrate` in this shell first, or start `run` without "
        "AIRFLOW_HOME, to use the project's .airflow, which it sets up itself"
    )


def _migrated(database: Path) -> bool:
    """Whether the SQLite file is a whole Airflow database: ``airflow db migrate`` creates the
    file first and records the schema's version (``alembic_version``) last."""
    import sqlite3

    if not database.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as con:
            return bool(con.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


def _run(args: argparse.Namespace) -> int:
    config = load_config()
    log_dir = Path(config.work_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # first: the checks below read the warehouse, which a run going on holds open
    with _only_run(Path(config.work_dir) / "cli-run.lock", "run") as other:
        if other:
            print(f"another {other} is running on this project: wait for it to finish")
            return 2
        return _run_checked(args, config, log_dir)


def _run_checked(args: argparse.Namespace, config, log_dir: Path) -> int:
    """Check the dates ``args`` asks for, warn about what they leave out, and run them."""
    from audience_profiles.generate import data_dates
    from audience_profiles.landing import some_names
    from audience_profiles.pipeline import future_date_problem

    if not args.date and config.landing_root.startswith("s3://"):
        print(
            f"run without --date lists a local landing only, not {config.landing_root}: pass "
            "--date for each date to run"
        )
        return 2
    # In date order, whatever order they were given in: each date's profiles build on every
    # partition loaded before it, and a later date run first is not refreshed by the earlier ones.
    dates = sorted(set(args.date)) if args.date else data_dates(config.landing_root)
    if not args.date:
        landed = dates
        # every landing date the daily DAG runs: partitions before start_date are named below
        dates = [ds for ds in landed if dt.date.fromisoformat(ds) >= config.start_date]
        if landed and not dates:
            print(
                f"every landing date under {config.landing_root} is before start_date "
                f"{config.start_date} of {config.source_file}, which the daily DAG does not run: "
                f"{some_names(landed)} (set start_date to {landed[0]} to build them)"
            )
            return 2
    if not dates:
        print(
            f"no landing partitions under {config.landing_root}: run `audience-profiles generate`"
        )
        return 1
    early = [ds for ds in dates if dt.date.fromisoformat(ds) < config.start_date]
    if early:
        # dag.test() of a date before the DAG's start_date runs no task and reports success.
        print(
            f"date(s) before start_date {config.start_date} of {config.source_file}, which the "
            f"daily DAG does not run: {', '.join(early)}"
        )
        return 2
    future = [problem for ds in dates if (problem := future_date_problem(ds))]
    if future:
        print("\n".join(future))
        return 2
    unbuilt = unbuilt_earlier_dates(config, dates)
    if unbuilt:
        # Green either way: the run is right for what is loaded, which is not everything.
        print(
            f"warning: {len(unbuilt)} earlier landing date(s) not built in this warehouse "
            f"({some_names(unbuilt)}): a date's "
            "profiles read every partition loaded up to it, so theirs are left out. Run them "
            "first (`audience-profiles run` runs every date in order)."
        )
    stale = [ds for ds in warehouse_dates(config) if ds > max(dates)]
    if stale:
        # Their profiles and the current tables (which an older date never rolls back) leave out
        # what these runs load, until they are run again.
        print(
            f"warning: {len(stale)} later date(s) already built in this warehouse "
            f"({some_names(stale)}) do not include what these runs load: run them again after "
            f"(`audience-profiles run --date {dates[0]} ... --date {stale[-1]}` runs all in order)"
        )
    unread = partitions_before_start_date(config)
    if unread:
        print(
            f"warning: {len(unread)} landing partition(s) dated before start_date "
            f"{config.start_date} of {config.source_file}, which no daily run reads: "
            f"{some_names(unread)} (set start_date to the "
            "first of them to build them)"
        )
    _default_airflow_env(log_dir)  # once the dates are known to be runnable
    # the daily DAG's param: a text new to every date, so that the restate applies (once)
    restate = f"run {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}" if args.restate_catalogue else ""
    failed = _run_dates(config, dates, log_dir, {"restate_catalogue": restate})
    if failed:
        print(f"failed dates: {', '.join(failed)}")
        return 1
    return _show(args)


def _run_dates(config, dates: list[str], log_dir: Path, run_conf: dict) -> list[str]:
    """Run the daily DAG for each of ``dates`` in turn, up to the first that cannot run or
    fails; the dates that failed or did not run. The dates after such a one are not run: each
    builds on every date before it, and dag.test() has no run of that one to hold them, as a
    scheduler's depends_on_past would (they built and delivered profiles without its rows,
    green). ``run_conf``: the daily DAG's params, as a trigger's config sets them."""
    with _output_to(log_dir / "dag-test.log"):
        dag = _load_dag()
    mapped = _mapped_names(config)
    for i, ds in enumerate(dates):
        not_landed = _landing_problem(config, ds)
        if not_landed:
            print(f"audience_profiles {ds}: not run: {not_landed}", flush=True)
        elif _run_date(dag, ds, log_dir, mapped, run_conf):
            continue
        later = dates[i + 1 :]
        if later:
            print(f"not run either, as they build on {ds}: {', '.join(later)}", flush=True)
        return [ds, *later]
    return []


def _mapped_names(config) -> dict[str, Sequence[str]]:
    """The names of the daily DAG's mapped tasks' indexes: its sources, and the destinations its
    ``destinations`` task maps deliveries over (the same config's, in its order)."""
    from audience_profiles.dag_defaults import EXTRACT_SOURCES

    return {
        "extract": EXTRACT_SOURCES,
        "deliver": [d.name for d in config.enabled_destinations],
    }


def _run_date(
    dag, ds: str, log_dir: Path, mapped: dict[str, Sequence[str]], run_conf: dict
) -> bool:
    """Run the daily DAG for ``ds`` with dag.test(), its output to the date's log; print its
    state and report line (and, as they happen, its tasks' failures). Whether it succeeded."""
    started = time.monotonic()
    day = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    log_file = log_dir / f"dag-test-{ds}.log"
    offset = log_file.stat().st_size if log_file.exists() else 0  # appended to: this run's
    with (
        _output_to(log_file) as terminal,
        _failures_shown(log_file, offset, terminal, FailureReader(mapped)),
    ):
        try:
            run = dag.test(logical_date=day, run_conf=run_conf)
        except Exception as exc:
            problem = _airflow_database_problem()
            if problem:
                from audience_profiles.config import ConfigError

                raise ConfigError(problem) from exc
            raise
    state = str(getattr(run, "state", "unknown"))
    print(
        f"audience_profiles {ds}: {state} in {time.monotonic() - started:.1f}s  (log: {log_file})",
        flush=True,
    )
    summary = report_line(log_file, ds, offset)
    if summary:  # its warnings (late landings, dates left out, rules changed) too
        print(f"  {summary}", flush=True)
    return "success" in state


class FailureReader:
    """Reads a dag.test() log line by line and tells each task failure it records: the task,
    its try, whether it is tried again, and the error: the line that ends its traceback, the
    last exception's (an error the project raises ``from`` another names the file; one a task
    fails at once with, ``AirflowFailException``, carries its cause's message)."""

    STARTING = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
    # "package.module.LandingError: message", or a bare "KeyError": a dotted name or one of an
    # exception's endings, at the line's start (log lines start with their time, code lines
    # of the traceback with spaces)
    ERROR = re.compile(
        r"^(?:[A-Za-z_]\w*\.)*("
        r"(?<=\.)[A-Za-z_]\w*|[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Failure|Timeout)"
        r")(?:: (.*)|$)"
    )
    WRAPPER = "AirflowFailException"  # (dag_defaults.fails_fast): its message is the cause's
    SHOWN_CHARACTERS = 400

    def __init__(self, mapped: dict[str, Sequence[str]] | None = None) -> None:
        """``mapped``: the names of a mapped task's map indexes, as the run report gives them
        (``extract[interactions]``, ``deliver[local_drop]``); other indexes show as numbers."""
        self.mapped = mapped or {}
        self.task = "a task"
        self.tries: dict[str, int] = {}
        self.in_traceback = False
        self.error: str | None = None  # read, waiting for the task's new state

    def feed(self, line: str) -> str | None:
        """The failure ``line`` completes, as the command prints it; None for any other line."""
        if self.error and (state := re.search(r"new_state=(\w+)", line)):
            return self.flush(retried=state.group(1) == "up_for_retry")
        if started := self.STARTING.search(line):
            task, index = started.groups()
            if index != "-1":
                names = self.mapped.get(task, ())
                task += f"[{names[int(index)] if int(index) < len(names) else index}]"
            self.task = task
        elif "Task failed with exception" in line:
            self.in_traceback = True
            self.tries[self.task] = self.tries.get(self.task, 0) + 1
        elif self.in_traceback and (error := self.ERROR.match(line.rstrip())):
            kind, message = error.groups()  # a later one (chained exceptions) replaces it
            if message and len(message) > self.SHOWN_CHARACTERS:
                message = message[: self.SHOWN_CHARACTERS] + "..."
            if kind == self.WRAPPER and message:
                self.error = message
            else:
                self.error = kind + (f": {message}" if message else "")
        return None

    def flush(self, retried: bool = False) -> str | None:
        """The failure read last, if not told yet."""
        error, self.error, self.in_traceback = self.error, None, False
        if error is None:
            return None
        again = ", tried again after a wait" if retried else ""
        return f"  {self.task} failed (try {self.tries[self.task]}{again}): {error}"


@contextlib.contextmanager
def _failures_shown(log_file: Path, offset: int, terminal, reader: FailureReader):
    """While a date runs, print each task failure its log records as it is logged. Under
    dag.test() a failed task waits 20 s, 40 s, then 80 s before each of its retries: the
    command said nothing for four minutes, and the cause was only in the log."""
    import threading

    done = threading.Event()

    def follow() -> None:
        pending = b""
        with log_file.open("rb") as log:
            log.seek(offset)
            while True:
                last = done.is_set()  # read once more after the run ended
                *lines, pending = (pending + log.read()).split(b"\n")
                for line in lines:
                    if shown := reader.feed(line.decode("utf-8", "replace")):
                        print(shown, file=terminal, flush=True)
                if last:
                    if shown := reader.flush():
                        print(shown, file=terminal, flush=True)
                    return
                done.wait(0.5)

    follower = threading.Thread(target=follow, name="failures-shown", daemon=True)
    follower.start()
    try:
        yield
    finally:
        done.set()
        follower.join()


def report_line(log_file: Path, ds: str, offset: int = 0) -> str | None:
    """The run report's summary line for ``ds`` in a date's log from byte ``offset`` on (the
    last, if tried again), without the page's path; None when the report did not run. Printed
    after each date: the warnings it carries were otherwise only in the log and on the page. The
    log is appended to by every run of the date: read from where this run's output starts, an
    earlier run's line is not taken for this one's."""
    pattern = re.compile(rf"(run {re.escape(ds)} \w+: .*); report ")
    found = None
    with contextlib.suppress(OSError), log_file.open("rb") as raw:
        raw.seek(offset)
        log = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        for line in log:
            if match := pattern.search(line):
                found = match.group(1)
    return found


@contextlib.contextmanager
def _only_run(lock_file: Path, command: str = "run"):
    """Hold ``lock_file`` while the block runs, for ``command``. Yields the command holding it
    already, with its pid (```audience-profiles run` (pid 4242)``: the block must then not run),
    else None.

    Two runs at once shared one Airflow database: the second ``dag.test()`` of a date deleted the
    first's DagRun, which failed with a database traceback. A compaction and a run at once: the
    run waited for the warehouse's lock, and was told of "another run" if it was the second."""
    import fcntl

    with lock_file.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid, _, held_for = lock.read().strip().partition(" ")
            yield f"`audience-profiles {held_for or 'run'}` (pid {pid or 'unknown'})"
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()} {command}")
        lock.flush()
        try:
            yield None
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _stoppable():
    """While the block runs, Ctrl-C and SIGTERM stop the command: as Ctrl-C always did
    (KeyboardInterrupt) if that stops it within ``STOP_GRACE_SECONDS``, else at once (exit 130
    or 143, as the signal's default). Neither stopped a run that was in a task: ``timeout`` and
    ``kill`` left it going for minutes, retrying and writing the warehouse, and Ctrl-C had to be
    pressed twice.

    A handler is not enough: each task ``dag.test()`` runs installs Airflow's own for SIGTERM,
    which only calls the operator's ``on_kill``, and the task runner takes a KeyboardInterrupt in
    a task for the task's failure and retries it. So both signals are blocked here, before any
    other thread starts (DuckDB's would take them otherwise), and a thread of its own waits for
    them (``sigtimedwait``): it raises KeyboardInterrupt in the main thread through SIGUSR1
    (which also cuts short a sleep, such as the wait before a retry), and ends the process when
    the block has not ended by the deadline, or on a second signal. Ctrl-C stays ignored where
    it was (a shell's background job)."""
    import signal
    import threading

    watched = {signal.SIGTERM}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        watched.add(signal.SIGINT)
    done, stopped = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    # the terminal's stderr: while dag.test() runs, file descriptor 2 is the date's log file
    terminal = os.fdopen(os.dup(2), "w")

    def watch() -> None:
        while not done.is_set():
            if (first := signal.sigtimedwait(watched, 0.2)) is not None:
                break
        else:
            return
        stopped.set()
        signal.pthread_kill(main, signal.SIGUSR1)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            if signal.sigtimedwait(watched, 0.2) is not None:
                break  # a second one: no more waiting
        if not done.is_set():
            name = signal.Signals(first.si_signo).name
            print(f"\nstopped ({name}): what was running is unfinished", file=terminal, flush=True)
            os._exit(128 + first.si_signo)  # the lock goes with the process

    previous = signal.signal(signal.SIGUSR1, signal.default_int_handler)
    # before the thread starts: it, and every thread started from here on, has them blocked
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    watcher = threading.Thread(target=watch, name="stop-on-signal", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        terminal.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        signal.signal(signal.SIGUSR1, previous)
    if stopped.is_set():  # it ended within the grace: still stopped, not done
        raise KeyboardInterrupt


def _landing_problem(config, ds: str) -> str | None:
    """Why ``ds``'s landing is not ready to run (``landing_wait.required``), or None. Checked
    here, without waiting: under dag.test() the DAG's wait_for_landing would hold the command
    until its deadline, a day and more for a recent date."""
    from audience_profiles.landing import LandingError
    from audience_profiles.pipeline import RunWindow, landing_gaps, landing_missing

    window = RunWindow.for_date(ds)
    try:
        gaps = landing_gaps(window, config)
    except LandingError as exc:
        return str(exc)
    again = f"audience-profiles run --date {ds}, then the dates after it"
    return str(landing_missing(window, gaps, config, again)) if gaps else None


def unbuilt_earlier_dates(config, dates: list[str]) -> list[str]:
    """Landing dates before the last of ``dates``, and not among them, that no run has loaded
    in this (DuckDB) warehouse (``pipeline.loaded_dates``, as the daily run's warning counts
    them): a run of ``dates`` alone would build profiles without their rows (``--date 04-27
    --date 04-29`` leaves out 04-28 as much as 04-26)."""
    from audience_profiles.generate import data_dates

    if config.warehouse.engine != "duckdb" or config.landing_root.startswith("s3://"):
        return []  # not looked at: a remote listing or warehouse is more than a hint is worth
    start = config.start_date.isoformat()  # the daily DAG runs none before it
    earlier = [
        ds for ds in data_dates(config.landing_root) if start <= ds < max(dates) and ds not in dates
    ]
    loaded = warehouse_loaded_dates(config, max(dates)) if earlier else set()
    return [] if loaded is None else [ds for ds in earlier if ds not in loaded]


def warehouse_loaded_dates(config, before: str) -> set[str] | None:
    """``pipeline.loaded_dates`` of the pipeline's DuckDB warehouse; None (not known) while a
    scheduled run holds it: a hint is not worth waiting for."""
    if not Path(config.warehouse.path).exists():
        return set()
    import duckdb

    from audience_profiles.pipeline import loaded_dates
    from audience_profiles.warehouse.duckdb import DuckDBWarehouse

    try:
        with duckdb.connect(config.warehouse.path, read_only=True) as con:
            tables = {
                name
                for (name,) in con.execute(
                    # the home schema's own, as Warehouse.table_names: the queries name them
                    # unqualified, and a run's or the stream's schema may hold tables so named
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = ? AND table_type = 'BASE TABLE'",
                    [DuckDBWarehouse.home_schema],
                ).fetchall()
            }
            return loaded_dates(lambda sql: con.execute(sql).fetchall(), tables, before)
    except duckdb.IOException:
        return None


def published_dates(con) -> list[str]:
    """The dates a run has published in the DuckDB warehouse ``con`` reads, in order."""
    if not con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'published_snapshots'"
    ).fetchone()[0]:
        return []
    rows = con.execute("SELECT DISTINCT CAST(dt AS VARCHAR) FROM published_snapshots ORDER BY 1")
    return [r[0] for r in rows.fetchall()]


def warehouse_dates(config) -> list[str]:
    """:func:`published_dates` of the pipeline's warehouse, for the warnings before a run: none
    for another engine's (more than a hint is worth), nor while a scheduled run holds it."""
    if config.warehouse.engine != "duckdb" or not Path(config.warehouse.path).exists():
        return []
    import duckdb

    try:
        with duckdb.connect(config.warehouse.path, read_only=True) as con:
            return published_dates(con)
    except duckdb.IOException:
        return []


def partitions_before_start_date(config) -> list[str]:
    """``source/date=...`` of the local landing's partitions dated before ``start_date``, which
    no daily run reads (each run's report names them too)."""
    from audience_profiles import landing

    if config.landing_root.startswith("s3://"):
        return []  # each run's extract lists them; not worth a listing here
    found = []
    for source in landing.SOURCES.values():
        if source.partitioned:
            start = config.start_date.isoformat()
            _, names = landing.partitions_before(config.landing_root, source, start, None)
            found += [f"{source.name}/{name}" for name in names]
    return found


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (Airflow's task logs included) to ``path``; yields
    the terminal's stdout, for what is to be seen meanwhile.

    Redirected at the file-descriptor level, because Airflow's loggers keep their own handle on
    the original streams.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log, os.fdopen(os.dup(saved[0]), "w") as terminal:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def warehouse_name(warehouse) -> str:
    """Where the tables are: the DuckDB file, or Snowflake's database and schema."""
    if warehouse.engine == "duckdb":
        return str(warehouse.path)
    database = (warehouse.database or "").upper() or "(the connection's database)"
    return f"{warehouse.engine} {database}.{warehouse.schema.upper()}"


def _compact(args: argparse.Namespace) -> int:
    from audience_profiles.warehouse.compact import CompactionError, compact
    from audience_profiles.warehouse.duckdb import WarehouseLockedError

    config = load_config()
    if config.warehouse.engine != "duckdb":
        print(
            f"compact is for the DuckDB warehouse; {warehouse_name(config.warehouse)} is on "
            "Snowflake, which manages its own storage (its Time Travel: docs/privacy.md)"
        )
        return 2
    Path(config.work_dir).mkdir(parents=True, exist_ok=True)
    with _only_run(Path(config.work_dir) / "cli-run.lock", "compact") as other:
        if other:
            print(f"another {other} is running on this project: wait for it to finish")
            return 2
        try:
            done = compact(config.warehouse)
        except (FileNotFoundError, WarehouseLockedError, CompactionError) as exc:
            print(f"not compacted: {exc}")
            return 1
    mib = 1024 * 1024
    print(
        f"compacted {done.path}: {done.bytes_before / mib:.1f} MiB -> {done.bytes_after / mib:.1f} "
        f"MiB ({done.tables} tables, {done.rows:,} rows, each checked against the old file)"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    import duckdb

    config = load_config()
    print(f"\nwarehouse: {warehouse_name(config.warehouse)}")
    for dest in config.enabled_destinations:
        where = (
            dest.options.get("path")
            or dest.options.get("bucket")
            or dest.options.get("container")
            or ""
        )
        print(f"destination {dest.name} ({dest.kind}): {where}")
    if config.warehouse.engine != "duckdb":
        return 0
    if not Path(config.warehouse.path).exists():
        print(f"no warehouse yet at {config.warehouse.path}: run `audience-profiles run` first")
        return 1
    try:
        con = duckdb.connect(config.warehouse.path, read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        # DuckDB: one writing process, and then no reader beside it
        print(f"{config.warehouse.path} is in use by a run: show it when the run is over")
        return 1
    published = published_dates(con)
    if not published:  # a warehouse whose runs all failed has no output tables
        con.close()
        print(f"no date published in {config.warehouse.path} yet: run `audience-profiles run`")
        return 1
    try:
        latest = published[-1]
        profiles = con.execute(
            "SELECT count(*), coalesce(sum(interactions), 0) FROM audience_profiles"
        ).fetchall()[0]
        print(
            f"\nlatest published date {latest}: {profiles[0]} profiles, {profiles[1]} attributed interactions"
        )
        print("\naudience_profile_interactions (the seed's worked example first):")
        con.sql(
            "SELECT first_name, last_name, email, interaction_date, attribute, option "
            "FROM audience_profile_interactions "
            "ORDER BY (session_id = 'e298a949-fa5a-4fae-b4bb-f468cb185dd9') DESC, interaction_date DESC, "
            "profile_id, attribute, option "  # a total order: the same rows every time
            "LIMIT 8"
        ).show(max_width=160)
        print("quarantine by source and reason field:")
        con.sql(
            "SELECT source, split_part(reason, ':', 1) AS field, count(*) AS rows FROM quarantine "
            "GROUP BY ALL ORDER BY rows DESC, source, field"
        ).show()
    finally:
        con.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audience-profiles", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="write deterministic sample data to the landing root",
        description="Write deterministic sample data to the landing root: --days days of "
        "interactions, form entries and SSO links from --start, the element catalogue, and "
        "always the seed's worked example (its form entry of 2022-01-11 and its vote of "
        "2022-04-29, whatever the dates asked for). It replaces the files it wrote the last "
        "time. Other files in the landing's source folders stop it, unless --keep-others; one "
        "it would overwrite stops it always.",
    )
    gen.add_argument("--out", help="landing root (default: landing_root of pipeline.yml)")
    gen.add_argument(
        "--interactions",
        type=_at_least(0),
        default=20_000,
        help="interactions over all days (default: %(default)s)",
    )
    gen.add_argument(
        "--days", type=_at_least(1), default=7, help="days of data (default: %(default)s)"
    )
    gen.add_argument(
        "--start", type=_iso_date, default="2022-04-25", help="the first day (default: %(default)s)"
    )
    gen.add_argument(
        "--seed",
        type=_at_least(0),
        default=42,
        help="the same seed and options give the same files (default: %(default)s)",
    )
    gen.add_argument(
        "--keep-others",
        action="store_true",
        help="write the sample beside files generate did not write (runs read both)",
    )
    gen.set_defaults(func=_generate)
    run = sub.add_parser("run", help="run the daily DAG with dag.test() for each landing date")
    run.add_argument(
        "--date",
        action="append",
        type=_iso_date,
        help="a logical date YYYY-MM-DD (repeatable; run in date order); default: every landing "
        "date from start_date",
    )
    run.add_argument(
        "--restate-catalogue",
        action="store_true",
        help="give its dates the element catalogue landed now, and the dates after them too "
        "once they run again, instead of the titles each date had (a typo fixed for earlier "
        "dates: docs/operations.md, 'Re-running a date')",
    )
    run.set_defaults(func=_run)
    show = sub.add_parser("show", help="print where outputs are and a few profile rows")
    show.set_defaults(func=_show)
    compact = sub.add_parser(
        "compact",
        help="copy the DuckDB warehouse into a new file that holds only what SQL sees: not the "
        "space deleted rows left, nor an erased person's values in it (docs/privacy.md)",
    )
    compact.set_defaults(func=_compact)
    args = parser.parse_args(argv)
    from audience_profiles.config import ConfigError

    try:
        with _stoppable():
            return args.func(args)
    except ConfigError as exc:
        # it names the file and the key: a traceback above it only hid the line to fix
        print(f"audience-profiles {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: what `{args.command}` was doing is unfinished; run it again")
        return 130


if __name__ == "__main__":
    sys.exit(main())
