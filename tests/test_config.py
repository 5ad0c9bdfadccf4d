from __future__ import annotations

import datetime as dt
import re

import pytest
import yaml

from audience_profiles.config import (
    PROJECT_ROOT,
    ConfigError,
    declared_options,
    load_config,
    load_yaml,
    parse_config,
)
from audience_profiles.segments import load_segments

DEFAULT_FILE = PROJECT_ROOT / "include" / "config" / "pipeline.yml"
MINIMAL = {"start_date": "2022-01-01", "landing_root": "x"}


def test_default_config_is_valid():
    config = load_config(PROJECT_ROOT / "include" / "config" / "pipeline.yml")
    assert config.warehouse.engine == "duckdb"
    assert [d.kind for d in config.destinations] == ["local"]
    assert config.landing_root.startswith(str(PROJECT_ROOT))


def test_env_expansion_and_relative_paths(monkeypatch):
    monkeypatch.setenv("LANDING", "/data/in")
    config = parse_config(
        {"start_date": "2022-01-01", "landing_root": "${LANDING}", "work_dir": "${MISSING:-w}"},
        "p.yml",
    )
    assert config.landing_root == "/data/in"
    assert config.work_dir == str(PROJECT_ROOT / "w")


def test_an_unset_variable_without_a_default_fails_the_load_naming_the_key(monkeypatch):
    # Read as "", work_dir: ${AP_HOME}/ was / and landing_root: ${LANDING} the project root;
    # the scratch sweep then emptied /tmp.
    monkeypatch.delenv("AP_TEST_UNSET", raising=False)
    raw = {**MINIMAL, "destinations": [{"name": "a", "kind": "local", "path": "${AP_TEST_UNSET}"}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert str(err.value) == (
        "p.yml: destinations[0].path: the environment variable AP_TEST_UNSET is not set; set it, "
        "or give a default: ${AP_TEST_UNSET:-default}"
    )
    with pytest.raises(ConfigError, match=r"^p.yml: work_dir: the environment variable AP_TEST"):
        parse_config({**MINIMAL, "work_dir": "${AP_TEST_UNSET}/"}, "p.yml")


@pytest.mark.parametrize("value", ["${AP_TEST:?must be set}", "${AP_TEST-x}", "a/${AP TEST}"])
def test_a_shell_form_not_read_here_fails_rather_than_staying_text(value, monkeypatch):
    # docker-compose.yml uses ${VAR:?...}: copied here, the landing was a folder named so
    monkeypatch.setenv("AP_TEST", "/data")
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "landing_root": value}, "p.yml")
    assert str(err.value) == (
        f"p.yml: landing_root: {value!r}: only ${{VAR}} and ${{VAR:-default}} are read from the "
        "environment here"
    )


def test_variables_read_as_a_shell_reads_them(monkeypatch):
    monkeypatch.setenv("AP_TEST_EMPTY", "")
    monkeypatch.delenv("AP_TEST_UNSET", raising=False)
    config = parse_config(
        {
            **MINIMAL,
            # :- gives the default when the variable is unset or empty
            "landing_root": "${AP_TEST_EMPTY:-in}",
            "work_dir": "${AP_TEST_UNSET:-w}/${AP_TEST_EMPTY}x",
            "landing_conn_id": "${AP_TEST_UNSET:-}aws",
        },
        "p.yml",
    )
    assert config.landing_root == str(PROJECT_ROOT / "in")
    assert config.work_dir == str(PROJECT_ROOT / "w" / "x")
    assert config.landing_conn_id == "aws"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"landing_root": "${AP_TEST_EMPTY}"}, "p.yml: landing_root: must be a path, not ''"),
        ({"work_dir": " "}, "p.yml: work_dir: must be a path, not ' '"),
        ({"warehouse": {"path": "${AP_TEST_EMPTY}"}}, "p.yml: warehouse.path: must be a path"),
        (
            {"destinations": [{"name": "a", "kind": "local", "path": "${AP_TEST_EMPTY}"}]},
            "p.yml: destinations[0].path: must be a path, not ''",
        ),
        (
            {
                "destinations": [
                    {"name": "d", "kind": "dotdigital", "conn_id": "c", "state_path": ""}
                ]
            },
            "p.yml: destinations[0].state_path: must be a path, not ''",
        ),
        # read as the config file's folder, they loaded, and the run's first reader failed
        ({"identity_config": "${AP_TEST_EMPTY}"}, "p.yml: identity_config: must be a path, not ''"),
        ({"segments_config": " "}, "p.yml: segments_config: must be a path, not ' '"),
        # ${AP_HOME}/ with AP_HOME empty: the sweep of <work_dir>/tmp/ emptied the system's /tmp
        ({"work_dir": "${AP_TEST_EMPTY}/"}, "p.yml: work_dir: '/' is the root of the file system"),
    ],
)
def test_a_path_empty_after_expansion_fails_the_load_naming_the_key(monkeypatch, raw, message):
    monkeypatch.setenv("AP_TEST_EMPTY", "")
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, **raw}, "p.yml")
    assert str(err.value).startswith(message)


def test_every_value_is_expanded_and_no_key(monkeypatch):
    # bucket: ${BUCKET} stayed literal, and was accepted
    monkeypatch.setenv("AP_TEST_BUCKET", "fan-data")
    monkeypatch.setenv("AP_TEST_TOPIC", "profiles")
    config = parse_config(
        {
            **MINIMAL,
            "destinations": [
                {"name": "s3", "kind": "s3", "bucket": "${AP_TEST_BUCKET}", "prefix": "a/${X:-b}"},
                {"name": "k", "kind": "kafka", "conn_id": "c", "topic": "${AP_TEST_TOPIC}"},
            ],
            "retention": {"interactions_days": 30},
        },
        "p.yml",
    )
    s3, kafka = config.destinations
    assert (s3.options["bucket"], s3.options["prefix"]) == ("fan-data", "a/b")
    assert kafka.options["topic"] == "profiles"
    assert config.raw["destinations"][1]["topic"] == "profiles"  # what later readers see
    # a key is a name, not a value: ${...} in one is an unknown key, as written
    with pytest.raises(ConfigError, match=r"unknown key '\$\{AP_TEST_TOPIC\}'"):
        parse_config({**MINIMAL, "${AP_TEST_TOPIC}": 1}, "p.yml")


