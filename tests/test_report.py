"""The run report: one ``pipeline_runs`` row per run with counts that match the data, a
self-contained HTML page with plots, and what a failed quality gate leaves behind."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path

import duckdb
import pytest

from audience_profiles import report
from audience_profiles.config import CONFIG_ENV, DEFAULT_DROP_PATH, resolve_path
from audience_profiles.generate import GenerateOptions, generate
from audience_profiles.pipeline import RunWindow, run_all
from tests.support import load_daily_dag, write_config, write_seed_example

DATES = ("2022-04-25", "2022-04-26")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    config = write_config(root)
    generate(GenerateOptions(out=root / "landing", interactions=600, days=2, dirty_rate=0.02))
    results = {ds: run_all(RunWindow.for_date(ds), config) for ds in DATES}
    return root, config, results


def one(con, sql):
    return con.execute(sql).fetchall()[0][0]


def test_each_run_has_one_row_whose_counts_match_the_data(reported):
    root, config, results = reported
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        rows = con.execute(
            "SELECT CAST(ds AS VARCHAR), run_id, state, rows_read, rows_quarantined, profiles, "
            "profiles_created, merges, rows_delivered, delivery_failures FROM pipeline_runs "
            "ORDER BY ds"
        ).fetchall()
        assert [r[:3] for r in rows] == [(ds, "manual", "success") for ds in DATES]
        for ds, row in zip(DATES, rows, strict=True):
            read, quarantined, profiles, created, merges, delivered, failures = row[3:]
            sources = results[ds]["validate"]["sources"]
            assert read == sum(s["read"] for s in sources.values())
            assert quarantined == one(con, f"SELECT count(*) FROM quarantine WHERE dt = '{ds}'")
            assert merges == one(con, f"SELECT count(*) FROM profile_merges WHERE dt = '{ds}'")
            manifests = (root / "output").glob(f"*/dt={ds}/_manifest.json")
            assert delivered == sum(json.loads(m.read_text())["rows"] for m in manifests)
            assert failures == 0
            assert profiles == results[ds]["profiles"]["profiles"]
        # the latest date's profiles are the current table; the first date created them all
        assert rows[-1][5] == one(con, "SELECT count(*) FROM audience_profiles")
        assert rows[0][6] == rows[0][5] > 0


def test_reporting_a_run_again_replaces_its_row_and_a_new_run_adds_one(reported):
    root, config, results = reported
    ds = DATES[-1]
    outputs = {"validate": results[ds]["validate"], "deliver": results[ds]["deliveries"]}
    tasks = {"validate": {"state": "success", "seconds": 1.0}}
    report.write_report(RunWindow.for_date(ds), outputs, tasks, config)
    report.write_report(RunWindow.for_date(ds, "backfill__x"), outputs, tasks, config)
    report.write_report(RunWindow.for_date(ds, "backfill__x"), outputs, tasks, config)
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        runs = con.execute(
            f"SELECT run_id, count(*) FROM pipeline_runs WHERE ds = '{ds}' GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert runs == [("backfill__x", 1), ("manual", 1)]


def test_the_page_is_self_contained_and_plots_every_part(reported):
    root, config, _ = reported
    folder = root / "output" / "reports"
    assert sorted(p.name for p in folder.iterdir()) == [f"{ds}.html" for ds in DATES] + [
        "index.html"
    ]
    page = (folder / f"{DATES[-1]}.html").read_text()
    assert (folder / "index.html").read_text() == page
    assert page.count("<svg") == 6
    for title in (
        "Rows quarantined by source and field",
        "Profiles created and merged per date",
        "Rows delivered by destination",
        "Seconds per task",
    ):
        assert f'aria-label="{title}"' in page
    assert "<script" not in page
    # nothing fetched from elsewhere: the only URL is the SVG namespace
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    for name in ("interactions", "form_entries", "identities", "elements", "local_drop"):
        assert name in page
    for ds in DATES:  # every reported date is on the time axis
        assert f">{ds}</text>" in page


def test_a_page_plots_the_last_dates_up_to_its_own_and_index_stays_the_latest(
    tmp_path, monkeypatch
):
    """A page plots the HISTORY_DATES reported dates up to its own date (not every date since
    the first, nor dates after it); a backfill of an old date leaves index.html the latest's."""
    monkeypatch.setattr(report, "HISTORY_DATES", 3)
    config = write_config(tmp_path)
    days = [f"2022-04-{d:02d}" for d in range(20, 26)]
    outputs = {"validate": {"sources": {}, "quarantine_by_field": []}}
    for ds in [*days, days[1]]:  # then the second date again, as a backfill does
        report.write_report(RunWindow.for_date(ds), outputs, {}, config)
    folder = tmp_path / "output" / "reports"

    def plotted(ds: str) -> list[str]:
        page = (folder / f"{ds}.html").read_text()
        chart = page[page.index('aria-label="Profiles"') :].split("</svg>")[0]
        return re.findall(r">(\d{4}-\d{2}-\d{2})</text>", chart)

    assert plotted(days[4]) == days[2:5]
    assert plotted(days[1]) == days[:2]
    assert (folder / "index.html").read_text() == (folder / f"{days[-1]}.html").read_text()


