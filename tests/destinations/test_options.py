"""Each destination kind declares the pipeline.yml options it reads; any other key is a typo.

The declarations (``OPTIONS`` on each registered class) are checked twice: when the file loads,
from the modules' source (config.declared_options, no import), and by destination_for, from the
class. These tests keep the two in step with each other and with the code that reads options.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from audience_profiles.config import (
    DESTINATION_KEYS,
    DESTINATIONS_DIR,
    PROJECT_ROOT,
    ConfigError,
    _literal_options,
    class_literal,
    declared_options,
    kinds_declaring,
    module_of,
    parse_config,
    required_options,
    stream_kinds,
)
from audience_profiles.destinations import destination_for
from audience_profiles.destinations.base import registered_kinds

# Every registered kind, a new one included: these tests hold for each without a list to extend.
KINDS = tuple(sorted(declared_options()))
SHIPPED = {"local", "s3", "azure", "kinesis", "firehose", "kafka", "dotdigital", "snowflake", "sql"}
DROPS = {"local", "s3", "azure"}
SQL_LOADS = {"snowflake", "sql"}
# Module (under destinations/ unless a path says otherwise) -> the kinds whose options it reads:
# a kind's own module and the shared helpers it calls.
READERS = {
    "local.py": {"local"},
    "s3.py": {"s3"},
    "azure.py": {"azure"},
    "drop.py": DROPS,
    "drop_erasure.py": DROPS,
    "kinesis.py": {"kinesis"},
    "firehose.py": {"firehose"},
    "streams.py": {"kinesis", "firehose"},  # RetryPolicy.from_options, BatchedStreamDestination
    "kafka.py": {"kafka"},
    "dotdigital.py": {"dotdigital"},
    "sync_state.py": {"dotdigital"},
    "snowflake.py": {"snowflake"},
    "generic_sql.py": {"sql"},
    "warehouse_load.py": SQL_LOADS,
    "warehouse_erasure.py": SQL_LOADS,
    "../segments.py": {"dotdigital"},  # the segments a Dotdigital destination names
    "../report.py": {"local"},  # the run report next to a local drop
}
for _kind in KINDS:  # a kind's own module reads its options (a new kind's too)
    READERS.setdefault(f"{module_of(_kind)}.py", set()).add(_kind)
_READS = [
    re.compile(r"\b(?:options|opts)\.get\(\s*\"(\w+)\""),
    re.compile(r"\b(?:options|opts)\[\s*\"(\w+)\"\s*\]"),
    re.compile(r"\b_flag\(\s*opts,\s*\"(\w+)\""),
]


def options_read(module: str) -> set[str]:
    text = (DESTINATIONS_DIR / module).read_text()
    return {key for pattern in _READS for key in pattern.findall(text)}


def pipeline(*entries: dict, source: str = "p.yml"):
    return parse_config(
        {"start_date": "2024-01-01", "landing_root": "data/landing", "destinations": list(entries)},
        source,
    )


def test_every_kind_declares_its_options_on_its_class():
    static = declared_options()
    assert set(static) >= SHIPPED
    for kind in KINDS:
        importlib.import_module(f"audience_profiles.destinations.{module_of(kind)}")
        cls = registered_kinds()[kind]
        assert "OPTIONS" in vars(cls), f"{cls.__name__} must declare OPTIONS itself"
        assert isinstance(cls.OPTIONS, frozenset)
        # what the file check reads from the source is what destination_for checks
        assert static[kind] == cls.OPTIONS, kind
        assert not cls.OPTIONS & set(DESTINATION_KEYS), f"{kind}: config.py reads those"
        # and the same of the ones it cannot work without, which are among them
        assert required_options(kind) == cls.REQUIRED_OPTIONS, kind
        assert cls.REQUIRED_OPTIONS <= cls.OPTIONS, kind
        # and of the names it writes unquoted (Snowflake's schema and database)
        assert class_literal(kind, "PLAIN_NAME_OPTIONS") == cls.PLAIN_NAME_OPTIONS, kind
        assert cls.PLAIN_NAME_OPTIONS <= cls.OPTIONS, kind


@pytest.mark.parametrize(
    ("kind", "option"),
    [("s3", "bucket"), ("azure", "container"), ("kinesis", "stream_name"),
     ("firehose", "delivery_stream"), ("kafka", "topic")],
)  # fmt: skip
@pytest.mark.parametrize("value", [None, "", "  ", ["a"]])
def test_a_missing_required_option_fails_when_the_file_loads(kind, option, value):
    # Checked only when the delivery built the destination, after the run had built, checked
    # and published the date.
    entry = {
        "name": "d",
        "kind": kind,
        "conn_id": "c",
        **({} if value is None else {option: value}),
    }
    with pytest.raises(ConfigError, match=rf"p\.yml: destinations\[0\]\.{option}: "):
        parse_config(
            {"start_date": "2024-01-01", "landing_root": "x", "destinations": [entry]}, "p.yml"
        )


def test_declared_options_are_exactly_the_ones_the_code_reads():
    static = declared_options()
    read_by_kind = {kind: set() for kind in KINDS}
    for module, kinds in READERS.items():
        keys = options_read(module)
        for kind in kinds:
            undeclared = keys - static[kind]
            assert not undeclared, f"{module} reads {undeclared}, not declared by {kind}"
            read_by_kind[kind] |= keys
    for kind in KINDS:
        unread = static[kind] - read_by_kind[kind]
        assert not unread, f"{kind} declares {unread}, which no code reads"
    # every module that reads an option is in READERS
    for path in sorted(DESTINATIONS_DIR.glob("*.py")):
        if options_read(path.name):
            assert path.name in READERS, f"{path.name} reads options: add it to READERS"


@pytest.mark.parametrize(
    ("entry", "key", "suggestion"),
    [
        ({"kind": "local", "paht": "data/out"}, "paht", "path"),
        ({"kind": "local", "pi": "hashed"}, "pi", "pii"),
        ({"kind": "s3", "bucket": "b", "buckt": "b"}, "buckt", "bucket"),
        (
            {"kind": "s3", "bucket": "b", "quicksight_manfest": True},
            "quicksight_manfest",
            "quicksight_manifest",
        ),
        ({"kind": "azure", "container": "c", "prefx": "p"}, "prefx", "prefix"),
        ({"kind": "kinesis", "stream_name": "s", "max_attempt": 3}, "max_attempt", "max_attempts"),
        ({"kind": "firehose", "delivery_streams": "d"}, "delivery_streams", "delivery_stream"),
        ({"kind": "kafka", "topics": "t"}, "topics", "topic"),
        ({"kind": "kafka", "topic": "t", "stream_name": "s"}, "stream_name", None),
        ({"kind": "dotdigital", "segment": {"a": {}}}, "segment", "segments"),
        ({"kind": "dotdigital", "segments": {"a": {}}, "dryrun": True}, "dryrun", "dry_run"),
        ({"kind": "snowflake", "schemas": "S"}, "schemas", "schema"),
        ({"kind": "sql", "column_type": {}}, "column_type", "column_types"),
    ],
)
def test_an_undeclared_option_fails_when_the_file_loads(entry, key, suggestion):
    with pytest.raises(ConfigError) as err:
        pipeline({"name": "dest", **entry})
    message = str(err.value)
    assert message.startswith(f"p.yml: destinations[0].{key}: unknown key {key!r}")
    assert f"in destination 'dest' (kind {entry['kind']})" in message
    if suggestion:
        assert f"{key!r} (did you mean {suggestion!r}?)" in message
    else:  # an option of another kind: nothing close here
        assert "did you mean" not in message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # a drop would write no part, remove the date's old ones and vouch for 0 rows
        ({"formats": []}, r"formats: must list one format or more .*not \[\]"),
        ({"max_file_mb": 0}, "max_file_mb: must be above 0, not 0"),  # was: no limit
        ({"max_file_mb": -1}, "max_file_mb: must be above 0, not -1"),  # was: a part per row
        ({"max_file_mb": "25O"}, "max_file_mb: must be a number, not '25O'"),  # was: at delivery
        ({"max_file_mb": True}, "max_file_mb: must be a number, not True"),
    ],
)
def test_a_drop_setting_that_would_mislead_fails_when_the_file_loads(entry, message):
    with pytest.raises(ConfigError, match=rf"p\.yml: destinations\[0\]\.{message}"):
        pipeline({"name": "drop", "kind": "s3", "bucket": "b", **entry})
    pipeline({"name": "drop", "kind": "s3", "bucket": "b", "max_file_mb": 0.5})
    pipeline({"name": "drop", "kind": "s3", "bucket": "b", "max_file_mb": None})  # no limit


def test_destination_for_checks_the_options_too(tmp_path):
    """A DestinationConfig that did not come through parse_config is checked when it is built."""
    config = pipeline({"name": "drop", "kind": "local", "path": str(tmp_path)})
    built = destination_for(config.destinations[0], config)
    assert built.kind == "local"
    typo = dataclasses.replace(
        config.destinations[0], options={"path": str(tmp_path), "pi": "hashed"}
    )
    with pytest.raises(ConfigError) as err:
        destination_for(typo, config)
    assert str(err.value).startswith(
        "p.yml: destinations[0].pi: unknown key 'pi' (did you mean 'pii'?) in destination 'drop' "
        "(kind local); valid keys: "
    )


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"kind": "kinesis", "stream_name": "s", "formats": ["parquet"]}, "formats"),
        ({"kind": "kafka", "topic": "t", "compression": "gzip"}, "compression"),
        (
            {"kind": "snowflake", "conn_id": "c", "csv_injection_escape": False},
            "csv_injection_escape",
        ),
    ],
)
def test_a_file_setting_on_a_kind_that_writes_no_files_is_refused(entry, key):
    """Read for every kind, they were ignored by those that write no files, silently: refused
    when the file loads, and by destination_for for a config built otherwise."""
    message = rf"p\.yml: destinations\[0\]\.{key}: .*writes no files"
    with pytest.raises(ConfigError, match=message):
        pipeline({"name": "dest", **entry})
    config = pipeline({"name": "dest", **{k: v for k, v in entry.items() if k != key}})
    given = dataclasses.replace(
        config.destinations[0],
        **{key: {"formats": ("parquet",), "compression": "gzip"}.get(key, entry[key])},
    )
    with pytest.raises(ConfigError, match=message):
        destination_for(given, config)
    files = pipeline({"name": "drop", "kind": "s3", "bucket": "b", **{key: entry[key]}})
    destination_for(files.destinations[0], files)  # a drop takes them


def test_every_declared_option_loads():
    entries = [
        {"name": kind, "kind": kind, "conn_id": "c"}
        | {o: _sample(o) for o in sorted(declared_options()[kind])}
        for kind in KINDS
    ]
    config = pipeline(*entries)
    assert {d.kind: set(d.options) for d in config.destinations} == {
        kind: set(declared_options()[kind]) for kind in KINDS
    }


def test_loading_the_file_imports_no_destination_module(tmp_path):
    """pipeline.yml is loaded while DAG files are parsed: the check must not import boto3 & co."""
    path = tmp_path / "pipeline.yml"
    entries = [
        {"name": kind, "kind": kind, "conn_id": "c"}
        | {o: _sample(o) for o in sorted(declared_options()[kind])}
        for kind in KINDS
    ]
    path.write_text(
        yaml.safe_dump({"start_date": "2024-01-01", "landing_root": "x", "destinations": entries})
    )
    typo = tmp_path / "typo.yml"
    typo.write_text(path.read_text().replace("topic:", "topik:"))
    script = textwrap.dedent(
        f"""
        import sys
        from audience_profiles.config import ConfigError, load_config
        load_config({str(path)!r})
        try:
            load_config({str(typo)!r})
        except ConfigError as exc:
            print(exc)
        loaded = [m for m in sys.modules if m.startswith("audience_profiles.destinations")]
        heavy = ("boto3", "confluent_kafka", "snowflake.connector", "azure.storage.blob", "duckdb")
        loaded += [m for m in heavy if m in sys.modules]
        print(loaded)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith(f"{typo}: destinations[")
    assert "unknown key 'topik' (did you mean 'topic'?) in destination 'kafka'" in out[0]
    assert out[1] == "[]"