def test_the_dag_files_read_their_values_whatever_is_unset_elsewhere(tmp_path, monkeypatch):
    # read_dag_settings and read_alerts_conn_id must not fail on the rest of the file
    from audience_profiles.config import read_alerts_conn_id, read_dag_settings

    monkeypatch.delenv("AP_TEST_UNSET", raising=False)
    monkeypatch.setenv("AP_TEST_START", "2022-02-01")
    monkeypatch.setenv("AP_TEST_ALERTS", "alerts_conn")
    path = tmp_path / "pipeline.yml"
    path.write_text(
        "start_date: ${AP_TEST_START}\nlanding_root: ${AP_TEST_UNSET}\n"
        "alerts: {webhook_conn_id: '${AP_TEST_ALERTS}'}\n"
    )
    assert read_dag_settings(path).start_date == dt.date(2022, 2, 1)
    assert read_alerts_conn_id(path) == "alerts_conn"
    with pytest.raises(ConfigError, match="landing_root: the environment variable AP_TEST_UNSET"):
        load_config(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"landing_root": "x"}, "p.yml: missing required key start_date"),
        (
            {"start_date": "2022-13-01", "landing_root": "x"},
            "p.yml: start_date: '2022-13-01' is not a date in YYYY-MM-DD",
        ),
        (
            {"start_date": "2022-01-01", "landing_root": "x", "warehouse": {"engine": "oracle"}},
            "warehouse.engine",
        ),
        (
            {"start_date": "2022-01-01", "landing_root": "x", "destinations": [{"name": "a"}]},
            "missing required key destinations[0].kind",
        ),
        (
            # it names the destination's Airflow asset (Airflow caps names at 1500 characters)
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "d" * 201, "kind": "local"}],
            },
            "destinations[0].name: at most 200 characters, not 201",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local", "tables": ["nope"]}],
            },
            "destinations[0].tables: unknown table 'nope'",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local", "pii": "maybe"}],
            },
            "destinations[0].pii",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [
                    {"name": "a", "kind": "local"},
                    {"name": "a", "kind": "s3", "bucket": "b"},
                ],
            },
            "destination names must be unique: a",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local", "formats": ["csv", "csv"]}],
            },
            "destinations[0].formats: csv listed more than once",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [
                    {"name": "a", "kind": "snowflake", "tables": ["quarantine", "quarantine"]}
                ],
            },
            "destinations[0].tables: quarantine listed more than once",
        ),
    ],
)
def test_errors_name_file_and_key(raw, message):
    with pytest.raises(ConfigError, match=".*"):
        parse_config(raw, "p.yml")
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert message in str(err.value)
    assert str(err.value).startswith("p.yml")