def test_index_plots_the_older_dates_a_backfill_reports_after_the_latest(tmp_path, monkeypatch):
    """A backfill run newest first reports the latest date before the older ones: index.html,
    the latest date's page, is drawn again from its stored report as each older date reports."""
    monkeypatch.setattr(report, "HISTORY_DATES", 3)
    config = write_config(tmp_path)
    days = [f"2022-04-{d:02d}" for d in range(20, 26)]
    for ds in reversed(days):
        outputs = {"validate": {"sources": {}, "quarantine_by_field": []}}
        outputs["build_profiles"] = {"profiles": int(ds[-2:])}
        report.write_report(RunWindow.for_date(ds), outputs, {}, config)
        if ds == days[-1]:  # when the latest date reported: its page says so, not the backfill's
            with duckdb.connect(config.warehouse.path) as con:
                con.execute("UPDATE pipeline_runs SET reported_at = TIMESTAMP '2022-04-26 06:05'")
    folder = tmp_path / "output" / "reports"
    index = (folder / "index.html").read_text()
    assert f"{days[-1]}</h1>" in index and "profiles" in index
    assert "reported 2022-04-26 06:05 UTC" in index
    chart = index[index.index('aria-label="Profiles"') :].split("</svg>")[0]
    assert re.findall(r">(\d{4}-\d{2}-\d{2})</text>", chart) == days[-3:]
    own = (folder / f"{days[-1]}.html").read_text()  # as it was when it ran: its date alone
    own_chart = own[own.index('aria-label="Profiles"') :].split("</svg>")[0]
    assert re.findall(r">(\d{4}-\d{2}-\d{2})</text>", own_chart) == [days[-1]]


def test_a_stored_report_that_cannot_be_drawn_leaves_the_index_as_it_was(tmp_path, caplog):
    """The latest date's stored report is drawn again when an older date reports; if this code
    cannot draw it (a report stored by another version), the older date's run still reports."""
    config = write_config(tmp_path)
    outputs = {"validate": {"sources": {}, "quarantine_by_field": []}}
    report.write_report(RunWindow.for_date("2022-04-25"), outputs, {}, config)
    folder = tmp_path / "output" / "reports"
    index = (folder / "index.html").read_text()
    with duckdb.connect(config.warehouse.path) as con:
        con.execute('UPDATE pipeline_runs SET report = \'{"ds": "2022-04-25"}\'')
    with caplog.at_level(logging.WARNING, logger=report.log.name):
        summary = report.write_report(RunWindow.for_date("2022-04-24"), outputs, {}, config)
    assert summary["html"] and (folder / "2022-04-24.html").exists()
    assert (folder / "index.html").read_text() == index
    assert "stored report of 2022-04-25 could not be drawn: KeyError" in caplog.text


