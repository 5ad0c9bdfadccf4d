"""The ``audience-profiles`` command line: arguments are checked before anything is written."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from audience_profiles import cli
from audience_profiles.config import CONFIG_ENV
from audience_profiles.generate import data_dates
from tests.support import write_config


@pytest.fixture
def config(tmp_path, monkeypatch):
    config = write_config(tmp_path)  # start_date 2022-01-01
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    (tmp_path / "landing" / "interactions" / "date=2022-04-25").mkdir(parents=True)
    marker = tmp_path / "landing" / "interactions" / "date=2022-04-25" / "part-0.csv"
    marker.write_text("kept\n")
    return config


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The dates `run` hands to dag.test(), in order (the DAG itself is not run)."""
    dates: list[str] = []

    def test(logical_date, run_conf):
        dates.append(logical_date.date().isoformat())
        return SimpleNamespace(state="success")

    monkeypatch.setattr(cli, "_load_dag", lambda: SimpleNamespace(test=test))
    monkeypatch.setattr(cli, "_show", lambda args: 0)
    return dates


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--days", "0"],
        ["generate", "--interactions", "-5"],
        ["generate", "--start", "25/04/2022"],
        ["run", "--date", "2022-04-26T23:30"],
    ],
)
def test_bad_arguments_stop_before_anything_is_written(config, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert "argument" in capsys.readouterr().err
    # generate rewrites the landing folder: a bad argument must not have wiped it first
    part = Path(config.landing_root) / "interactions" / "date=2022-04-25" / "part-0.csv"
    assert part.read_text() == "kept\n"


@pytest.mark.parametrize(
    "command", [["run", "--date", "2022-04-25"], ["run"], ["generate"], ["show"]]
)
def test_a_mistake_in_pipeline_yml_is_one_line_naming_the_key_not_a_traceback(
    config, command, capsys
):
    """A typo deployed in pipeline.yml: the operator read the key to fix at the bottom of a
    Python traceback."""
    source = Path(config.source_file)
    source.write_text(source.read_text() + "quality: {min_profiles_kep: 0.5}\n")
    assert cli.main(command) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.strip() == (
        f"audience-profiles {command[0]}: {source}: quality.min_profiles_kep: unknown key "
        "'min_profiles_kep' (did you mean 'min_profiles_kept'?) in quality; valid keys: "
        "min_profiles_kept"
    )


def test_a_date_before_start_date_is_refused_not_reported_as_success(config, capsys):
    assert cli.main(["run", "--date", "2021-12-01"]) == 2
    assert "before start_date 2022-01-01" in capsys.readouterr().out


def test_a_date_after_tomorrow_is_refused(config, capsys):
    assert cli.main(["run", "--date", "2099-04-29"]) == 2
    assert "logical date 2099-04-29 is after tomorrow" in capsys.readouterr().out


def test_generate_refuses_a_url_landing_root(config, capsys):
    assert cli.main(["generate", "--out", "s3://fan-data/landing"]) == 2
    assert "local folders only" in capsys.readouterr().out


def test_generate_replaces_its_own_files_and_touches_no_other(config, capsys):
    # It removed the four source folders whole: files landed by hand went with them, and so
    # would a real landing the root pointed at (helper-119).
    root = Path(config.landing_root)
    by_hand = root / "interactions" / "date=2022-04-25" / "part-0.csv"  # the fixture's
    (by_hand.parent / "_SUCCESS").touch()  # a marker no run reads: not in the way
    args = ["generate", "--interactions", "300", "--days", "3", "--start", "2022-04-26"]
    # a file it did not write stops it, before it writes anything: a real landing, most likely
    before = sorted(root.rglob("*"))
    assert cli.main(args) == 2
    assert sorted(root.rglob("*")) == before
    assert (
        f"{root} holds 1 file(s) generate did not write (interactions/date=2022-04-25/part-0.csv)"
        ": pass --out a folder of its own, or --keep-others to write the sample beside them"
    ) in capsys.readouterr().err
    assert cli.main([*args, "--keep-others"]) == 0
    assert by_hand.read_text() == "kept\n"
    assert (
        f"warning: 1 file(s) under {root} that generate did not write are kept, and `run` reads "
        "them with the sample: interactions/date=2022-04-25/part-0.csv"
    ) in capsys.readouterr().out
    first = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert "interactions/date=2022-04-28/part-0.csv" in first
    # a shorter run: the last run's third day goes, the file landed by hand stays
    assert cli.main([*args[:-3], "1", "--start", "2022-04-26", "--keep-others"]) == 0
    assert by_hand.read_text() == "kept\n"
    assert not (root / "interactions" / "date=2022-04-28").exists()
    assert (root / "interactions" / "date=2022-04-26" / "part-0.csv").is_file()
    # one it would overwrite stops it always
    before = sorted(root.rglob("*"))
    assert cli.main(["generate", "--days", "2", "--keep-others"]) == 2  # from 2022-04-25
    assert sorted(root.rglob("*")) == before and by_hand.read_text() == "kept\n"
    assert (
        f"{root} holds 1 file(s) generate would overwrite and did not write "
        "(interactions/date=2022-04-25/part-0.csv): pass --out a folder of its own"
    ) in capsys.readouterr().err
    assert data_dates(config.landing_root) == [
        "2022-01-11",
        "2022-04-25",
        "2022-04-26",
        "2022-04-29",
    ]


def test_a_generate_cut_short_leaves_its_files_its_own(tmp_path, monkeypatch):
    # The list was written at the end: a run cut short left files the next run refused as not
    # its own (helper-120)
    from audience_profiles import generate as sample

    written = []

    def cut_short(con, df, path, fmt):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")

    options = sample.GenerateOptions(out=tmp_path, interactions=300, days=2)
    monkeypatch.setattr(sample, "_write", cut_short)
    with pytest.raises(KeyboardInterrupt):
        sample.generate(options)
    monkeypatch.undo()
    assert sample.generate(options)["interactions"] > 0
    assert sample.files_not_generated(tmp_path) == []


def test_running_one_date_names_the_earlier_dates_it_leaves_out(config, capsys):
    """One date on a fresh warehouse built profiles from that date alone, green, unremarked."""
    for ds in ("2022-04-26", "2022-04-27"):
        (Path(config.landing_root) / "interactions" / f"date={ds}").mkdir()
    assert cli.unbuilt_earlier_dates(config, ["2022-04-27"]) == ["2022-04-25", "2022-04-26"]
    assert cli.unbuilt_earlier_dates(config, ["2022-04-25", "2022-04-26"]) == []
    # a gap between the dates given is left out as much as a date before them
    assert cli.unbuilt_earlier_dates(config, ["2022-04-25", "2022-04-27"]) == ["2022-04-26"]


def test_a_date_loaded_but_not_published_is_not_named_as_left_out(config):
    # Validated, then stopped at its checks: its rows are in the source tables, so a later
    # date's profiles include them. The CLI named it (it counted published dates); the daily
    # run's warning, which counts loaded ones, did not.
    (Path(config.landing_root) / "interactions" / "date=2022-04-26").mkdir()
    Path(config.warehouse.path).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("CREATE TABLE landed_files AS SELECT DATE '2022-04-26' AS dt")
    assert cli.unbuilt_earlier_dates(config, ["2022-04-27"]) == ["2022-04-25"]


def test_a_table_of_another_schema_is_not_read_as_the_warehouse_s_own(config):
    # The tables were listed from every schema and then read unqualified: a landed_files in
    # another schema only failed the hint with a CatalogException.
    (Path(config.landing_root) / "interactions" / "date=2022-04-26").mkdir()
    Path(config.warehouse.path).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("CREATE SCHEMA other")
        con.execute("CREATE TABLE other.landed_files AS SELECT DATE '2022-04-26' AS dt")
    assert cli.unbuilt_earlier_dates(config, ["2022-04-27"]) == ["2022-04-25", "2022-04-26"]


def test_dates_run_in_date_order_whatever_order_they_are_given_in(config, ran):
    # Given 04-29 first, it ran first, built from its own partition alone, and became the
    # current state; the re-runs of the earlier dates after it never refreshed it.
    given = ["2022-04-27", "2022-04-25", "2022-04-26", "2022-04-25"]
    assert cli.main(["run", *(arg for ds in given for arg in ("--date", ds))]) == 0
    assert ran == ["2022-04-25", "2022-04-26", "2022-04-27"]


@pytest.mark.parametrize("restate", [False, True])
def test_restate_catalogue_is_the_daily_dag_s_param_in_every_date_s_run(
    config, monkeypatch, restate
):
    confs = []

    def test(logical_date, run_conf):
        confs.append((logical_date.date().isoformat(), run_conf))
        return SimpleNamespace(state="success")

    monkeypatch.setattr(cli, "_load_dag", lambda: SimpleNamespace(test=test))
    monkeypatch.setattr(cli, "_show", lambda args: 0)
    dates = ["2022-04-25", "2022-04-26"]
    argv = ["run", *(arg for ds in dates for arg in ("--date", ds))]
    assert cli.main(argv + ["--restate-catalogue"] * restate) == 0
    texts = {conf["restate_catalogue"] for _, conf in confs}
    assert [ds for ds, _ in confs] == dates and len(texts) == 1  # one restate for all its dates
    assert bool(texts.pop()) is restate


def test_the_dates_after_a_failed_one_are_not_run(config, monkeypatch, capsys):
    # They ran, built profiles without the failed date's rows and delivered them, green; only
    # a warning of the date left out and the exit code said so (helper-119).
    ran = []

    def test(logical_date, run_conf):
        ran.append(logical_date.date().isoformat())
        return SimpleNamespace(state="failed" if ran[-1] == "2022-04-26" else "success")

    monkeypatch.setattr(cli, "_load_dag", lambda: SimpleNamespace(test=test))
    dates = ["2022-04-25", "2022-04-26", "2022-04-27", "2022-04-28"]
    assert cli.main(["run", *(arg for ds in dates for arg in ("--date", ds))]) == 1
    assert ran == dates[:2]
    out = capsys.readouterr().out
    assert "audience_profiles 2022-04-26: failed in " in out
    assert "not run either, as they build on 2022-04-26: 2022-04-27, 2022-04-28" in out
    assert "failed dates: 2022-04-26, 2022-04-27, 2022-04-28" in out


def test_partitions_before_start_date_are_named_before_anything_runs(config, ran, capsys):
    (Path(config.landing_root) / "form_entries" / "date=2021-12-30").mkdir(parents=True)
    cli.main(["run", "--date", "2022-04-25"])
    assert (
        "warning: 1 landing partition(s) dated before start_date 2022-01-01 of "
        f"{config.source_file}, which no daily run reads: form_entries/date=2021-12-30"
    ) in capsys.readouterr().out


def test_run_without_dates_runs_the_dates_from_start_date_and_names_the_others(config, ran, capsys):
    # every landing date was taken, the one before start_date too, and the whole run refused
    (Path(config.landing_root) / "form_entries" / "date=2021-12-30").mkdir(parents=True)
    assert cli.main(["run"]) == 0
    assert ran == ["2022-04-25"]
    assert "which no daily run reads: form_entries/date=2021-12-30" in capsys.readouterr().out


def test_run_without_dates_names_the_landing_dates_when_all_are_before_start_date(
    config, ran, capsys
):
    # It said "no landing partitions: run `audience-profiles generate`", which would write sample
    # data into a landing that holds the operator's own partitions.
    (Path(config.landing_root) / "interactions" / "date=2022-04-25" / "part-0.csv").unlink()
    (Path(config.landing_root) / "interactions" / "date=2022-04-25").rmdir()
    (Path(config.landing_root) / "interactions" / "date=2021-12-30").mkdir()
    assert cli.main(["run"]) == 2
    assert ran == []
    out = capsys.readouterr().out
    assert "every landing date under" in out
    assert "before start_date 2022-01-01" in out
    assert "2021-12-30 (set start_date to 2021-12-30 to build them)" in out
    assert "generate" not in out


def test_a_date_whose_required_landing_is_missing_is_not_run_nor_waited_for(
    tmp_path, monkeypatch, ran, capsys
):
    # Under dag.test() the DAG's wait_for_landing held the command until the deadline (a day and
    # more for today's date), its output in a log file; SIGTERM did not stop it. The dates after
    # it are not built without it either.
    config = write_config(tmp_path, landing_wait={"required": ["interactions"]})
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    today = cli.dt.date.today()
    days = [(today - cli.dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    for ds in (days[0], days[2]):  # the middle day's interactions have not landed
        (tmp_path / "landing" / "interactions" / f"date={ds}").mkdir(parents=True)
        (tmp_path / "landing" / "interactions" / f"date={ds}" / "part-0.csv").write_text("date\n")
    assert cli.main(["run", *(arg for ds in days for arg in ("--date", ds))]) == 1
    assert ran == [days[0]]
    out = capsys.readouterr().out
    assert f"audience_profiles {days[1]}: not run: {days[1]}: the landing is not complete" in out
    folder = tmp_path / "landing" / "interactions" / f"date={days[1]}"
    assert f"interactions: {folder}: no data file in it yet" in out
    assert f"(audience-profiles run --date {days[1]}, then the dates after it)" in out
    assert f"not run either, as they build on {days[1]}: {days[2]}" in out
    assert f"failed dates: {days[1]}, {days[2]}" in out


def test_show_before_any_run_says_so(config, capsys):
    assert cli.main(["show"]) == 1
    assert "no warehouse yet" in capsys.readouterr().out


def test_a_second_run_at_once_is_refused_naming_the_first(config, monkeypatch, capsys):
    # Both shared one Airflow database: the second dag.test() of a date deleted the first's
    # DagRun, and the first failed with a database traceback.
    import fcntl
    import subprocess
    import sys

    ran = []
    monkeypatch.setattr(cli, "_load_dag", lambda: ran.append("loaded"))
    lock_file = Path(config.work_dir) / "cli-run.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    # the first run's task holds the warehouse open for writing (one process at a time)
    holding = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1]);"
        "con.execute('CREATE TABLE published_snapshots (dt DATE)'); print('open', flush=True);"
        "sys.stdin.read()"
    )
    with (
        lock_file.open("w") as held,
        subprocess.Popen(
            [sys.executable, "-c", holding, config.warehouse.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as task,
    ):
        assert task.stdout.readline().strip() == "open"
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        # refused before it looks at the warehouse: that failed with DuckDB's lock error
        assert cli.main(["run", "--date", "2022-04-25"]) == 2
        assert cli.main(["show"]) == 1
        task.stdin.close()
    assert ran == []
    out = capsys.readouterr().out
    assert "another `audience-profiles run` (pid 4242) is running on this project" in out
    assert "warehouse.duckdb is in use by a run: show it when the run is over" in out
    with cli._only_run(lock_file) as other:  # released with the first run
        assert other is None


SIGTERM_RUN = """
import os, signal, sys, time
from types import SimpleNamespace
import duckdb
from audience_profiles import cli

said = os.fdopen(os.dup(2), "w")  # the run sends the task's output to its log file

def test(logical_date, run_conf):
    # as Airflow does for each task dag.test() runs: a handler that lets the run go on
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    duckdb.connect().execute("SELECT 1")  # and DuckDB's threads, which could take the signal
    try:
        print("running", file=said, flush=True)  # in the try: the signal comes after it
        time.sleep(60)  # cut short, as a retry's wait must be
    except BaseException:
        if sys.argv[1] == "in a task":  # Airflow's task runner: the task failed, retry it
            time.sleep(60)
        raise
    print("not stopped", file=said, flush=True)
    return SimpleNamespace(state="success")

cli._load_dag = lambda: SimpleNamespace(test=test)
cli.STOP_GRACE_SECONDS = float(sys.argv[2])
if sys.argv[1] == "ignoring ctrl-c":  # a shell's background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:  # a terminal's foreground job, even where the suite itself runs with Ctrl-C ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
print("exit", cli.main(["run", "--date", "2022-04-25"]), file=said, flush=True)
"""


GRACE = cli.STOP_GRACE_SECONDS
# Where the run is to stop within the grace, a grace no loaded CI machine runs out of: at 5 s, a
# worker starved while it unwound was ended by the grace (no "exit 130"), once in CI.
UNHURRIED = 40


@pytest.mark.parametrize(
    ("where", "sent", "grace", "said", "code"),
    [
        ("between tasks", "SIGTERM", UNHURRIED, ["exit 130"], 0),  # Ctrl-C's way out
        # the KeyboardInterrupt taken for the task's failure: ended after the grace
        ("in a task", "SIGTERM", GRACE, [], 143),
        ("in a task", "SIGINT", GRACE, [], 130),  # Ctrl-C had to be pressed twice
        # Ctrl-C ignored (a shell's background job): SIGTERM still has its way out
        ("ignoring ctrl-c", "SIGTERM", UNHURRIED, ["exit 130"], 0),
    ],
)
def test_ctrl_c_and_sigterm_stop_a_run(config, where, sent, grace, said, code):
    # `timeout` and `kill` send SIGTERM: the run went on for minutes, retrying and writing the
    # warehouse (each task dag.test() runs installs Airflow's handler, which only calls on_kill).
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, CONFIG_ENV: config.source_file}
    with subprocess.Popen(
        [sys.executable, "-c", SIGTERM_RUN, where, str(grace)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        while run.stderr.readline().strip() != "running":  # past any warning printed before
            assert run.poll() is None, "the run ended before it started"
        started = time.monotonic()
        run.send_signal(getattr(signal, sent))
        out = run.stderr.read()
    took = time.monotonic() - started
    seen = f"exit status {run.returncode} after {took:.1f}s, its stderr:\n{out}"
    assert [
        line for line in out.splitlines() if line.startswith(("exit", "not stopped"))
    ] == said, seen
    assert run.returncode == code, seen
    # said on the terminal, not in the date's log file, where the run's output goes
    assert (f"stopped ({sent})" in out) == (code != 0), seen
    assert took < 30, seen  # neither the task's sleep (60 s) nor an unhurried grace sat out


def test_running_an_earlier_date_names_the_later_dates_built_before_it(config, ran, capsys):
    # Their profiles and the current tables leave out what the earlier date loads: unsaid, an
    # analyst backfilling an old date took the current tables as up to date.
    import duckdb

    with duckdb.connect(config.warehouse.path) as con:
        con.execute("CREATE TABLE published_snapshots (dt DATE)")
        con.execute("INSERT INTO published_snapshots VALUES ('2022-04-26'), ('2022-04-27')")
    assert cli.main(["run", "--date", "2022-04-25"]) == 0
    assert (
        "warning: 2 later date(s) already built in this warehouse (2022-04-26, 2022-04-27) do not "
        "include what these runs load: run them again after (`audience-profiles run --date "
        "2022-04-25 ... --date 2022-04-27` runs all in order)"
    ) in capsys.readouterr().out


def test_run_without_dates_on_an_s3_landing_asks_for_dates(tmp_path, monkeypatch, ran, capsys):
    # It said "no landing partitions: run `audience-profiles generate`", which refuses s3://.
    config = write_config(tmp_path, landing_root="s3://fan-data/landing")
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    assert cli.main(["run"]) == 2
    assert "pass --date for each date to run" in capsys.readouterr().out
    assert ran == []


def test_show_on_a_warehouse_without_a_published_date_says_so(config, capsys):
    # a warehouse whose runs all failed: show crashed on the missing published_snapshots
    import duckdb

    duckdb.connect(config.warehouse.path).close()
    assert cli.main(["show"]) == 1
    assert "no date published in" in capsys.readouterr().out


def test_show_on_a_file_that_is_no_warehouse_says_what_duckdb_says(config):
    # it said "in use by a run" for any error opening the file
    import duckdb

    Path(config.warehouse.path).write_text("not a database")
    with pytest.raises(duckdb.IOException, match="not a valid DuckDB database file"):
        cli.main(["show"])


def test_show_prints_the_same_rows_in_the_same_order_every_time(config, capsys):
    # It ordered by profile only: a profile's answers of one date came out in the table's
    # order, which a re-run of the same landing changed.
    con = duckdb.connect(config.warehouse.path)
    con.execute("CREATE TABLE published_snapshots AS SELECT DATE '2022-04-29' AS dt")
    con.execute("CREATE TABLE audience_profiles AS SELECT 1 AS interactions")
    con.execute(
        "CREATE TABLE audience_profile_interactions AS SELECT * FROM (VALUES "
        + ", ".join(
            f"('Ann', 'Lee', 'ann@example.com', DATE '2022-04-29', '{attribute}', 'x', 's', 'p')"
            for attribute in ("Poll C", "Poll A", "Poll B")
        )
        + ") t(first_name, last_name, email, interaction_date, attribute, option, session_id,"
        " profile_id)"
    )
    con.execute(
        "CREATE TABLE quarantine AS SELECT * FROM (VALUES ('interactions', 'option: x'),"
        " ('form_entries', 'email: x')) t(source, reason)"
    )
    con.close()
    assert cli.main(["show"]) == 0
    out = capsys.readouterr().out
    assert out.index("Poll A") < out.index("Poll B") < out.index("Poll C")
    assert out.index("form_entries") < out.index("interactions │")


def test_each_dates_report_line_is_printed_with_its_warnings(tmp_path):
    # The CLI printed only "success": a late landing, dates left out or a rules change were
    # said only in the log file and on the page.
    log = tmp_path / "dag-test-2022-04-29.log"
    line = (
        "run 2022-04-29 success: read 9 row(s) (interactions 9); quarantined 0; profiles 3 (3 new, "
        "0 merged away); delivered 3 row(s) (local_drop 3); landed after their date was built: "
        "interactions 2022-04-26 (1 file(s))"
    )
    log.write_text(
        "2026-12-01T11:05:43Z [info] run 2022-04-29 failed: read 0 row(s) (); report /x.html\n"
        f"2026-12-01T11:06:43Z [info     ] {line}; report /out/reports/2022-04-29.html [report]\n"
    )
    assert cli.report_line(log, "2022-04-29") == line  # the last try's
    # the log is appended to by every run of the date: one whose report did not run has none,
    # not the line of the run before it
    before = log.stat().st_size
    with log.open("a") as more:
        more.write("2026-12-02T09:00:00Z [error    ] Task failed\n")
    assert cli.report_line(log, "2022-04-29", before) is None
    assert cli.report_line(log, "2022-04-30") is None
    assert cli.report_line(tmp_path / "missing.log", "2022-04-29") is None


# a dag.test() log's failures as Airflow 3.3 writes them (cut short): an extract's, tried again,
# then a configuration error a task fails with at once, raised from the regular expression's
FAILURES_LOG = """\
2026-12-03T16:14:28.36Z [info     ] [DAG TEST] starting task_id=extract map_index=0 [dag] loc=dag.py:1501
2026-12-03T16:14:28.48Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
  File "/x/landing.py", line 990, in _stage_csv
    raise LandingError(
audience_profiles.landing.LandingError: /l/part-0.csv: missing required column(s) votes
2026-12-03T16:14:28.60Z [info     ] no alerts.webhook_conn_id in pipeline.yml: alert not sent
2026-12-03T16:14:28.61Z [info     ] Task instance state updated    [routes] new_state=up_for_retry rows_affected=1
2026-12-03T16:14:28.70Z [info     ] [DAG TEST] starting task_id=resolve_identities map_index=-1 [dag]
2026-12-03T16:14:29.48Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
re.error: missing ), unterminated subpattern at position 1

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
audience_profiles.config.ConfigError: /r/identity.yml: pattern 'a(b' is not a regular expression

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
airflow.sdk.exceptions.AirflowFailException: /r/identity.yml: pattern 'a(b' is not a regular expression
2026-12-03T16:14:29.61Z [info     ] Task instance state updated    [routes] new_state=failed rows_affected=1
2026-12-03T16:14:29.70Z [info     ] [DAG TEST] starting task_id=deliver map_index=0 [dag]
2026-12-03T16:14:29.80Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
PermissionError: [Errno 13] Permission denied: '/out/x'
2026-12-03T16:14:29.90Z [info     ] Task instance state updated    [routes] new_state=up_for_retry
"""


def test_each_task_failure_is_printed_as_it_happens_with_its_cause(config, monkeypatch, capfd):
    # Under dag.test() a failed task waits before each retry: the command said nothing for four
    # minutes, and the cause was only in the log (helper-119).
    seen_while_running = []

    def test(logical_date, run_conf):
        for line in FAILURES_LOG.splitlines(keepends=True):
            os.write(1, line.encode())  # file descriptor 1 is the date's log meanwhile
            if "up_for_retry" in line:  # told before the run goes on
                deadline = time.monotonic() + 10
                while "failed (try 1" not in "".join(seen_while_running):
                    assert time.monotonic() < deadline, "not printed while the run went on"
                    seen_while_running.append(capfd.readouterr().out)
                    time.sleep(0.05)
        return SimpleNamespace(state="failed")

    monkeypatch.setattr(cli, "_load_dag", lambda: SimpleNamespace(test=test))
    assert cli.main(["run", "--date", "2022-04-25"]) == 1
    out = "".join(seen_while_running) + capfd.readouterr().out
    assert (
        "  extract[interactions] failed (try 1, tried again after a wait): LandingError: "
        "/l/part-0.csv: missing required column(s) votes\n"
        "  resolve_identities failed (try 1): /r/identity.yml: pattern 'a(b' is not a regular "
        "expression\n"
        # a mapped delivery by its destination, as the run report names it
        "  deliver[local_drop] failed (try 1, tried again after a wait): PermissionError: "
        "[Errno 13] Permission denied: '/out/x'\n"
        "audience_profiles 2022-04-25: failed in "
    ) in out
    log = Path(config.work_dir) / "logs" / "dag-test-2022-04-25.log"
    assert log.read_text() == FAILURES_LOG


def test_a_long_error_is_cut_short_and_a_failure_without_its_state_is_still_told():
    reader = cli.FailureReader()
    for line in ["x [error] Task failed with exception", f"ValueError: {'v' * 500}"]:
        assert reader.feed(line) is None
    assert reader.flush() == f"  a task failed (try 1): ValueError: {'v' * 400}..."
    assert reader.flush() is None


def test_run_without_airflow_home_uses_the_projects_and_sets_its_database_up(
    tmp_path, monkeypatch, capsys
):
    # .venv/bin/audience-profiles run from a shell the Makefile did not set up: Airflow made
    # ~/airflow and failed on its empty database with a traceback (helper-119)
    import sqlite3
    import subprocess

    from audience_profiles.config import ConfigError

    for name in (
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "PROJECT_ROOT", tmp_path)
    database = tmp_path / ".airflow" / "airflow.db"
    migrated = []

    def migrate(argv, **kw):  # as airflow db migrate cut short: the file, not the version
        migrated.append(argv[-2:])
        sqlite3.connect(database).close()
        return SimpleNamespace(returncode=1)

    monkeypatch.setattr(subprocess, "run", migrate)
    with pytest.raises(ConfigError, match=r"setting up Airflow's database in .* failed: see "):
        cli._default_airflow_env(tmp_path)
    assert os.environ["AIRFLOW_HOME"] == str(tmp_path / ".airflow")
    assert os.environ["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert "AIRFLOW_HOME is not set: using" in capsys.readouterr().out
    # a set-up cut short is done again; a whole one is not
    monkeypatch.delenv("AIRFLOW_HOME")
    with pytest.raises(ConfigError):
        cli._default_airflow_env(tmp_path)
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR)")
        con.execute("INSERT INTO alembic_version VALUES ('29ce7909c52b')")
    monkeypatch.delenv("AIRFLOW_HOME")
    cli._default_airflow_env(tmp_path)
    assert migrated == [["db", "migrate"]] * 2
    # and a home that is given is left alone
    monkeypatch.setenv("AIRFLOW_HOME", "/elsewhere")
    cli._default_airflow_env(tmp_path)
    assert os.environ["AIRFLOW_HOME"] == "/elsewhere" and len(migrated) == 2


def test_the_warehouse_is_named_as_its_engine_knows_it():
    """On Snowflake, run and show printed DuckDB's default file, which was not in use."""
    from audience_profiles.config import WarehouseConfig

    duck = WarehouseConfig(engine="duckdb", path="/data/wh.duckdb")
    assert cli.warehouse_name(duck) == "/data/wh.duckdb"
    snow = WarehouseConfig(engine="snowflake", conn_id="sf", database="analytics", schema="build")
    assert cli.warehouse_name(snow) == "snowflake ANALYTICS.BUILD"
    unnamed = WarehouseConfig(engine="snowflake", conn_id="sf")
    assert cli.warehouse_name(unnamed) == "snowflake (the connection's database).MAIN"


def test_run_in_an_airflow_home_never_set_up_names_the_command_that_sets_it_up(
    config, tmp_path, monkeypatch, capsys
):
    # `eval "$(make -s env)"` in a new checkout (or after `make clean`), then `run --date`: the
    # home given is left alone, and dag.test() failed on its empty database with a traceback
    # ending `no such table: task_instance` (drilled).
    import sqlite3

    import sqlalchemy.exc

    database = tmp_path / "home" / "airflow.db"
    database.parent.mkdir()
    sqlite3.connect(database).close()  # what Airflow leaves when it only opened it
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{database}")

    def test(logical_date, run_conf):
        raise sqlalchemy.exc.OperationalError("SELECT ...", {}, "no such table: task_instance")

    monkeypatch.setattr(cli, "_load_dag", lambda: SimpleNamespace(test=test))
    assert cli.main(["run", "--date", "2022-04-25"]) == 2
    assert "is not set up: run `airflow db migrate`" in capsys.readouterr().err
    with sqlite3.connect(database) as con:  # what airflow db migrate records last
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR)")
        con.execute("INSERT INTO alembic_version VALUES ('29ce7909c52b')")
    with pytest.raises(sqlalchemy.exc.OperationalError):  # another cause: its own error
        cli.main(["run", "--date", "2022-04-25"])