def _options_of(source: str) -> frozenset[str] | None:
    return _literal_options(ast.parse(textwrap.dedent(source)).body[0])


def test_only_a_literal_declaration_is_read_from_the_source():
    assert _options_of('class A:\n    OPTIONS = frozenset({"a", "b"})') == {"a", "b"}
    assert _options_of('class A:\n    OPTIONS: ClassVar = frozenset(["a"])') == {"a"}
    assert _options_of("class A:\n    OPTIONS = frozenset()") == frozenset()
    # not literal, or not declared here: left to destination_for, which has the class
    assert _options_of('class A:\n    OPTIONS = B.OPTIONS | {"a"}') is None
    assert _options_of("class A:\n    limits = 1") is None


def _sample(option: str):
    """A value the loader takes for ``option``: a real true/false or number where it checks one."""
    from audience_profiles.config import SECONDS_OPTIONS, WHOLE_NUMBER_OPTIONS

    if option in WHOLE_NUMBER_OPTIONS or option in SECONDS_OPTIONS:
        return 1
    return {
        "quicksight_manifest": True,
        "max_file_mb": 1,
        "column_types": {"string": "TEXT"},
    }.get(option, "x")


def test_the_column_types_checked_at_load_are_the_ones_the_sql_kind_reads():
    from audience_profiles.config import COLUMN_TYPE_KINDS
    from audience_profiles.destinations.generic_sql import ANSI_TYPES, CONN_TYPE_TYPES

    assert set(COLUMN_TYPE_KINDS) == set(ANSI_TYPES)
    for types in CONN_TYPE_TYPES.values():  # and the shipped types pass their own check
        pipeline({"name": "wh", "kind": "sql", "conn_id": "c", "column_types": types})
    pipeline({"name": "wh", "kind": "sql", "conn_id": "c", "column_types": ANSI_TYPES})