def test_a_link_planted_at_a_page_s_name_is_replaced_not_written_through(reported, tmp_path):
    """The pages go to the local drop's folder, which others may write to."""
    root, config, _ = reported
    victim = tmp_path / ".bashrc"
    victim.write_text("# original\n")
    page = report.report_dir(config) / f"{DATES[0]}.html"
    page.unlink()
    page.symlink_to(victim)

    report.write_report(RunWindow.for_date(DATES[0]), {}, {}, config)

    assert victim.read_text() == "# original\n"
    assert not page.is_symlink() and "<html" in page.read_text()


def test_a_page_its_disk_refuses_costs_the_run_no_record_and_no_summary(
    reported, monkeypatch, caplog
):
    # A read-only or full drop disk failed the delivery, then the report too: four tries, one
    # more alert, and the summary line, logged after the page, never written.
    root, config, _ = reported

    def refused(path, data):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(report, "replace_file", refused)
    with caplog.at_level(logging.INFO, logger=report.log.name):
        summary = report.write_report(RunWindow.for_date(DATES[0], "manual__again"), {}, {}, config)
    assert summary["html"] is None
    assert f"run {DATES[0]} " in caplog.text  # the summary line
    assert "the report page was not written: [Errno 30] Read-only file system" in caplog.text
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM pipeline_runs WHERE run_id = 'manual__again'"
        ).fetchone() == (1,)


def test_without_a_local_destination_the_page_goes_to_the_work_dir(tmp_path):
    config = write_config(tmp_path, destinations=[])
    assert report.report_dir(config) == tmp_path / "work" / "reports"


def test_the_page_goes_beside_the_first_enabled_local_drops_files(tmp_path):
    off = {"name": "off", "kind": "local", "path": str(tmp_path / "off"), "enabled": False}
    unnamed = {"name": "default_folder", "kind": "local"}  # no path: data/output
    config = write_config(tmp_path, destinations=[off, unnamed])
    assert report.report_dir(config) == Path(resolve_path(DEFAULT_DROP_PATH)) / "reports"


def test_a_failed_check_stops_delivery_and_alert_and_report_name_it(
    tmp_path, webhook, monkeypatch, airflow_db
):
    config = write_config(tmp_path, alerts={"webhook_conn_id": "alerts_test"})
    write_seed_example(tmp_path / "landing")
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_TEST", webhook.connection_json())
    check = "interactions_enriched reconciles with interactions for the partition"

    # Skipping enrich leaves the day's interactions unenriched: the reconciliation check fails.
    run = load_daily_dag().test(
        logical_date=dt.datetime(2022, 4, 29, tzinfo=dt.UTC), mark_success_pattern="enrich"
    )

    assert str(run.state) == "failed"
    assert [p.name for p in (tmp_path / "output").iterdir()] == ["reports"]  # nothing delivered
    # One alert, at the first try: a failed check is not retried.
    [alert] = [r["json"] for r in webhook.requests]
    assert "check_quality failed for 2022-04-29 (try 1 of 4)" in alert["text"]
    assert check in alert["text"]
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        state, body = con.execute("SELECT state, report FROM pipeline_runs").fetchall()[0]
    body = json.loads(body)
    assert state == "failed"
    assert body["tasks"]["check_quality"]["state"] == "failed"
    assert {"check_quality", "publish", "deliver"} <= set(body["failed_tasks"])
    assert [c["name"] for c in body["checks"] if c["failures"]] == [check]
    page = (tmp_path / "output" / "reports" / "2022-04-29.html").read_text()
    assert "Failed quality checks" in page and check in page


def test_rows_past_retention_are_shown_so_the_counts_still_add_up():
    """read = valid + quarantined + aged out: with retention on, the page and the summary line
    show the third term (a run of an aged-out date read 419 rows and kept none)."""
    window = RunWindow.for_date("2022-04-25")
    validated = {
        "sources": {"interactions": {"read": 419, "valid": 0, "quarantined": 0, "aged_out": 419}},
        "quarantine_by_field": [],
    }
    built = report.build(window, {"validate": validated}, {})
    assert "aged out 419 (past retention)" in report.summary_line(built)
    page = report.render_html({**built, "checks": []}, [])  # checks: from the warehouse
    assert "<th>aged out</th>" in page
    assert re.search(r"<td[^>]*>interactions</td>" + r"<td[^>]*>(\d+)</td>" * 4, page).groups() == (
        "419",
        "0",
        "0",
        "419",
    )


