"""WaitForLandingOperator: the daily DAG's wait for a date's landing (pipeline.yml ``landing_wait``)."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from audience_profiles.config import CONFIG_ENV
from audience_profiles.operators.wait_for_landing import TRIGGER_GRACE, WaitForLandingOperator
from tests.support import INTERACTION_HEADER, write_config, write_csv


def configure(tmp_path, monkeypatch, **wait):
    config = write_config(tmp_path, landing_wait={"required": ["interactions"], **wait})
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    return config


def land(tmp_path, ds: str, name: str = "part-0.csv") -> None:
    folder = tmp_path / "landing" / "interactions" / f"date={ds}"
    write_csv(folder / name, INTERACTION_HEADER, [])  # the header alone: a day of no rows


def context(ds: str) -> dict:
    return {"ds": ds, "run_id": f"scheduled__{ds}"}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def test_nothing_required_returns_at_once(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    assert WaitForLandingOperator(task_id="w").execute(context("2022-04-29")) == {
        "ds": "2022-04-29",
        "required": [],
    }


def test_a_landed_partition_lets_the_run_go_on(tmp_path, monkeypatch):
    configure(tmp_path, monkeypatch)
    land(tmp_path, "2022-04-29")
    result = WaitForLandingOperator(task_id="w").execute(context("2022-04-29"))
    assert result == {"ds": "2022-04-29", "required": ["interactions"]}


def test_past_its_deadline_a_missing_partition_fails_the_run_at_once_naming_it(
    tmp_path, monkeypatch
):
    # A backfill of an old date: one look, then the run fails (no retries), rather than build the
    # day from no rows and go green.
    configure(tmp_path, monkeypatch)
    land(tmp_path, "2022-04-28")  # another date's partition is no help
    with pytest.raises(AirflowFailException) as failed:
        WaitForLandingOperator(task_id="w").execute(context("2022-04-29"))
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    assert str(failed.value) == (
        "2022-04-29: the landing is not complete (landing_wait.required; the daily DAG waits until "
        f"2022-04-30 06:00 UTC): interactions: {folder}: no data file in it yet. Land it (a file "
        "with only its header if the day had no rows) and run the date again (clear "
        "wait_for_landing with its downstream tasks: airflow tasks clear audience_profiles -t "
        "wait_for_landing -d -s 2022-04-29 -e 2022-04-29); to build without a source, take it "
        "out of landing_wait.required"
    )


def test_before_its_deadline_it_waits_on_the_triggerer_and_looks_again(tmp_path, monkeypatch):
    configure(tmp_path, monkeypatch, marker="_SUCCESS", poke_minutes=2)
    ds = today().isoformat()  # its day is not over: the deadline is hours away
    sensor = WaitForLandingOperator(task_id="w")
    land(tmp_path, ds)  # files, but not yet the writer's marker
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context(ds))
    assert deferred.value.method_name == "execute"
    moment = deferred.value.trigger.moment
    assert (
        before + dt.timedelta(minutes=2)
        <= moment
        <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    )
    assert deferred.value.timeout <= dt.timedelta(minutes=2) + TRIGGER_GRACE
    (tmp_path / "landing" / "interactions" / f"date={ds}" / "_SUCCESS").touch()
    assert sensor.execute(context(ds), event={"status": "ok"})["required"] == ["interactions"]


def test_the_last_wait_ends_at_the_deadline(tmp_path, monkeypatch):
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(today(), dt.time(), dt.UTC)
    # yesterday's run, whose deadline is a minute from now: it wakes then, not in five minutes
    hours = (now - midnight).total_seconds() / 3600 + 1 / 60
    configure(tmp_path, monkeypatch, deadline_hours=hours)
    ds = (today() - dt.timedelta(days=1)).isoformat()
    with pytest.raises(TaskDeferred) as deferred:
        WaitForLandingOperator(task_id="w").execute(context(ds))
    deadline = midnight + dt.timedelta(hours=hours)
    assert abs(deferred.value.trigger.moment - deadline) < dt.timedelta(seconds=1)


def test_a_file_no_run_reads_fails_the_try_naming_it_and_is_retried(tmp_path, monkeypatch):
    # As the extract does: not a wait of hours for a data file that is there under another name.
    from audience_profiles.landing import LandingError

    configure(tmp_path, monkeypatch)
    land(tmp_path, today().isoformat(), name="part-0.csv.7z")
    with pytest.raises(LandingError, match="does not read: part-0.csv.7z"):
        WaitForLandingOperator(task_id="w").execute(context(today().isoformat()))


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        (None, None),
        ("identity", "identity.yml: limts: unknown key 'limts' (did you mean 'limits'?)"),
        ("segments", "segments.yml: segments.fans: needs exactly one rule"),
        # a column audience_profiles does not have failed build_segments, after the build
        (
            "column",
            "segments.yml: segments.fans.attribute.column: 'favourite_colour' is not an "
            "audience_profiles column (accept_terms, ",
        ),
        # a value its column cannot hold failed build_segments, after the build
        (
            "value",
            "segments.yml: segments.fans.attribute.equals: 'yes' is text but optin_1 holds "
            "yes/no values (BOOLEAN): write true or false, unquoted",
        ),
        (
            "dotdigital",
            "pipeline.yml: segments.fans.adress_book: unknown key 'adress_book' (did you mean "
            "'address_book'?) in destination 'dd' (kind dotdigital)",
        ),
        # a consent column audience_profiles does not have failed the delivery, after the build
        (
            "consent",
            "pipeline.yml: destination 'dd': segments.fans.consent_column: 'optin_3' is not a "
            "yes/no column of audience_profiles (accept_terms, optin_1, optin_2)",
        ),
    ],
)
def test_a_mistake_in_the_other_configuration_fails_the_first_task_naming_it(
    tmp_path, monkeypatch, broken, said
):
    # Found by build_segments, the identity step or a delivery, after the extracts and the build.
    identity = tmp_path / "identity.yml"
    identity.write_text("limts: {shared_device: {email: 2}}\n" if broken == "identity" else "{}\n")
    fans = {
        "segments": "{}",
        "column": "{attribute: {column: favourite_colour, equals: red}}",
        "value": "{attribute: {column: optin_1, equals: 'yes'}}",
    }.get(broken, "{form_entries: {min: 1}}")
    (tmp_path / "segments.yml").write_text(f"segments:\n  fans: {fans}\n")
    book = "adress_book" if broken == "dotdigital" else "address_book"
    target = {book: "Fans", **({"consent_column": "optin_3"} if broken == "consent" else {})}
    dotdigital = {"name": "dd", "kind": "dotdigital", "conn_id": "d", "segments": {"fans": target}}
    config = write_config(tmp_path, [dotdigital], identity_config=str(identity))
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    if broken is None:
        assert WaitForLandingOperator(task_id="w").execute(context("2022-04-29"))
        return
    with pytest.raises(AirflowFailException) as failed:  # a config mistake: no retries
        WaitForLandingOperator(task_id="w").execute(context("2022-04-29"))
    assert said in str(failed.value)
    assert str(tmp_path) in str(failed.value)