def test_retention_is_validated_when_the_file_loads():
    with pytest.raises(
        ConfigError, match=r"p.yml: retention.interactions_days must be a whole number"
    ):
        parse_config(
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "retention": {"interactions_days": 0},
            },
            "p.yml",
        )


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="nope.yml: cannot read"):
        load_config(tmp_path / "nope.yml")
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("start_date: 2022-01-01  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yml: the pipeline configuration is not UTF-8"):
        load_config(latin1)

    # A network disk's hiccup is not a mistake in the file: the task retries it (fails_fast
    # lets anything but a NotRetryable through).
    def hiccup(self, *args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(type(latin1), "read_text", hiccup)
    with pytest.raises(OSError, match="Input/output error") as error:
        load_config(latin1)
    assert not isinstance(error.value, ConfigError)


def shipped() -> dict:
    """include/config/pipeline.yml, parsed: the reviewer's mistakes are made on a copy of it."""
    return yaml.safe_load(DEFAULT_FILE.read_text())


def edited(path: str, value) -> dict:
    """The shipped file with ``value`` at ``path`` (``warehouse.threads``, ``destinations.0.pi``)."""
    raw = shipped()
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # a typo'd key would be ignored: the drop sends emails plain, alerts stay off, DuckDB stays
        (
            "destinations.0.pi",
            "hashed",
            "p.yml: destinations[0].pi: unknown key 'pi' (did you mean 'pii'?) in destination "
            "'local_drop' (kind local)",
        ),
        (
            "destinations.0.enabeld",
            False,
            "destinations[0].enabeld: unknown key 'enabeld' (did you mean 'enabled'?)",
        ),
        (
            "alerts.webhook_conn",
            "audience_profiles_alerts",
            "p.yml: alerts.webhook_conn: unknown key 'webhook_conn' (did you mean "
            "'webhook_conn_id'?) in alerts",
        ),
        (
            "alert",
            {"webhook_conn_id": "audience_profiles_alerts"},
            "p.yml: alert: unknown key 'alert' (did you mean 'alerts'?) at the top level",
        ),
        (
            "warehouse.engin",
            "snowflake",
            "p.yml: warehouse.engin: unknown key 'engin' (did you mean 'engine'?) in warehouse",
        ),
        (
            "stream.lookback",
            60,
            "p.yml: stream.lookback: unknown key 'lookback' (did you mean 'lookback_seconds'?)",
        ),
        (
            "retention.interaction_days",
            30,
            "interaction_days",  # privacy.retention words the rest
        ),
        # yes/no and numbers are what YAML says, not what Python's bool() or int() make of them
        (
            "destinations.0.enabled",
            "false",
            "p.yml: destinations[0].enabled: must be true or false (unquoted), not 'false'",
        ),
        (
            "destinations.0.csv_injection_escape",
            "no",
            "p.yml: destinations[0].csv_injection_escape: must be true or false",
        ),
        ("destinations.0.enabled", None, "destinations[0].enabled: must be true or false"),
        (
            "destinations.0.quicksight_manifest",
            "false",
            "p.yml: destinations[0].quicksight_manifest: must be true or false (unquoted)",
        ),
        ("warehouse.threads", "two", "p.yml: warehouse.threads: must be a whole number, not 'two'"),
        ("warehouse.threads", "2", "p.yml: warehouse.threads: must be a whole number, not '2'"),
        ("warehouse.threads", 2.5, "warehouse.threads: must be a whole number, not 2.5"),
        ("warehouse.threads", True, "warehouse.threads: must be a whole number, not True"),
        ("warehouse.threads", 0, "warehouse.threads: must be 1 or more, not 0"),
        ("warehouse.threads", 257, "warehouse.threads: must be 256 or less, not 257"),
        (
            "warehouse.compact_after_erasure",
            "false",
            "p.yml: warehouse.compact_after_erasure: must be true or false (unquoted), not 'false'",
        ),
        # DuckDB refused them at the first warehouse task (retried), or ran out of memory there
        (
            "warehouse.memory_limit",
            "2 gigs",
            "p.yml: warehouse.memory_limit: must be an amount of memory in MB, GB, TB, MiB, GiB or "
            "TiB (2GB, 512MiB), or a share of the machine's, at most 100% (80%), not '2 gigs'",
        ),
        ("warehouse.memory_limit", 2, "warehouse.memory_limit: must be an amount of memory"),
        ("warehouse.memory_limit", "0GB", "warehouse.memory_limit: must be an amount of memory"),
        ("warehouse.memory_limit", "512KB", "warehouse.memory_limit: must be an amount"),
        ("warehouse.memory_limit", "150%", "warehouse.memory_limit: must be an amount of memory"),
        # a key of the other engine was ignored
        (
            "warehouse.database",
            "ANALYTICS",
            "p.yml: warehouse.database: a key of engine snowflake, which engine duckdb does not "
            "read; take it out (engine duckdb reads engine, schema, path, memory_limit, threads, "
            "compact_after_erasure)",
        ),
        ("warehouse.conn_id", "sf", "warehouse.conn_id: a key of engine snowflake"),
        # written unquoted into the SQL: on Snowflake each failed at login or at its first query
        ("warehouse.schema", "audience-build", "p.yml: warehouse.schema: must be a plain name"),
        ("warehouse.schema", 123, "not starting with a digit), not '123'"),
        ("warehouse.schema", "", "warehouse.schema: must be a plain name"),
        (
            "warehouse.schema",
            "ANALYTICS.AUDIENCE_BUILD",
            "not 'ANALYTICS.AUDIENCE_BUILD': the database goes in warehouse.database",
        ),
        (
            "stream.lookback_seconds",
            "600",
            "p.yml: stream.lookback_seconds: must be a whole number",
        ),
        # start_date is a date: an int made both DAG files fail to import with an AttributeError
        (
            "start_date",
            20220111,
            "p.yml: start_date: must be a date (YYYY-MM-DD), not 20220111 (int)",
        ),
        ("start_date", "20220111", "p.yml: start_date: '20220111' is not a date in YYYY-MM-DD"),
        ("start_date", "11/01/2022", "p.yml: start_date: '11/01/2022' is not a date"),
        ("start_date", dt.datetime(2022, 1, 11, 6), "p.yml: start_date: must be a date"),
        ("start_date", True, "p.yml: start_date: must be a date"),
        # sections are what they say they are
        ("alerts", ["x"], "p.yml: alerts: must be a mapping, not ['x']"),
        ("warehouse", "duckdb", "p.yml: warehouse: must be a mapping"),
        ("stream", [600], "p.yml: stream: must be a mapping"),
        ("stream.destinations", "profile_stream", "p.yml: stream.destinations: must be a list"),
        # found by the stream task only, after the file had loaded
        (
            "stream.destinations",
            ["local_drp"],
            "p.yml: stream.destinations: no destination named local_drp (did you mean "
            "'local_drop'?)",
        ),
        ("destinations.0.tables", {"a": 1}, "p.yml: destinations[0].tables: must be a list"),
        # read as the default tables, both of personal data
        ("destinations.0.tables", [], "p.yml: destinations[0].tables: must list one table or more"),
        ("destinations.0.format", "csv", "destinations[0].format: give formats or format"),
        (
            "destinations.0.kind",
            "locl",
            "p.yml: destinations[0].kind: destination 'local_drop' has unknown kind 'locl' "
            "(did you mean 'local'?)",
        ),
        ("alerts.webhook_conn_id", ["a"], "p.yml: alerts.webhook_conn_id: must be a string"),
        # landing_wait: a source named wrong would never be waited for
        (
            "landing_wait.required",
            ["interaction"],
            "p.yml: landing_wait.required: 'interaction' is no dated source (did you mean "
            "'interactions'?); dated sources: interactions, form_entries, identities",
        ),
        # the catalogue has no date: any file of it would do for every date
        ("landing_wait.required", ["elements"], "'elements' is no dated source"),
        (
            "landing_wait.required",
            "interactions",
            "p.yml: landing_wait.required: must be a list of source names, not 'interactions'",
        ),
        (
            "landing_wait.marker",
            "SUCCESS",
            "p.yml: landing_wait.marker: 'SUCCESS' must be a file name starting with _ or .",
        ),
        ("landing_wait.marker", "_done/x", "landing_wait.marker: '_done/x' must be a file name"),
        # never a file a writer could finish with
        (
            "landing_wait.marker",
            "..",
            "p.yml: landing_wait.marker: '..' names a folder, not a file",
        ),
        ("landing_wait.marker", ".", "landing_wait.marker: '.' names a folder, not a file"),
        ("landing_wait.deadline_hours", -1, "landing_wait.deadline_hours: must be 0 or more"),
        ("landing_wait.deadline_hours", "6h", "landing_wait.deadline_hours: must be a number"),
        ("landing_wait.poke_minutes", 0, "landing_wait.poke_minutes: must be above 0, not 0"),
        # past a timedelta's range these failed the first task with an OverflowError, retried
        (
            "landing_wait.deadline_hours",
            1.0e300,
            "p.yml: landing_wait.deadline_hours: must be 168 or less, not 1e+300",
        ),
        ("landing_wait.poke_minutes", 1441, "landing_wait.poke_minutes: must be 1440 or less"),
        (
            "stream.lookback_seconds",
            10**12,
            "p.yml: stream.lookback_seconds: must be 604800 or less, not 1000000000000",
        ),
        (
            "landing_wait.late_check_days",
            1.5,
            "landing_wait.late_check_days: must be a whole number",
        ),
        # every run lists each day's partitions: 31 days at most
        (
            "landing_wait.late_check_days",
            32,
            "landing_wait.late_check_days: must be 31 or less, not 32",
        ),
        ("quality.min_profiles_kept", 50, "quality.min_profiles_kept: a share of the earlier"),
        ("quality.min_profiles_kept", -0.1, "quality.min_profiles_kept: must be 0 or more"),
        ("quality.min_profiles_kept", "50%", "quality.min_profiles_kept: must be a number"),
        (
            "landing_wait.wait_hours",
            6,
            "p.yml: landing_wait.wait_hours: unknown key 'wait_hours' (did you mean "
            "'deadline_hours'?) in landing_wait",
        ),
    ],
)
def test_mistakes_fail_with_the_file_and_the_key(path, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(edited(path, value), "p.yml")
    assert message in str(err.value)
    assert str(err.value).startswith("p.yml: ")


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        parse_config(edited("warehouse.thread", 2), "p.yml")
    assert str(err.value) == (
        "p.yml: warehouse.thread: unknown key 'thread' (did you mean 'threads'?) in warehouse; "
        "valid keys: compact_after_erasure, conn_id, database, engine, memory_limit, path, schema, "
        "threads"
    )


def test_several_unknown_keys_are_named_at_once():
    raw = edited("destinations.0.pi", "hashed")
    raw["destinations"][0]["formts"] = ["csv"]
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert str(err.value).startswith(
        "p.yml: destinations[0]: unknown keys 'pi' (did you mean 'pii'?), 'formts' (did you mean "
        "'formats'?) in destination 'local_drop' (kind local); valid keys: "
    )


def test_a_key_with_no_close_match_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        parse_config(edited("zzz", 1), "p.yml")
    assert "unknown key 'zzz' at the top level; valid keys:" in str(err.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.date(2022, 1, 11), dt.date(2022, 1, 11)),  # start_date: 2022-01-11
        (dt.datetime(2022, 1, 11), dt.date(2022, 1, 11)),  # start_date: 2022-01-11 00:00:00
        ("2022-01-11", dt.date(2022, 1, 11)),  # start_date: "2022-01-11"
        ("${AP_TEST_START:-2022-01-11}", dt.date(2022, 1, 11)),
    ],
)
def test_start_date_is_a_date(value, expected):
    assert parse_config({**MINIMAL, "start_date": value}, "p.yml").start_date == expected