def test_the_files_with_quarantined_rows_are_named_most_first(reported):
    """The page lists the date's files with rows in quarantine, with each one's rows read (from
    landed_files), and says how many more there are past the first ten."""
    root, config, results = reported
    ds = DATES[-1]
    by_file = results[ds]["validate"]["quarantine_by_file"]
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        stored = json.loads(one(con, f"SELECT report FROM pipeline_runs WHERE ds = '{ds}'"))
        files = con.execute(
            "SELECT q.source, q.file, max(l.rows_read), count(*) FROM quarantine q "
            "LEFT JOIN landed_files l USING (dt, source, file) "
            f"WHERE dt = '{ds}' GROUP BY ALL ORDER BY count(*) DESC, q.source, q.file"
        ).fetchall()
    assert stored["quarantine_by_file"] == by_file and by_file["files"] == len(files) > 0
    assert by_file["top"] == [list(f) for f in files]
    page = (root / "output" / "reports" / f"{ds}.html").read_text()
    source, file, read, quarantined = files[0]
    assert f"<td>{source}</td><td>{file}</td>" in re.sub(r'<td class="[^"]*">', "<td>", page)
    assert "more file(s) with quarantined rows" not in page

    many = {"files": 12, "top": [["interactions", f"/l/part-{i}.csv", 9, 1] for i in range(10)]}
    built = report.build(
        RunWindow.for_date(ds),
        {"validate": {"sources": {}, "quarantine_by_field": [], "quarantine_by_file": many}},
        {},
    )
    page = report.render_html({**built, "checks": []}, [])
    assert "/l/part-9.csv" in page and "and 2 more file(s) with quarantined rows" in page


def test_rows_kept_as_the_stream_merged_them_are_shown_so_the_counts_still_add_up():
    """read = valid + quarantined + kept as streamed: the extract staged a file a stream batch
    then merged, and validate kept the stream's rows of it (pipeline._streamed_files)."""
    window = RunWindow.for_date("2022-04-30")
    validated = {
        "sources": {
            "interactions": {"read": 5, "valid": 3, "quarantined": 0, "kept_as_streamed": 2}
        },
        "quarantine_by_field": [],
    }
    built = report.build(window, {"validate": validated}, {})
    assert "kept as the stream merged them 2" in report.summary_line(built)
    page = report.render_html({**built, "checks": []}, [])
    assert "<th>kept as streamed</th>" in page and "<th>aged out</th>" not in page
    assert re.search(r"<td[^>]*>interactions</td>" + r"<td[^>]*>(\d+)</td>" * 4, page).groups() == (
        "5",
        "3",
        "0",
        "2",
    )


def test_checks_of_an_earlier_attempt_are_not_shown_as_this_ones(reported):
    """A cleared run keeps its run id: when check_quality did not run in this attempt (an
    upstream task failed), the checks stored by the earlier attempt are not this run's."""
    root, config, results = reported
    ds = DATES[-1]
    tasks = {
        "enrich": {"state": "failed", "seconds": 1.0},
        "check_quality": {"state": "upstream_failed", "seconds": None},
    }
    report.write_report(RunWindow.for_date(ds), {}, tasks, config)
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        stored = con.execute(
            f"SELECT report FROM pipeline_runs WHERE ds = '{ds}' AND run_id = 'manual'"
        ).fetchall()[0][0]
        earlier = con.execute(
            f"SELECT count(*) FROM quality_checks WHERE dt = '{ds}' AND run_id = 'manual'"
        ).fetchall()[0][0]
    assert earlier > 0 and json.loads(stored)["checks"] == []