# Kinds allowed to keep Destination.erase's "not_supported", which is a final answer: the request
# is then done and its identifiers purged, so the person could never be erased there later.
CANNOT_ERASE: set[str] = set()


def test_every_kind_erases_or_is_listed_as_unable_to():
    """A new kind that forgets ``erase`` would answer every request ``not_supported`` for good
    (destinations/base.py): it must implement it, or be added to CANNOT_ERASE on purpose."""
    from audience_profiles.destinations.base import Destination

    for kind in KINDS:
        importlib.import_module(f"audience_profiles.destinations.{module_of(kind)}")
        keeps_default = registered_kinds()[kind].erase is Destination.erase
        assert keeps_default == (kind in CANNOT_ERASE), kind


def test_the_flags_read_from_the_source_are_the_classes():
    """config.py reads WRITES_FILES, NEEDS_CONN_ID and STREAMED from the source, as OPTIONS:
    what it reads must be what the class says, or the load refuses a drop's formats (misses a
    conn_id, or the stream DAG leaves a stream out)."""
    assert stream_kinds() == ("firehose", "kafka", "kinesis")
    for kind in KINDS:
        importlib.import_module(f"audience_profiles.destinations.{module_of(kind)}")
        cls = registered_kinds()[kind]
        for flag in ("WRITES_FILES", "NEEDS_CONN_ID", "STREAMED"):
            assert (kind in kinds_declaring(flag)) == getattr(cls, flag), (kind, flag)