def test_each_engine_takes_its_own_warehouse_keys():
    snowflake = {"engine": "snowflake", "conn_id": "sf", "database": "ANALYTICS", "schema": "A"}
    assert parse_config({**MINIMAL, "warehouse": snowflake}, "p.yml").warehouse.database == (
        "ANALYTICS"
    )
    for key, value in (("path", "wh.duckdb"), ("memory_limit", "2GB"), ("threads", 4)):
        with pytest.raises(ConfigError) as err:
            parse_config({**MINIMAL, "warehouse": {**snowflake, key: value}}, "p.yml")
        assert str(err.value) == (
            f"p.yml: warehouse.{key}: a key of engine duckdb, which engine snowflake does not "
            "read; take it out (engine snowflake reads engine, schema, conn_id, database)"
        )


@pytest.mark.parametrize("limit", ["2GB", "512MiB", "1.5 gb", "1TiB", "80%", "0.5GB"])
def test_memory_limit_as_duckdb_takes_it(limit):
    config = parse_config({**MINIMAL, "warehouse": {"memory_limit": limit}}, "p.yml")
    assert config.warehouse.memory_limit == limit


def test_booleans_and_numbers_as_yaml_writes_them():
    config = parse_config(
        yaml.safe_load(
            """
            start_date: 2022-01-11
            landing_root: x
            warehouse: {threads: 4}
            stream: {lookback_seconds: 0, destinations: []}
            alerts: {webhook_conn_id: alerts}
            destinations:
              - {name: a, kind: local, enabled: false, csv_injection_escape: false}
              - {name: b, kind: local, enabled: true}
            """
        ),
        "p.yml",
    )
    assert config.warehouse.threads == 4
    assert (config.stream.lookback_seconds, config.stream.destinations) == (0, ())
    # the stream task's default, where config.py's check had defaulted it to 0
    assert parse_config(MINIMAL, "p.yml").stream.lookback_seconds == 600
    assert [(d.enabled, d.csv_injection_escape) for d in config.destinations] == [
        (False, False),
        (True, True),
    ]
    assert [d.name for d in config.enabled_destinations] == ["b"]


