"""Every DAG file imports cleanly, without I/O at parse time, and follows the house rules."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from pathlib import Path

import pytest

from audience_profiles.dag_defaults import OWNER, WAREHOUSE_POOL, Tag, fails_fast
from audience_profiles.operators.deliver import DeliverOperator
from audience_profiles.operators.wait_for_landing import WaitForLandingOperator
from tests.support import write_config

DAGS_DIR = Path(__file__).parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    # Parse with the network closed: a DAG file that reaches out at parse time fails here.
    real_connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection while being parsed")

    socket.socket.connect = refuse
    try:
        return DagBag(dag_folder=str(DAGS_DIR))
    finally:
        socket.socket.connect = real_connect


def test_dag_files_exist():
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_a_config_mistake_past_start_date_fails_the_tasks_not_the_dag_files(tmp_path, monkeypatch):
    # A typo in retention: (or stream:, a destination's option) made both DAG files fail to
    # import: no daily run, no erasure, and no alert, only an import error in the UI. The tasks
    # read the whole file; their ConfigError fails them at once, with an alert naming the key.
    from audience_profiles.config import CONFIG_ENV, ConfigError, load_config

    for mistake, message in (
        ("retention: {interaction_days: 400}", r"retention\.interaction_days: unknown key"),
        # read when the daily DAG is parsed (its deadline): there it means no deadline
        ("alerts: {late_after_hours: soon}", r"alerts\.late_after_hours: must be a number"),
        # past what a timedelta holds, it failed the DAG file's import (helper-113)
        (
            "alerts: {late_after_hours: 1.0e+12}",
            r"alerts\.late_after_hours: must be 168 \(a week\)",
        ),
    ):
        path = write_config(tmp_path).source_file
        with open(path, "a") as fh:
            fh.write(mistake + "\n")
        monkeypatch.setenv(CONFIG_ENV, path)
        bag = _parsed_dags()
        assert bag.import_errors == {}, mistake
        assert not bag.dags["audience_profiles"].deadline
        assert {"audience_profiles", "audience_profiles_erasure"} <= set(bag.dag_ids)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


@contextlib.contextmanager
def _settings_read_anew():
    """DAG files parsed within read the pipeline.yml ``$AUDIENCE_PROFILES_CONFIG`` names now
    (dag_defaults caches what it reads)."""
    from audience_profiles import dag_defaults

    dag_defaults._dag_settings.cache_clear()
    try:
        yield
    finally:
        dag_defaults._dag_settings.cache_clear()


def _parsed_dags():
    from airflow.dag_processing.dagbag import DagBag

    with _settings_read_anew():
        return DagBag(dag_folder=str(DAGS_DIR))


def test_the_daily_dag_is_late_after_its_day_plus_late_after_hours(tmp_path, monkeypatch):
    from airflow.sdk import AsyncCallback, DeadlineReference

    from audience_profiles import alerts
    from audience_profiles.cli import _load_dag
    from audience_profiles.config import CONFIG_ENV, read_dag_settings

    for setting, hours in (
        ({"late_after_hours": 8}, 8.0),
        ({"late_after_hours": 2.5}, 2.5),
        ({}, None),  # the default: no deadline (Airflow 3.3.2's dag.test() fails with one)
        ({"late_after_hours": None}, None),
    ):
        config = write_config(tmp_path, alerts={"webhook_conn_id": "hook", **setting})
        assert read_dag_settings(config.source_file).late_after_hours == hours
        monkeypatch.setenv(CONFIG_ENV, config.source_file)
        bag = _parsed_dags()
        daily = bag.dags["audience_profiles"]
        if hours is None:
            assert not daily.deadline
            continue
        [deadline] = daily.deadline
        # the logical date is the day's start: a day, then the hours after it ended
        assert deadline.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
        assert deadline.interval == dt.timedelta(days=1, hours=hours)
        assert deadline.callback == AsyncCallback(alerts.on_late_run)
        # hourly runs would alert every hour: only the daily build has a deadline
        assert not bag.dags["audience_profiles_erasure"].deadline
        # the CLI's runs go through dag.test(), which fails on a deadline in Airflow 3.3.2
        with _settings_read_anew():
            assert _load_dag().deadline is None


def test_one_dag_per_file_named_after_it(dagbag):
    for path in DAG_FILES:
        dags = [d for d in dagbag.dags.values() if Path(d.fileloc).name == path.name]
        assert [d.dag_id for d in dags] == [path.stem], (
            f"{path.name} must define exactly the DAG {path.stem}"
        )


def test_dags_document_themselves(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.doc_md.strip().startswith("#"), (
            f"{dag.dag_id}: doc_md must be the module docstring"
        )


def test_tags_come_from_the_enum(dagbag):
    allowed = {t.value for t in Tag}
    for dag in dagbag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert set(dag.tags) <= allowed, f"{dag.dag_id}: unknown tags {set(dag.tags) - allowed}"


def test_every_task_has_owner_and_retries(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.owner == OWNER, f"{dag.dag_id}.{task.task_id}: owner {task.owner!r}"
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, (
                f"{dag.dag_id}.{task.task_id}: no exponential backoff"
            )
            assert task.max_retry_delay, f"{dag.dag_id}.{task.task_id}: no maximum retry delay"


def test_daily_dag_shape(dagbag):
    dag = dagbag.dags["audience_profiles"]
    assert dag.catchup is True
    assert dag.max_active_runs >= 1
    task_ids = set(dag.task_ids)
    for step in (
        "extract",
        "validate",
        "enrich",
        "resolve_identities",
        "build_profiles",
        "build_segments",
        "check_quality",
        "publish",
        "deliver",
        "cleanup",
    ):
        assert step in task_ids
    # Every task that opens the warehouse queues on its single-writer pool.
    for task_id in (
        "validate",
        "enrich",
        "resolve_identities",
        "build_profiles",
        "build_segments",
        "check_quality",
        "publish",
        "cleanup",
    ):
        assert dag.get_task(task_id).pool == WAREHOUSE_POOL
    assert dag.get_task("cleanup").is_teardown
    # The landing is waited for before anything reads it (pipeline.yml landing_wait).
    assert dag.get_task("extract").upstream_task_ids == {"wait_for_landing"}


def test_the_reports_task_order_is_the_dags(dagbag):
    # The run report's durations chart lists the tasks in this order; it was built by slicing
    # another list, and a task added to the DAG would have been left out or misplaced.
    from audience_profiles.report import TASK_ORDER

    dag = dagbag.dags["audience_profiles"]
    assert set(TASK_ORDER) == set(dag.task_ids) - {"report"}
    for later, task_id in enumerate(TASK_ORDER):
        assert not dag.get_task(task_id).upstream_task_ids & set(TASK_ORDER[later:]), task_id


def test_tasks_that_read_config_or_check_data_fail_without_retrying_what_would_repeat(dagbag):
    """``fails_fast`` under ``@task``: a YAML mistake or a failed check alerts at once."""
    fail_fast = {
        "audience_profiles": {
            "validate",
            "resolve_identities",
            "build_profiles",
            "build_segments",
            "check_quality",
        },
        "audience_profiles_stream": {"process_landed_files"},
        "audience_profiles_erasure": {"read_requests", "retention"},
    }
    fails_fast_code = fails_fast(lambda: None).__code__

    def wrapped_by_fails_fast(function) -> bool:
        while function is not None:
            if function.__code__ is fails_fast_code:
                return True
            function = getattr(function, "__wrapped__", None)
        return False

    for dag_id, task_ids in fail_fast.items():
        for task_id in task_ids:
            task = dagbag.dags[dag_id].get_task(task_id)
            assert wrapped_by_fails_fast(task.python_callable), f"{dag_id}.{task_id}"
    assert wrapped_by_fails_fast(DeliverOperator.execute)  # Airflow wraps execute too
    assert wrapped_by_fails_fast(WaitForLandingOperator.execute)


def test_a_config_mistake_fails_the_tasks_a_run_starts_with_at_once(tmp_path, monkeypatch):
    """The tasks without an upstream start together and read pipeline.yml whole: a mistake there
    failed the erasure DAG's read_requests and both DAGs' destinations only after three retries
    (four alerts), while wait_for_landing and retention beside them failed at once."""
    from airflow.sdk.exceptions import AirflowFailException

    from audience_profiles.config import CONFIG_ENV

    path = write_config(tmp_path).source_file
    with open(path, "a") as fh:
        fh.write("retention: {interaction_days: 400}\n")
    monkeypatch.setenv(CONFIG_ENV, path)
    bag = _parsed_dags()
    started = []
    for dag_id in ("audience_profiles", "audience_profiles_erasure"):
        for task in bag.dags[dag_id].roots:
            if not hasattr(task, "python_callable"):  # WaitForLandingOperator: tested with it
                continue
            body = task.python_callable
            while hasattr(body, "__wrapped__"):
                body = body.__wrapped__
            if "_run" in body.__globals__:  # the run's date and id, from a task's context
                monkeypatch.setitem(body.__globals__, "_run", lambda: ("2022-04-29", "manual"))
            with pytest.raises(AirflowFailException, match=r"retention\.interaction_days"):
                task.python_callable()
            started.append(f"{dag_id}.{task.task_id}")
    assert sorted(started) == [
        "audience_profiles.destinations",
        "audience_profiles_erasure.destinations",
        "audience_profiles_erasure.read_requests",
        "audience_profiles_erasure.retention",
    ]


def test_dag_files_stay_thin():
    for path in DAG_FILES:
        text = path.read_text()
        assert len(text.splitlines()) <= 150, (
            f"{path.name} is too long: move logic into the package"
        )
        for keyword in ("SELECT ", "INSERT ", "MERGE ", "CREATE TABLE"):
            assert keyword not in text, (
                f"{path.name} holds SQL ({keyword.strip()}): it belongs in include/sql"
            )
        heavy = (
            "import duckdb",
            "import pandas",
            "import pyarrow",
            "from audience_profiles.pipeline",
        )
        top_level = [line for line in text.splitlines() if not line.startswith((" ", "\t"))]
        for line in top_level:
            assert not line.startswith(heavy), f"{path.name}: heavy import at parse time: {line}"


def test_the_one_destination_example_schedules_on_delivered_to():
    # docs/examples/load_local_drop.py spells the asset out (a consumer outside this deployment
    # cannot import it): a name or URI off by a character would never be triggered, silently.
    import runpy

    from audience_profiles.assets import delivered_to

    example = runpy.run_path(str(DAGS_DIR.parent / "docs" / "examples" / "load_local_drop.py"))
    assert example["LOCAL_DROP"] == delivered_to("local_drop")