def test_a_failed_extract_leaves_rows_read_unknown():
    """The extracts that ran are not the rows read: the page showed their sum as the total."""
    outputs = {"extract": [{"source": "interactions", "rows": 5}, None]}
    tasks = {
        "extract[interactions]": {"state": "success"},
        "extract[elements]": {"state": "failed"},
    }

    built = report.build(RunWindow.for_date("2022-04-29"), outputs, tasks)

    assert built["rows_read"] is None
    assert built["failed_tasks"] == ["extract[elements]"]
    assert built["sources"] == {"interactions": {"read": 5}}


def test_the_summary_line_names_the_failed_task_first_apart_from_those_never_run():
    # "read None row(s) ...; failed: build_profiles, ..., extract[interactions], ..." listed
    # the nine tasks that never ran with the one that failed, at the end (helper-119)
    outputs = {"extract": [None, {"source": "elements", "rows": 4}]}
    tasks = {
        "extract[interactions]": {"state": "failed"},
        "extract[elements]": {"state": "success"},
        **{t: {"state": "upstream_failed"} for t in ("validate", "enrich", "deliver")},
    }

    line = report.summary_line(report.build(RunWindow.for_date("2022-04-29"), outputs, tasks))

    assert line == (
        "run 2022-04-29 failed: extract[interactions] failed (3 task(s) after it not run); read "
        "n/a row(s) (elements 4); quarantined n/a; profiles n/a (n/a new, n/a merged away); "
        "delivered n/a row(s) (none)"
    )


def test_the_wait_for_the_landing_is_reported_apart_from_the_work():
    """A deferred task keeps its start: wait_for_landing's duration is the whole wait, which
    counted as task time and dwarfed every task in the chart."""
    tasks = {
        "wait_for_landing": {"state": "success", "seconds": 10_800.0},
        "validate": {"state": "success", "seconds": 2.5},
    }
    built = report.build(RunWindow.for_date("2022-04-29"), {}, tasks)
    assert (built["seconds"], built["landing_waited_seconds"]) == (2.5, 10_800.0)
    page = report.render_html({**built, "checks": []}, [])
    assert "<dt>Waited for the landing (s)</dt><dd>10,800.0</dd>" in page
    chart = page[page.index("Seconds per task") :]
    assert "validate" in chart and "wait_for_landing" not in chart


def test_late_landing_files_are_on_the_page_and_in_the_summary_line():
    late = [
        {"source": "interactions", "date": "2022-04-28", "files": 7, "names": list("abcde")},
        {"source": "identities", "date": "2022-04-29", "files": 1, "names": ["f"], "stream": True},
    ]
    built = report.build(RunWindow.for_date("2022-04-29"), {}, {}) | {"late_landings": late}
    assert report.summary_line(built).endswith(
        "; landed after their date was built: interactions 2022-04-28 (7 file(s)), "
        "identities 2022-04-29 (1 file(s))"
    )
    page = report.render_html({**built, "checks": []}, [])
    assert (
        "<strong>Landed after 2022-04-28 was built</strong>: 7 interactions file(s), in no output "
        "until 2022-04-28 is run again: a, b, c, d, e and 2 more</p>"
    ) in page
    assert "until a stream batch merges them or 2022-04-29 is run again: f</p>" in page


def test_segment_rules_naming_no_element_are_on_the_page_and_in_the_summary_line():
    # An empty segment from a typo emptied its Dotdigital book with no word anywhere.
    said = "segments.blue.answer.equals: no element titled 'Team?' has the option 'Bleu'"
    outputs = {"build_segments": {"members": {"blue": 0}, "unmatched": {"blue": [said]}}}
    built = report.build(RunWindow.for_date("2022-04-29"), outputs, {})
    assert built["segments_unmatched"] == {"blue": [said]}
    assert (
        "; segment rules naming what the date's catalogue or interactions lack: "
        f"blue ({said})" in report.summary_line(built)
    )
    page = report.render_html({**built, "checks": []}, [])
    assert "<strong>Segment rules naming what the date's catalogue or interactions lack" in page
    # interactions of a poll whose content never landed carry its poll id: matched all the same
    assert "matches nothing" not in page
    assert "no element titled &#x27;Team?&#x27; has the option &#x27;Bleu&#x27;" in page
    quiet = report.build(RunWindow.for_date("2022-04-29"), {"build_segments": {"members": {}}}, {})
    assert quiet["segments_unmatched"] is None
    assert "segment rules" not in report.summary_line(quiet)