@pytest.fixture
def scratch_kinds(tmp_path, monkeypatch):
    """A destinations/ folder of the test's own, read as config.py reads the real one."""
    import audience_profiles.config as config_module

    folder = tmp_path / "destinations"
    folder.mkdir()
    for module in ("local", "drop"):  # a drop to build on, and the class it builds on
        (folder / f"{module}.py").write_text((DESTINATIONS_DIR / f"{module}.py").read_text())
    monkeypatch.setattr(config_module, "DESTINATIONS_DIR", folder)
    config_module.kind_declares.cache_clear()
    yield folder
    config_module.kind_declares.cache_clear()


def test_a_kind_building_on_a_drop_or_annotating_its_flag_writes_files(scratch_kinds):
    """A subclass of a drop inherits WRITES_FILES, and ``WRITES_FILES: ClassVar[bool] = True``
    (base.py's own style) sets it: both were read as writing no files, so their ``formats``
    failed the load and two of them on one path were not refused."""
    (scratch_kinds / "folder_store.py").write_text(
        textwrap.dedent(
            """
            from audience_profiles.destinations.local import LocalDestination
            from audience_profiles.destinations.base import register

            @register("folder_store")
            class FolderStore(LocalDestination):
                OPTIONS = frozenset({"path"})

            @register("annotated_store")
            class AnnotatedStore(Destination):
                OPTIONS = frozenset({"path"})
                WRITES_FILES: ClassVar[bool] = True
                NEEDS_CONN_ID: ClassVar[bool] = True
                STREAMED: ClassVar[bool] = True
            """
        )
    )
    assert kinds_declaring("WRITES_FILES") == {"local", "folder_store", "annotated_store"}
    assert kinds_declaring("NEEDS_CONN_ID") == {"annotated_store"}
    assert stream_kinds() == ("annotated_store",)  # the stream DAG sends to it
    pipeline({"name": "a", "kind": "folder_store", "path": "/tmp/a", "formats": ["json"]})
    with pytest.raises(ConfigError, match=r"destinations\[1\] \(b\) writes audience_profiles"):
        pipeline(
            {"name": "a", "kind": "folder_store", "path": "/tmp/a"},
            {"name": "b", "kind": "folder_store", "path": "/tmp/a"},
        )


def test_a_kind_is_found_in_whichever_module_registers_it(scratch_kinds):
    """destination_for imported ``destinations/<kind>.py``: a kind in a module named otherwise
    loaded without a word and failed as an unknown kind at delivery, after the whole build."""
    (scratch_kinds / "crm.py").write_text(
        '@register("crm_push")\nclass Push(Destination):\n    OPTIONS = frozenset()\n'
    )
    assert module_of("crm_push") == "crm"
    assert module_of("local") == "local"
    assert module_of("nope") is None


def test_the_sql_kind_is_built_from_the_module_that_registers_it():
    assert module_of("sql") == "generic_sql"
    config = pipeline({"name": "w", "kind": "sql", "conn_id": "c"})
    assert destination_for(config.destinations[0], config).kind == "sql"
