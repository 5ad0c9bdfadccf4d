"""Backfills on a real scheduler give exactly what single runs give; a task killed mid-run is
retried without duplicating anything; the Airflow UI shows the DAG and its successful run.

The deployment is tests/services/airflow_stack.py (PostgreSQL, api-server, scheduler,
dag-processor, triggerer; LocalExecutor). Five dates of sample data are backfilled through the REST
API with two runs at a time, while the same dates are built one after another with ``run_all`` into
a separate folder; every output file and warehouse table of the two must match. During the backfill the test holds the warehouse's write lock, so the next
warehouse task blocks inside DuckDB's lock wait; its process is killed and Airflow retries it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil
import pytest

from audience_profiles.assets import DELIVERED, PUBLISHED, delivered_to
from audience_profiles.config import PipelineConfig
from audience_profiles.dag_defaults import WAREHOUSE_POOL
from audience_profiles.generate import GenerateOptions, generate
from audience_profiles.pipeline import RunWindow, run_all
from tests.services.airflow_stack import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    AirflowStack,
    wait_until,
)
from tests.support import write_config

pytestmark = pytest.mark.scheduler

DAG_ID = "audience_profiles"
# docs/examples/refresh_marketing_mart.py: the consumer of the published events the docs give
CONSUMER_DAG_ID = "refresh_marketing_mart"
# docs/examples/load_local_drop.py: a consumer of one destination's asset
DESTINATION_CONSUMER_DAG_ID = "load_local_drop"
DATES = [f"2022-04-{day}" for day in range(25, 30)]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Columns that name the run or the moment, not the data: they differ between any two runs.
VOLATILE_COLUMNS = {
    "pipeline_runs": ("run_id", "seconds", "reported_at", "report"),
    "quality_checks": ("run_id", "checked_at"),
    "published_snapshots": ("run_id", "published_at"),
    "landed_files": ("recorded_at",),
    "identity_rules_log": ("recorded_at",),
    "element_history_dates": ("recorded_at",),
    "warehouse_schema": ("set_up_at",),
}
VOLATILE_MANIFEST_KEYS = ("run_id", "generated_at")
# The CLI way to the same backfill, as docs/operations.md gives it.
CLI_BACKFILL = (
    "backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1],
    "--reprocess-behavior", "completed", "--max-active-runs", "2",
)  # fmt: skip


@dataclass
class Backfilled:
    stack: AirflowStack
    backfill: dict
    runs: list[dict]
    task_instances: list[dict]
    killed: dict
    cli_dry_run: str
    backfill_output: Path
    backfill_warehouse: Path
    single_output: Path
    single_warehouse: Path


def _runs(stack: AirflowStack) -> list[dict]:
    return stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=logical_date&limit=100")[
        "dag_runs"
    ]


def _task_instances(stack: AirflowStack, **filters) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **filters}.items())
    return stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances?{query}")[
        "task_instances"
    ]


def _lock_warehouse(path: Path) -> duckdb.DuckDBPyConnection | None:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException:  # a task holds it right now
        return None


def kill_a_task_mid_run(stack: AirflowStack, warehouse: Path, first_run_id: str) -> dict:
    """Kill the process of the next warehouse task once the first date's data is loaded.

    Holding DuckDB's write lock makes that task wait inside its lock wait (a state it reaches in
    every run, with earlier tasks of its run already written), so it is killed at a known point.
    """

    def first_date_loaded():
        tis = _task_instances(stack, task_id="validate", state="success")
        return any(ti["dag_run_id"] == first_run_id for ti in tis)

    wait_until(first_date_loaded, 240, "validate of the first backfilled date")
    con = wait_until(lambda: _lock_warehouse(warehouse), 120, "the warehouse write lock", 0.05)
    try:

        def running_tasks() -> dict[str, dict]:
            running = _task_instances(stack, state="running", pool=WAREHOUSE_POOL)
            return {ti["id"]: ti for ti in running if ti["pid"]}

        def blocked_task():
            # Running in two looks a while apart, under the same process: a task that was only
            # finishing (its warehouse work done before the lock was taken) has ended by then,
            # and killing it would have killed nothing Airflow retries.
            before = running_tasks()
            time.sleep(2)
            now = running_tasks()
            return next(
                (ti for i, ti in now.items() if before.get(i, {}).get("pid") == ti["pid"]), None
            )

        victim = wait_until(blocked_task, 120, "a warehouse task waiting for the lock")
        process = psutil.Process(victim["pid"])
        # Only ever the task process Airflow reported for this task instance.
        assert victim["id"] in " ".join(process.cmdline()), process.cmdline()
        process.kill()
        process.wait(30)
    finally:
        con.close()
    return victim


class SingleRuns(threading.Thread):
    """The same dates built one after another with ``run_all`` (the whole build, no scheduler)
    into their own folder, in the background while the deployment starts and backfills."""

    def __init__(self, config: PipelineConfig):
        super().__init__(daemon=True)
        self.config = config
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for ds in DATES:
                run_all(RunWindow.for_date(ds), self.config)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


@pytest.fixture(scope="module")
def backfilled(request, tmp_path_factory) -> Backfilled:
    # One landing folder for both sides: outputs name the landing file of a quarantined row.
    landing = tmp_path_factory.mktemp("landing")
    generate(
        GenerateOptions(
            out=landing,
            start=dt.date.fromisoformat(DATES[0]),
            days=len(DATES),
            interactions=2_000,
            dirty_rate=0.01,
        )
    )
    single = write_config(tmp_path_factory.mktemp("single-runs"), landing_root=str(landing))
    single_runs = SingleRuns(single)
    single_runs.start()

    stack: AirflowStack = request.getfixturevalue("airflow_stack")
    config = write_config(stack.config_path.parent, landing_root=str(landing))
    stack.wait_for_dag(DAG_ID)
    consumers = (CONSUMER_DAG_ID, DESTINATION_CONSUMER_DAG_ID)
    for dag_id in consumers:
        stack.wait_for_dag(dag_id)
    for dag_id in (*consumers, DAG_ID):  # the consumers first: they see every event
        stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    stack.api("GET", f"/api/v2/dags/{DAG_ID}/tasks")  # the API server loads the DAG once, now
    backfill = stack.api(
        "POST",
        "/api/v2/backfills",
        json={
            "dag_id": DAG_ID,
            "from_date": f"{DATES[0]}T00:00:00Z",
            "to_date": f"{DATES[-1]}T00:00:00Z",
            "max_active_runs": 2,
            # validate and enrich depend on the previous date: Airflow then asks for an explicit
            # reprocess behaviour ("completed" re-runs dates that already ran).
            "reprocess_behavior": "completed",
        },
    )
    first_run_id = wait_until(lambda: _runs(stack), 60, "backfill runs created")[0]["dag_run_id"]
    killed = kill_a_task_mid_run(stack, Path(config.warehouse.path), first_run_id)

    def finished():
        if not stack.api("GET", f"/api/v2/backfills/{backfill['id']}")["completed_at"]:
            return None
        runs = _runs(stack)
        return runs if all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(finished, 420, "backfill completed", interval=1)
    task_instances = _task_instances(stack)

    single_runs.join(300)
    assert not single_runs.is_alive() and single_runs.error is None, single_runs.error
    return Backfilled(
        stack=stack,
        backfill=backfill,
        runs=runs,
        task_instances=task_instances,
        killed=killed,
        cli_dry_run=stack.cli(*CLI_BACKFILL, "--dry-run").stdout,
        backfill_output=Path(config.destination("local_drop").options["path"]),
        backfill_warehouse=Path(config.warehouse.path),
        single_output=Path(single.destination("local_drop").options["path"]),
        single_warehouse=Path(single.warehouse.path),
    )


def test_every_date_was_backfilled_with_two_runs_at_a_time(backfilled):
    runs = backfilled.runs
    assert [r["logical_date"][:10] for r in runs] == DATES
    assert {r["state"] for r in runs} == {"success"}
    assert {r["run_type"] for r in runs} == {"backfill"}
    spans = [(r["start_date"], r["end_date"]) for r in runs]
    overlaps = [sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans]
    assert max(overlaps) == 2  # runs did overlap, and never more than max_active_runs


def test_the_killed_task_was_retried_and_only_it(backfilled):
    killed = backfilled.killed
    retried = {
        (ti["dag_run_id"], ti["task_id"], ti["map_index"]): ti
        for ti in backfilled.task_instances
        if ti["try_number"] > 1
    }
    key = (killed["dag_run_id"], killed["task_id"], killed["map_index"])
    assert retried[key]["state"] == "success"
    assert retried[key]["try_number"] == 2
    # No other task needed a second try: no lock error, no half-written table read anywhere.
    assert set(retried) == {key}, sorted(retried)
    assert {ti["state"] for ti in backfilled.task_instances} == {"success"}


def test_each_backfilled_date_is_one_published_event_and_one_per_destination(backfilled):
    """Downstream DAGs scheduled on the outputs see each date once, as the API lists them: a
    killed and retried task sends its event once, when it succeeds (docs/operations.md,
    "Scheduling on the outputs")."""
    events = backfilled.stack.api(
        "GET", f"/api/v2/assets/events?source_dag_id={DAG_ID}&limit=1000"
    )["asset_events"]
    run_ds = {r["dag_run_id"]: r["logical_date"][:10] for r in backfilled.runs}
    published = [e for e in events if e["name"] == PUBLISHED.name]
    assert sorted(e["extra"]["ds"] for e in published) == DATES
    assert all(e["extra"]["ds"] == run_ds[e["source_run_id"]] for e in published)
    delivered: dict[str, list[str]] = {}
    for event in (e for e in events if e["name"] == DELIVERED.name):
        assert event["extra"]["ds"] == run_ds[event["source_run_id"]]
        delivered.setdefault(event["extra"]["ds"], []).append(event["extra"]["destination"])
    assert sorted(delivered) == DATES
    assert {tuple(sorted(names)) for names in delivered.values()} == {("local_drop",)}
    # and once each to the destination's own asset (through the alias), as a DAG on it sees them
    own = [e for e in events if e["name"] == delivered_to("local_drop").name]
    assert sorted(e["extra"]["ds"] for e in own) == DATES


def test_the_cli_backfill_command_plans_the_same_runs(backfilled):
    # `airflow backfill create` plans the same five logical dates (with "completed", the
    # dates the REST backfill already ran are planned again).
    table = backfilled.cli_dry_run.partition("Runs to be attempted:")[2]
    planned = re.findall(r"(\d{4}-\d{2}-\d{2})[ T]00:00:00", table)
    assert planned == DATES, backfilled.cli_dry_run[-2000:]


def test_every_output_file_is_identical_to_single_runs(backfilled):
    def files(root: Path) -> dict[str, Path]:
        return {
            str(p.relative_to(root)): p
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "reports"
        }

    backfill, single = files(backfilled.backfill_output), files(backfilled.single_output)
    assert sorted(backfill) == sorted(single)
    assert {Path(f).parent.name for f in backfill} == {f"dt={d}" for d in DATES}
    for name, path in backfill.items():
        if path.name == "_manifest.json":
            assert _manifest(path) == _manifest(single[name]), name
        else:
            assert path.read_bytes() == single[name].read_bytes(), name


def _manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    for key in VOLATILE_MANIFEST_KEYS:
        manifest.pop(key)
    for file in manifest["files"]:
        file.pop("url")  # absolute, under each side's own folder
    return manifest


def test_every_warehouse_table_is_identical_to_single_runs(backfilled):
    with (
        duckdb.connect(str(backfilled.backfill_warehouse), read_only=True) as backfill,
        duckdb.connect(str(backfilled.single_warehouse), read_only=True) as single,
    ):
        listing = "SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL"
        tables = backfill.execute(listing).fetchall()
        assert tables == single.execute(listing).fetchall()
        assert {schema for schema, _ in tables} == {"main"}  # every run_* scratch schema dropped
        for _, table in tables:
            volatile = VOLATILE_COLUMNS.get(table)
            columns = f"* EXCLUDE ({', '.join(volatile)})" if volatile else "*"
            query = f"SELECT {columns} FROM {table} ORDER BY ALL"
            rows = backfill.execute(query).fetchall()
            assert rows == single.execute(query).fetchall(), table
        # one report per date, the killed run's included: nothing was written twice
        reports = "SELECT CAST(ds AS VARCHAR), count(*) FROM pipeline_runs GROUP BY ALL ORDER BY 1"
        assert backfill.execute(reports).fetchall() == [(d, 1) for d in DATES]


def test_the_ui_shows_the_dag_and_its_successful_run(backfilled):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    stack = backfilled.stack
    # Next to the run reports, in the output folder.
    screenshot = backfilled.backfill_output / "reports" / f"{DAG_ID}_grid.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{stack.base_url}/dags/{DAG_ID}")
            # Not signed in: the simple auth manager's form, then back to the DAG.
            page.get_by_label("Username").fill(ADMIN_USER)
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}")
            page.get_by_role("button", name="Show Grid (Press g)").click()
            expect(page.get_by_role("heading", name=DAG_ID)).to_be_visible()
            expect(page.get_by_text("check_quality", exact=True)).to_be_visible()
            # The latest-run badge next to "Latest Run" carries the run's state.
            expect(page.locator('[aria-label="success"]').first).to_be_visible()
            time.sleep(1)  # let the grid's bars finish drawing for the picture
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def consumers_scheduled(backfilled) -> AirflowStack:
    """The consumer DAGs' runs, made now: this stack's scheduler makes no run of its own
    (``use_job_schedule`` off), asset-triggered ones included, so a second scheduler with it on
    makes them, with the daily DAG paused (no catch-up). The consumers were unpaused before the
    backfill, so their queue entries were made as the events came. Tests that use this run after
    the others of the module (pytest orders a module's tests as written)."""
    stack = backfilled.stack
    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True})
    stack.start_scheduler("scheduler-runs", use_job_schedule="True")
    return stack