def test_the_dated_sources_are_the_partitioned_ones_of_the_landing():
    from audience_profiles.config import LANDING_SOURCES
    from audience_profiles.landing import SOURCES

    assert set(LANDING_SOURCES) == {name for name, s in SOURCES.items() if s.partitioned}


def test_every_list_of_the_sources_names_the_landings_sources():
    # Kept apart so that DAG files and config need not import the landing code (DuckDB): a
    # source added to one list only failed later with a bare KeyError (validate's by_source).
    from audience_profiles.dag_defaults import EXTRACT_SOURCES
    from audience_profiles.landing import SOURCES
    from audience_profiles.pipeline import VALIDATION_ORDER
    from audience_profiles.stream import SOURCES as STREAMED

    built = sorted(set(SOURCES) - {"erasure_requests"})  # read by the erasure DAG alone
    for names in (EXTRACT_SOURCES, VALIDATION_ORDER, STREAMED):
        assert sorted(names) == built


def test_landing_wait_as_written_and_by_default():
    config = parse_config(
        yaml.safe_load(
            """
            start_date: 2022-01-11
            landing_root: x
            landing_wait:
              required: [interactions, form_entries, interactions]
              marker: _SUCCESS
              deadline_hours: 0
              poke_minutes: 0.5
              late_check_days: 0
            """
        ),
        "p.yml",
    )
    wait = config.landing_wait
    assert (wait.required, wait.marker) == (("interactions", "form_entries"), "_SUCCESS")
    assert (wait.deadline_hours, wait.poke_minutes, wait.late_check_days) == (0.0, 0.5, 0)
    default = parse_config(MINIMAL, "p.yml").landing_wait
    assert (default.required, default.late_check_days) == ((), 7)  # no wait unless asked
    assert load_config(DEFAULT_FILE).landing_wait.required == ()  # the sample's dates are sparse


def test_empty_sections_mean_the_defaults():
    config = parse_config(
        {
            **MINIMAL,
            "warehouse": None,
            "alerts": None,
            "stream": None,
            "destinations": None,
            "quality": None,
        },
        "p.yml",
    )
    assert config.quality.min_profiles_kept == 0.5  # the volume guard is on unless turned off
    assert config.warehouse.engine == "duckdb"
    assert config.destinations == ()


# Every pipeline.yml shown anywhere in the project must load: a key documented anywhere stays valid.
DOCUMENTED = sorted((PROJECT_ROOT / "docs").glob("*.md")) + [PROJECT_ROOT / "README.md"]
_YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)
_DOCSTRING_EXAMPLE = re.compile(r"pipeline\.yml[^\n]*::\n\n((?:    [^\n]*\n|\n)+)")
# Blocks of the other configuration files (identity.yml, segments.yml), by their first key.
_OTHER_FILES = {"segments", "blocked_values", "limits"}


def documented_examples() -> list:
    """(where, parsed block) of every pipeline.yml example: docs, README, module docstrings."""
    found = []
    for page in DOCUMENTED:
        text = page.read_text()
        for match in _YAML_BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.name}:{line}", match.group(1)))
    package = PROJECT_ROOT / "include" / "audience_profiles"
    for module in sorted(package.rglob("*.py")):
        for match in _DOCSTRING_EXAMPLE.finditer(module.read_text()):
            block = "\n".join(line[4:] for line in match.group(1).splitlines())
            found.append((str(module.relative_to(package)), block))
    examples = []
    for where, block in found:
        raw = load_yaml(block, where)  # as the file is read: repeated keys fail
        if isinstance(raw, list):  # destination entries shown alone
            raw = {"destinations": raw}
        if next(iter(raw)) not in _OTHER_FILES:
            examples.append(pytest.param(raw, id=where))
    return examples


@pytest.mark.parametrize("raw", documented_examples())
def test_documented_examples_load(raw, request):
    config = parse_config({**MINIMAL, **raw}, request.node.callspec.id)
    # and name segments the shipped segments.yml defines: copied, an example naming others
    # failed build_segments, and with it every delivery of the run
    shipped = load_segments(PROJECT_ROOT / "include" / "config" / "segments.yml").ids
    for dest in config.destinations:
        assert set(dest.options.get("segments") or {}) <= set(shipped), dest.name


def test_documented_examples_are_found():
    examples = {p.id: p.values[0] for p in documented_examples()}
    assert len(examples) >= 20
    assert any(where.startswith("README.md") for where in examples)
    for section in ("retention", "alerts", "stream", "warehouse", "start_date", "quality"):
        assert any(section in raw for raw in examples.values()), section
    kinds = {d["kind"] for raw in examples.values() for d in raw.get("destinations", [])}
    # every kind, a new one too: its module's docstring example counts
    assert kinds == set(declared_options())


