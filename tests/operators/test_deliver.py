"""DeliverOperator under Airflow: a mapped delivery task that defers on Dotdigital's imports.

``dag.test()`` runs the task in-process and, when it defers, runs the trigger inline and resumes
it, as a triggerer would. The DAG here is wired exactly as the daily DAG's deliver step is meant
to be (partial over the published tables, expanded over destination names).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audience_profiles.assets import DELIVERED, delivered_to
from audience_profiles.config import CONFIG_ENV
from audience_profiles.operators.deliver import DeliverOperator, ImportWaitError
from tests.services.dotdigital_standin import DOTDIGITAL_CONN_ID
from tests.support import asset_event_extras, write_config

pytestmark = [pytest.mark.services, pytest.mark.e2e]

BOOK = "AP operator fans"
RUN_DATE = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
PEOPLE = [f"fan{i:02d}@example.com" for i in range(7)]


@pytest.fixture(scope="module")
def airflow_db():
    """Airflow's metadata database in the test session's AIRFLOW_HOME (tests/conftest.py)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
    )


def exports(folder) -> dict[str, str]:
    """One run's exports, as publish hands them to destinations."""
    folder.mkdir(parents=True)
    profiles = pa.table(
        {
            "profile_id": [f"p{i}" for i in range(len(PEOPLE))],
            "email": PEOPLE,
            "first_name": ["Fan"] * len(PEOPLE),
            "last_name": [str(i) for i in range(len(PEOPLE))],
            "optin_1": [True] * (len(PEOPLE) - 1) + [False],
        }
    )
    members = pa.table(
        {
            "segment_id": ["fans"] * len(PEOPLE),
            "profile_id": profiles["profile_id"],
            "since": pa.array([dt.date(2024, 4, 1)] * len(PEOPLE), pa.date32()),
        }
    )
    paths = {t: str(folder / f"{t}.parquet") for t in ("audience_profiles", "segment_memberships")}
    pq.write_table(profiles, paths["audience_profiles"])
    pq.write_table(members, paths["segment_memberships"])
    return paths


@pytest.fixture
def pipeline_config(tmp_path, dotdigital, monkeypatch):
    config = write_config(
        tmp_path,
        destinations=[
            {
                "name": "dotdigital",
                "kind": "dotdigital",
                "conn_id": DOTDIGITAL_CONN_ID,
                "tables": ["segment_memberships", "audience_profiles"],
                "segments": {"fans": {"address_book": BOOK}},
                "defer_imports": True,
                # tiny files, two imports at a time: the sync needs several deferrals
                "max_file_mb": 0.00005,
                "max_active_imports": 2,
                "poll_interval": 0.01,
                "backoff_base": 0.01,
            },
            {
                "name": "local_drop",
                "kind": "local",
                "path": str(tmp_path / "output"),
                "tables": ["audience_profiles"],
            },
        ],
    )
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    return config


# The DAG under test, written to its own bundle folder (dag.test() runs DAGs of a bundle).
DAG_FILE = """
import json, os
from airflow.sdk import DAG, task
from audience_profiles.assets import DELIVERED, DELIVERED_TO
from audience_profiles.operators.deliver import DeliverOperator

with DAG("deliver_operator_test", schedule=None, catchup=False) as dag:

    @task
    def publish() -> dict[str, str]:
        return json.loads(os.environ["AP_TEST_EXPORTS"])

    @task
    def destinations() -> list[str]:
        return ["dotdigital", "local_drop"]

    DeliverOperator.partial(
        task_id="deliver",
        tables=publish(),
        outlets=[DELIVERED, DELIVERED_TO],
        map_index_template="{{ task.destination_name }}",
    ).expand(destination_name=destinations())
"""