def test_the_documented_consumer_dag_saw_every_backfilled_date(consumers_scheduled):
    """docs/examples/refresh_marketing_mart.py, as operations.md gives it, scheduled on the
    published asset, saw every date and the latest as current. Airflow made its queue entry at
    the first published event and gives the run the events up to that one; the example reads the
    rest itself."""
    returned = _consumer_returns(consumers_scheduled, CONSUMER_DAG_ID, "refresh")
    assert sorted({ds for value in returned for ds in value["dates"]}) == DATES
    assert any(value["refreshed"] for value in returned)


def test_the_documented_consumer_of_one_destination_saw_its_deliveries(consumers_scheduled):
    """docs/examples/load_local_drop.py, scheduled on local_drop's own asset (which the deliver
    tasks reach through an asset alias), saw every date."""
    returned = _consumer_returns(consumers_scheduled, DESTINATION_CONSUMER_DAG_ID, "load")
    assert sorted({ds for value in returned for ds in value["dates"]}) == DATES
    assert {name for value in returned for name in value["destinations"]} == {"local_drop"}


def _consumer_returns(stack: AirflowStack, dag_id: str, task_id: str) -> list[dict]:
    """The return values of ``dag_id``'s runs, once they have all finished successfully and no
    event is queued for another."""

    def consumer_runs():
        runs = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
        queued = stack.api("GET", f"/api/v2/dags/{dag_id}/assets/queuedEvents")
        finished = all(r["state"] in ("success", "failed") for r in runs)
        return runs if runs and finished and not queued["queued_events"] else None

    runs = wait_until(consumer_runs, 120, f"the {dag_id} runs finished", interval=1)
    assert {r["state"] for r in runs} == {"success"}
    returned = [
        stack.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{r['dag_run_id']}"
            f"/taskInstances/{task_id}/xcomEntries/return_value",
        )["value"]
        for r in runs
    ]
    return [json.loads(v) if isinstance(v, str) else v for v in returned]