def test_yaml_keeps_ids_and_scores_as_text_and_refuses_a_repeated_key(tmp_path):
    """YAML 1.1 reads 2:1 as 121 (base 60), 0601 as 385 (octal), 1_000 as 1000, and keeps the last
    of two equal keys: a segment filter or a whole segment would change without a word."""
    from audience_profiles.config import load_yaml
    from audience_profiles.segments import load_segments

    text = (
        "a: 2:1\nb: 0601\nc: 1_000\nd: 12\ne: -3\nf: 0.5\ng: 1.0\nh: 5.0e-05\ni: 1e5\n"
        "j: +1\nk: -0\nl: +1.5\nm: -0.5\n"
    )
    assert load_yaml(text, "x.yml") == {
        "a": "2:1",
        "b": "0601",
        "c": "1_000",
        "d": 12,
        "e": -3,
        "f": 0.5,
        "g": 1.0,
        "h": 0.00005,  # as yaml.dump writes a small number
        "i": "1e5",  # an id: an exponent without a point stays text
        # signed as no decimal is written: ids, which read as 1, 0 and 1.5 lost their text
        "j": "+1",
        "k": "-0",
        "l": "+1.5",
        "m": -0.5,
    }
    segments = tmp_path / "segments.yml"
    segments.write_text(
        "segments:\n"
        "  draw_fans:\n    interaction: {option: 2:1, poll_id: 0601}\n"
        "  fans:\n    attribute: {column: optin_1, equals: true}\n"
        "  fans:\n    form_entries: {min: 2}\n"
    )
    with pytest.raises(ConfigError, match=r"segments\.yml: line 6: duplicate key 'fans' .*line 4"):
        load_segments(segments)
    segments.write_text(segments.read_text().rsplit("  fans:\n", 1)[0])
    (draw,) = [s for s in load_segments(segments).segments if s.segment_id == "draw_fans"]
    assert draw.rule.params["filters"] == {"option": ["2:1"], "poll_id": ["0601"]}


def test_a_destination_may_be_built_from_an_anchor_with_a_merge_key(tmp_path):
    # <<: *anchor failed: "could not determine a constructor for the tag ...merge"
    path = tmp_path / "pipeline.yml"
    path.write_text(
        "start_date: 2022-01-11\nlanding_root: x\n"
        "destinations:\n"
        "  - &drop {name: eu_drop, kind: s3, bucket: eu, formats: [csv, json], pii: hashed}\n"
        "  - <<: *drop\n"
        "    name: us_drop\n"
        "    bucket: us\n"
    )
    eu, us = load_config(path).destinations
    assert (us.name, us.options["bucket"], us.formats, us.pii) == (
        "us_drop",
        "us",
        ("csv", "json"),
        "hashed",
    )
    assert (eu.name, eu.options["bucket"]) == ("eu_drop", "eu")
    # a key written twice beside the merge is still a mistake
    path.write_text(path.read_text() + "    bucket: us2\n")
    with pytest.raises(ConfigError, match=r"line 8: duplicate key 'bucket' \(first on line 7\)"):
        load_config(path)


@pytest.mark.parametrize("kind", ["sql", "snowflake"])
def test_a_warehouse_destination_without_conn_id_fails_when_the_file_loads(kind):
    # It failed at delivery, after the whole build, as a plain error retried three times.
    raw = {**MINIMAL, "destinations": [{"name": "wh", "kind": kind}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert str(err.value) == (
        f"p.yml: destinations[0].conn_id: destination 'wh' (kind {kind}) needs the id of an "
        "Airflow connection"
    )
    parse_config({**MINIMAL, "destinations": [{"name": "wh", "kind": kind, "conn_id": "c"}]})


def test_two_drops_writing_one_table_to_one_place_are_refused():
    # Each run's drop replaces the table's dt= folder: the last delivery deleted the other's
    # parts, and the run reported both delivered.
    first = {"name": "csv", "kind": "local", "path": "/out", "tables": ["audience_profiles"]}
    second = {**first, "name": "parquet", "formats": ["parquet"], "path": "/out/"}
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "destinations": [first, second]}, "p.yml")
    assert str(err.value) == (
        "p.yml: destinations[1] (parquet) writes audience_profiles where destinations[0] (csv) "
        "does: each run's drop would delete the other's; give one of them another path or prefix"
    )
    s3 = {"name": "a", "kind": "s3", "bucket": "b", "prefix": "p", "tables": ["quarantine"]}
    with pytest.raises(ConfigError, match=r"destinations\[1\] \(b\) writes quarantine where"):
        parse_config({**MINIMAL, "destinations": [s3, {**s3, "name": "b", "prefix": "/p/"}]})
    # other tables, another place, or one of them disabled: fine
    for other in (
        {**second, "tables": ["quarantine"]},
        {**second, "path": "/out2"},
        {**second, "enabled": False},
    ):
        parse_config({**MINIMAL, "destinations": [first, other]})
    parse_config({**MINIMAL, "destinations": [s3, {**s3, "name": "b", "prefix": "q"}]})
    # one container name in two storage accounts: two places
    azure = {"name": "a", "kind": "azure", "container": "c", "conn_id": "wasb_a"}
    parse_config({**MINIMAL, "destinations": [azure, {**azure, "name": "b", "conn_id": "wasb_b"}]})
    # but one place: the default account twice, one bucket (names are global), one folder
    for one, other in (
        ({**azure, "conn_id": "wasb_default"}, {**azure, "name": "b", "conn_id": None}),
        ({**s3, "conn_id": "aws_default"}, {**s3, "name": "b", "conn_id": "aws_partner"}),
        (first, {**second, "conn_id": "ignored"}),
    ):
        with pytest.raises(ConfigError, match="each run's drop would delete the other's"):
            parse_config({**MINIMAL, "destinations": [one, other]})


def test_two_warehouses_loading_one_table_into_one_schema_are_refused():
    # They share the table and its load log: each delivery rewrote the other's rows (under its
    # own pii policy), and one's older date was taken for the other's.
    first = {"name": "sf", "kind": "snowflake", "conn_id": "sf", "schema": "AP", "pii": "plain"}
    second = {**first, "name": "sf_hashed", "schema": "ap", "pii": "hashed"}
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "destinations": [first, second]}, "p.yml")
    assert str(err.value) == (
        "p.yml: destinations[1] (sf_hashed) loads audience_profiles into the schema "
        "destinations[0] (sf) loads it into: each delivery would rewrite the other's rows; load "
        "it from one of them only, or into another schema"
    )
    sql = {"name": "pg", "kind": "sql", "conn_id": "pg", "tables": ["quarantine"]}
    with pytest.raises(ConfigError, match=r"destinations\[1\] \(pg2\) loads quarantine into"):
        parse_config({**MINIMAL, "destinations": [sql, {**sql, "name": "pg2"}]})
    # other tables, another schema, database, connection or kind, or one of them disabled: fine
    for one, other in (
        ({**first, "tables": ["audience_profiles"]}, {**second, "tables": ["quarantine"]}),
        (first, {**second, "schema": "AP_HASHED"}),
        (first, {**second, "database": "OTHER"}),
        (first, {**second, "conn_id": "sf_other"}),
        (first, {**second, "enabled": False}),
        # a sql destination quotes lower-case names: "audience_profiles" is another table
        (first, {**first, "name": "sf_sql", "kind": "sql"}),
    ):
        parse_config({**MINIMAL, "destinations": [one, other]})