def test_mapped_delivery_defers_until_dotdigital_imports_finish(
    airflow_db, pipeline_config, dotdigital, tmp_path, monkeypatch
):
    from airflow.utils.state import TaskInstanceState

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "deliver_operator_test.py").write_text(DAG_FILE)
    bundle = {
        "name": "deliver-operator-test",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(dags)},
    }
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    monkeypatch.setenv("AP_TEST_EXPORTS", json.dumps(exports(tmp_path / "export")))
    spec = importlib.util.spec_from_file_location(
        "deliver_operator_test", dags / "deliver_operator_test.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    run = module.dag.test(logical_date=RUN_DATE)

    delivered = {
        ti.rendered_map_index: ti.state
        for ti in run.get_task_instances()
        if ti.task_id == "deliver"
    }
    assert delivered == {
        "dotdigital": TaskInstanceState.SUCCESS,
        "local_drop": TaskInstanceState.SUCCESS,
    }
    assert dotdigital.members(BOOK) == set(PEOPLE[:-1])  # the last one never opted in
    imports = [c for c in dotdigital.calls("POST") if c[1].endswith("/contacts/import")]
    assert len(imports) > 2  # more imports than one round allows: the task deferred repeatedly
    assert (tmp_path / "output" / "audience_profiles" / "dt=2024-05-01").is_dir()
    # Each delivery's asset event is sent once, when its task succeeds: Dotdigital's after the
    # last of its deferrals, naming the date and the destination.
    events = {e["destination"]: e for e in asset_event_extras(DELIVERED, run.run_id)}
    assert sorted(events) == ["dotdigital", "local_drop"]
    assert events["dotdigital"]["ds"] == "2024-05-01"
    assert events["dotdigital"]["kind"] == "dotdigital"
    assert events["local_drop"]["rows"]["audience_profiles"] == len(PEOPLE)
    # and once to the destination's own asset, through the alias, with the same extra
    for name in ("dotdigital", "local_drop"):
        assert asset_event_extras(delivered_to(name), run.run_id) == [events[name]]


def test_a_trigger_that_gives_up_fails_the_task_for_a_retry(pipeline_config):
    operator = DeliverOperator(task_id="deliver", destination_name="dotdigital", tables={})
    event = {"status": "timeout", "imports": {}, "message": "imports still running after 3600s"}
    with pytest.raises(ImportWaitError, match="dotdigital: imports still running"):
        operator.resume({"ds": "2024-05-01", "run_id": "manual"}, event)


def test_the_import_trigger_retries_as_the_destination_is_configured(pipeline_config):
    operator = DeliverOperator(task_id="deliver", destination_name="dotdigital", tables={})
    _, kwargs = operator._import_trigger(["import-1"]).serialize()
    # backoff_base is set in the destination's options; the others are its defaults
    assert (kwargs["backoff_base"], kwargs["max_attempts"], kwargs["max_rate_limit_wait"]) == (
        0.01,
        6,
        900.0,
    )


def test_a_state_another_run_holds_is_waited_for_on_the_triggerer(pipeline_config, tmp_path):
    """Two dates' Dotdigital deliveries at once (a catch-up): the second failed its tries on
    StateLockedError within minutes while the first waited on its imports."""
    from airflow.sdk.exceptions import TaskDeferred

    from audience_profiles.destinations.sync_state import StateLockedError
    from audience_profiles.operators.deliver import STATE_WAIT, STATE_WAIT_MAX

    state = tmp_path / "work" / "state" / "dotdigital.duckdb"
    state.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(60)",
            str(state),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    operator = DeliverOperator(
        task_id="deliver", destination_name="dotdigital", tables=exports(tmp_path / "export")
    )
    context = {"ds": "2024-05-01", "run_id": "manual"}
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context)
        assert deferred.value.method_name == "after_state_wait"
        assert deferred.value.kwargs == {"waited_seconds": STATE_WAIT.total_seconds()}
        assert deferred.value.timeout == STATE_WAIT * 4  # without a triggerer: a retry
        with pytest.raises(StateLockedError):  # two hours on: the try fails, for a retry
            operator.after_state_wait(context, waited_seconds=STATE_WAIT_MAX.total_seconds())
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(TaskDeferred) as deferred:  # the lock is free: it syncs (and defers)
        operator.after_state_wait(context, waited_seconds=30)
    assert deferred.value.method_name == "resume"


def test_an_error_a_retry_would_repeat_fails_the_delivery_at_once(tmp_path, monkeypatch):
    """``execute`` is under ``dag_defaults.fails_fast``: here two local drops that are one
    folder through a link (found at delivery, which follows links), a ConfigError; a
    ``snowflake`` destination's rejected credentials (``CredentialsRejected``) likewise."""
    from airflow.sdk.exceptions import AirflowFailException

    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    config = write_config(
        tmp_path,
        destinations=[
            {
                "name": name,
                "kind": "local",
                "path": str(tmp_path / folder),
                "tables": ["audience_profiles"],
            }
            for name, folder in (("a", "out"), ("b", "link"))
        ],
    )
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    operator = DeliverOperator(
        task_id="deliver", destination_name="a", tables=exports(tmp_path / "export")
    )
    with pytest.raises(AirflowFailException, match=r"\(b\) writes audience_profiles where"):
        operator.execute({"ds": "2024-05-01", "run_id": "manual"})