def test_late_landing_files_that_cannot_be_checked_do_not_cost_the_report(tmp_path, monkeypatch):
    # A landing bucket out of reach: the report goes out, saying they were not checked.
    from audience_profiles import landing

    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    run_all(RunWindow.for_date("2022-04-29"), config)

    def unreachable(*args, **kwargs):
        raise OSError("landing out of reach")

    monkeypatch.setattr(landing, "partition_versions", unreachable)
    summary = report.write_report(RunWindow.for_date("2022-04-29"), {}, {}, config)
    page = Path(summary["html"]).read_text()
    assert "Files landed after their date was built: not checked (see the log)" in page
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        (stored,) = con.execute("SELECT report FROM pipeline_runs").fetchone()
    assert json.loads(stored)["late_landings"] is None


def test_outputs_of_tasks_that_did_not_run_in_this_try_are_not_reported(monkeypatch):
    """A run cleared and then marked failed: its skipped and upstream_failed tasks never ran
    again, and their XComs were the earlier try's profiles and deliveries."""
    earlier_try = {
        ("validate", -1): {"sources": {}},
        ("build_profiles", -1): {"profiles": 72},
        ("deliver", 0): {"rows": {"t": 1}},
        ("deliver", 1): {"rows": {"t": 2}},
    }
    states = {
        ("validate", -1): "success",
        ("build_profiles", -1): "upstream_failed",
        ("deliver", 0): "success",
        ("deliver", 1): "skipped",
    }

    class TaskInstance:
        dag_id, run_id, task_id = "audience_profiles", "scheduled__2022-04-26", "report"

        def get_task_breadcrumbs(self, dag_id, run_id):
            return [
                {"task_id": t, "map_index": i, "state": state, "duration": 1.0}
                for (t, i), state in states.items()
            ]

        def xcom_pull(self, task_ids, map_indexes):
            if isinstance(map_indexes, int):
                return earlier_try.get((task_ids, map_indexes))
            return [earlier_try.get((task_ids, i)) for i in map_indexes]

    monkeypatch.setattr(report, "write_report", lambda w, outputs, tasks: outputs)
    context = {
        "ti": TaskInstance(),
        "run_id": "scheduled__2022-04-26",
        "ds": "2022-04-26",
    }
    reported = report.report_from_context(context)
    assert reported["validate"] == {"sources": {}}
    assert reported["build_profiles"] is None
    assert reported["deliver"] == [{"rows": {"t": 1}}, None]


def test_a_misspelt_source_folder_on_the_landing_root_is_in_the_report(tmp_path, caplog):
    """Its rows were in no count, output or quarantine, and nothing said so: the run report (a
    teardown, so every run's) names it, on its page, in its summary line and in its log."""
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    misspelt = tmp_path / "landing" / "Form_Entries" / "date=2022-04-29"
    misspelt.mkdir(parents=True)
    (misspelt / "part-0.csv").write_text("entry_datetime,email,session_id\n")
    with caplog.at_level("WARNING", logger="audience_profiles.report"):
        run_all(RunWindow.for_date("2022-04-29"), config)
    named = "Form_Entries/ (not form_entries/)"
    assert f"1 entry no run reads, their rows in no count or output: {named}" in caplog.text
    (page,) = (tmp_path / "output" / "reports").glob("2022-04-29.html")
    assert "<strong>On the landing root, read by no run</strong>" in page.read_text()
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        (stored,) = con.execute("SELECT report FROM pipeline_runs").fetchone()
    assert json.loads(stored)["unread_landing"] == {"entries": 1, "names": [named]}
    assert report.summary_line(json.loads(stored)).endswith(
        f"; on the landing root, read by no run: {named}"
    )