@pytest.mark.parametrize(
    ("written", "reason"),
    [("2022-13-11", "month must be in 1..12"), ("2022-02-30", "day is out of range for month")],
)
def test_an_impossible_date_names_the_file_and_the_line(tmp_path, written, reason):
    # YAML reads them as dates, and its ValueError named neither the file nor the key
    path = tmp_path / "pipeline.yml"
    path.write_text(f"landing_root: x\nstart_date: {written}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: line 2: '{written}' is not a date ({reason})"


# 100000000000 passed the load and failed each delivery with an OverflowError naming no key
@pytest.mark.parametrize("value", [0, -1, 1.5, "7", True, 100000000000, 36501])
def test_keep_days_is_checked_when_the_file_loads(value):
    # Checked only at delivery, a bad keep_days failed the deliver task after the run had built,
    # checked and published the date.
    drop = {"name": "local_drop", "kind": "local", "path": "out", "keep_days": value}
    with pytest.raises(ConfigError, match=r"p\.yml: destinations\[0\]\.keep_days: must be"):
        parse_config({**MINIMAL, "destinations": [drop]}, "p.yml")


def test_keep_days_of_a_whole_number_loads():
    drop = {"name": "local_drop", "kind": "local", "path": "out", "keep_days": 30}
    config = parse_config({**MINIMAL, "destinations": [drop]}, "p.yml")
    assert config.destinations[0].options["keep_days"] == 30


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"kind": "kinesis", "stream_name": "s", "max_attempts": "five"}, "max_attempts: must be a whole number, not 'five'"),
        ({"kind": "firehose", "delivery_stream": "s", "max_attempts": 0}, "max_attempts: must be 1 or more, not 0"),
        ({"kind": "kafka", "topic": "t", "flush_timeout_seconds": "5m"}, "flush_timeout_seconds: must be a number, not '5m'"),
        ({"kind": "kinesis", "stream_name": "s", "retry_max_seconds": 0}, "retry_max_seconds: must be above 0, not 0"),
        ({"kind": "sql", "conn_id": "c", "batch_rows": 1.5}, "batch_rows: must be a whole number, not 1.5"),
        ({"kind": "dotdigital", "conn_id": "d", "poll_interval": True}, "poll_interval: must be a number, not True"),
        # past a week: no wait anyone means, and past what a sleep or a timedelta takes
        ({"kind": "dotdigital", "conn_id": "d", "import_timeout": 1.0e300}, "import_timeout: must be 604800 or less, not 1e+300"),
    ],
)  # fmt: skip
def test_a_kinds_numeric_option_is_checked_when_the_file_loads(entry, said):
    # Read only by the delivery, after the run had built, checked and published the date, such a
    # value failed there as a bare ValueError (invalid literal for int()), and was retried.
    with pytest.raises(ConfigError, match=re.escape(f"p.yml: destinations[0].{said}")):
        parse_config({**MINIMAL, "destinations": [{"name": "d", **entry}]}, "p.yml")


def test_a_numeric_option_of_another_kind_is_named_as_unknown_not_as_a_wrong_number():
    # Checked before the kind's keys, a Kafka entry's max_attempts: 0 was told to be 1 or more,
    # and once corrected was refused as a key Kafka does not take.
    entry = {"name": "d", "kind": "kafka", "topic": "t", "max_attempts": 0}
    with pytest.raises(ConfigError, match=r"max_attempts: unknown key 'max_attempts'"):
        parse_config({**MINIMAL, "destinations": [entry]}, "p.yml")


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        # written unquoted into CREATE SCHEMA and into a string literal
        ({"kind": "snowflake", "schema": "A; DROP SCHEMA B"}, "schema: must be a plain name (letters, digits and underscores, not starting with a digit), not 'A; DROP SCHEMA B'"),
        ({"kind": "snowflake", "schema": "ANALYTICS.AUDIENCE"}, "schema: must be a plain name (letters, digits and underscores, not starting with a digit), not 'ANALYTICS.AUDIENCE': the database goes in database"),
        ({"kind": "snowflake", "database": "x' OR '1"}, "database: must be a plain name"),
        ({"kind": "snowflake", "database": 2024}, "database: must be a plain name (letters, digits and underscores, not starting with a digit), not '2024'"),
        # a list failed with an AttributeError at delivery
        ({"kind": "sql", "schema": ["a", "b"]}, "schema: must be a string, not ['a', 'b']"),
        # written into CREATE TABLE as it is
        ({"kind": "sql", "column_types": {"string": "TEXT); DROP TABLE x; --"}}, "column_types.string: must be a type name (a letter, then letters, digits, underscores, spaces, parentheses and commas, as VARCHAR(32000) or TIMESTAMP_NTZ), not 'TEXT); DROP TABLE x; --'"),
        ({"kind": "sql", "column_types": {"string": "TEXT 'x'"}}, "column_types.string: must be a type name"),
        ({"kind": "sql", "column_types": {"date": None}}, "column_types.date: must be a type name"),
        # a typo was ignored: the column kept its default type
        ({"kind": "sql", "column_types": {"strng": "TEXT"}}, "column_types.strng: unknown key 'strng' (did you mean 'string'?) in column_types of destination 'wh'; valid keys: boolean, date, float, integer, string, timestamp"),
        ({"kind": "sql", "column_types": "TEXT"}, "column_types: must map kinds of column (string, boolean, integer, float, date, timestamp) to type names, not 'TEXT'"),
    ],
)  # fmt: skip
def test_names_and_types_written_into_sql_are_checked_when_the_file_loads(entry, said):
    raw = {**MINIMAL, "destinations": [{"name": "wh", "conn_id": "c", **entry}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert str(err.value).startswith(f"p.yml: destinations[0].{said}")


def test_sql_names_and_types_as_documented_load():
    entries = [
        {"name": "sf", "kind": "snowflake", "conn_id": "c", "database": "ANALYTICS", "schema": "a_1"},
        # the sql kind quotes its schema: any name is one
        {"name": "pg", "kind": "sql", "conn_id": "c", "schema": "audience-build", "column_types": {
            "string": "VARCHAR(32000) CHARACTER SET UNICODE", "float": "NUMERIC(38, 9)",
            "timestamp": "TIMESTAMP(6)", "boolean": "BYTEINT"}},
    ]  # fmt: skip
    sf, pg = parse_config({**MINIMAL, "destinations": entries}, "p.yml").destinations
    assert (sf.options["database"], sf.options["schema"]) == ("ANALYTICS", "a_1")
    assert (pg.options["schema"], pg.options["column_types"]["float"]) == (
        "audience-build",
        "NUMERIC(38, 9)",
    )


@pytest.mark.parametrize(
    ("name", "said"),
    [
        # its state file went outside work_dir (default_state_path)
        ("../../../escape_state", "'../../../escape_state' holds / or \\"),
        ("a\\b", "'a\\\\b' holds / or \\"),
        (".hidden", "'.hidden' starts with ."),
        ("a\nb", "'a\\nb' holds a control character"),
        ("a\tb", "'a\\tb' holds a control character"),
        ("   ", "'   ' is blank"),
        (" drop", "' drop' starts or ends with white space"),
        ("drop\n", "'drop\\n' starts or ends with white space"),
    ],
)
def test_a_destination_name_that_is_no_file_name_fails_the_load(name, said):
    raw = {**MINIMAL, "destinations": [{"name": name, "kind": "dotdigital", "conn_id": "d"}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert str(err.value).startswith(f"p.yml: destinations[0].name: {said}: a destination's name")


def test_a_destination_name_is_text():
    # a list became "['a', 'b']"; a number is its text, as for any other text key
    raw = {**MINIMAL, "destinations": [{"name": ["a", "b"], "kind": "local"}]}
    with pytest.raises(ConfigError, match=r"^p.yml: destinations\[0\]\.name: must be a string"):
        parse_config(raw, "p.yml")
    raw = {**MINIMAL, "destinations": [{"name": 2024, "kind": "local"}]}
    assert parse_config(raw, "p.yml").destinations[0].name == "2024"
    raw = {**MINIMAL, "destinations": [{"name": "EU drop (2024) é", "kind": "local"}]}
    assert parse_config(raw, "p.yml").destinations[0].name == "EU drop (2024) é"


def test_two_local_drops_in_one_folder_are_refused_however_it_is_written(tmp_path):
    # The check compared the text: the default folder and data/output, a folder and folder/.
    # passed, and each run's drop deleted the other's parts.
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    tables = {"tables": ["audience_profiles"]}
    default = {"name": "a", "kind": "local", **tables}
    for one, other in (
        (default, {"name": "b", "kind": "local", "path": "data/output", **tables}),
        (
            {**default, "path": str(tmp_path / "out")},
            {"name": "b", "kind": "local", "path": f"{tmp_path}/out/./", **tables},
        ),
    ):
        with pytest.raises(ConfigError, match=r"\(b\) writes audience_profiles where .* \(a\)"):
            parse_config({**MINIMAL, "destinations": [one, other]}, "p.yml")
    # A link to it is followed by the delivery, not here: the load runs while DAG files are
    # parsed, and a hung mount under a drop path would stall it (tests/destinations/test_drop.py)
    one = {**default, "path": str(tmp_path / "out")}
    other = {"name": "b", "kind": "local", "path": str(tmp_path / "link"), **tables}
    parse_config({**MINIMAL, "destinations": [one, other]}, "p.yml")


def test_two_dotdigital_destinations_keeping_one_state_file_are_refused(tmp_path):
    # Their confirmed contacts, watermarks and suppressions mixed: a contact one sent counted as
    # sent by the other.
    own = {"name": "a", "kind": "dotdigital", "conn_id": "d"}
    dd = {**own, "state_path": str(tmp_path / "s")}
    for one, other in (
        (dd, {**dd, "name": "b", "conn_id": "other_account"}),
        (dd, {**dd, "name": "b", "state_path": f"{tmp_path}/./s"}),
        (own, {**own, "name": "b", "state_path": f"{tmp_path}/work/state/a.duckdb"}),
    ):
        raw = {**MINIMAL, "work_dir": str(tmp_path / "work"), "destinations": [one, other]}
        with pytest.raises(ConfigError) as err:
            parse_config(raw, "p.yml")
        assert str(err.value).startswith("p.yml: destinations[1] (b) keeps its state in ")
        assert str(err.value).endswith("as destinations[0] (a) does: give each its own state_path")
    # by default each has its own file; one of them disabled is fine
    parse_config({**MINIMAL, "destinations": [own, {**own, "name": "b"}]})
    parse_config({**MINIMAL, "destinations": [dd, {**dd, "name": "b", "enabled": False}]})
