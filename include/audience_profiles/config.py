"""Load and validate ``pipeline.yml``: the one place sources, warehouse and destinations are set.

The file is read at task run time, validated as a whole each time, so a mistake fails with the
file and the key in the message instead of deep inside a task (a DAG file, parsed, reads only its
``start_date`` and ``alerts.late_after_hours``, see :func:`read_dag_settings`): a key no section
knows (the closest valid key is suggested), an option its destination kind does not declare
(``OPTIONS``, see destinations/base.py), a yes/no that is not a bare YAML ``true``/``false``, a
number that is not a whole number, a ``start_date`` that is not a date.

Any string value may hold ``${VAR}`` or ``${VAR:-default}``, expanded from the environment once,
as the file loads (:func:`_expanded`), as a shell does: the default when VAR is unset or empty; an
unset VAR without a default fails the load, naming the key. A relative path is resolved against
the project root (the folder that holds ``include/``), so the same file works from any working
directory, in ``airflow dags test`` and on a scheduler alike. Secrets never live here: connections
are named by their Airflow connection id and come from ``AIRFLOW_CONN_*`` or a secrets backend.
"""

from __future__ import annotations

import ast
import datetime as dt
import difflib
import functools
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from audience_profiles.errors import NotRetryable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "include" / "config" / "pipeline.yml"
CONFIG_ENV = "AUDIENCE_PROFILES_CONFIG"

OUTPUT_TABLES = (
    "interactions_enriched",
    "audience_profile_interactions",
    "audience_profiles",
    "profile_identifiers",
    "profile_merges",
    "identity_link_audit",
    "segment_memberships",
    "quarantine",
)
# The columns of audience_profiles, in order, with their types as DuckDB gives them: what
# include/sql/profiles/audience_profiles.sql builds and docs/data-contract.md promises
# (tests/test_pipeline.py holds the two together). Known without building the table, so the run's
# first task (wait_for_landing) refuses a segment rule or a Dotdigital option naming another.
PROFILE_COLUMNS = {
    "profile_id": "VARCHAR",
    "email": "VARCHAR",
    "external_id": "VARCHAR",
    "first_name": "VARCHAR",
    "last_name": "VARCHAR",
    "optin_1": "BOOLEAN",
    "optin_2": "BOOLEAN",
    "accept_terms": "BOOLEAN",
    "first_seen": "TIMESTAMP",
    "last_seen": "TIMESTAMP",
    "sessions": "BIGINT",
    "interactions": "BIGINT",
    "answers": "VARCHAR",
    "optin_1_at": "TIMESTAMP",
    "optin_1_source": "VARCHAR",
    "optin_2_at": "TIMESTAMP",
    "optin_2_source": "VARCHAR",
    "accept_terms_at": "TIMESTAMP",
    "accept_terms_source": "VARCHAR",
}
PII_POLICIES = ("plain", "hashed", "omit")
FORMATS = ("csv", "json", "parquet")
ENGINES = ("duckdb", "snowflake")

# Every key pipeline.yml may hold, per section: any other key is a typo and fails the load.
TOP_LEVEL_KEYS = (
    "start_date",
    "landing_root",
    "landing_conn_id",
    "work_dir",
    "warehouse",
    "identity_config",
    "segments_config",
    "destinations",
    "alerts",
    "retention",  # its keys: privacy.retention.RetentionPolicy
    "stream",
    "landing_wait",
    "quality",
)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # an SQL name both engines take unquoted
WAREHOUSE_KEYS = (
    "engine",
    "path",
    "conn_id",
    "database",
    "schema",
    "memory_limit",
    "threads",
    "compact_after_erasure",
)
# The warehouse keys only one engine reads (engine, schema: both): given to the other, ignored.
ENGINE_KEYS = {
    "duckdb": ("path", "memory_limit", "threads", "compact_after_erasure"),
    "snowflake": ("conn_id", "database"),
}
WAREHOUSE_THREADS_MAX = 256
# DuckDB's memory_limit: an amount in MB, GB, TB or MiB, GiB, TiB (any case, a space allowed), or
# a share of the machine's memory (80%), as its SET memory_limit takes them; a typo failed the
# first warehouse task, retried, and a KB limit every query.
_MEMORY_LIMIT = re.compile(r"(\d+(?:\.\d+)?) ?([MGT]i?B|%)", re.IGNORECASE)
ALERTS_KEYS = ("webhook_conn_id", "late_after_hours")
LATE_AFTER_HOURS_MAX = 7 * 24.0
# Upper bounds of the numbers that become a date or a wait: past them a value is no setting
# anyone means, and past what a date or a timedelta holds it failed later with an OverflowError
# naming no key, retried.
DAYS_MAX = 36500  # a hundred years (keep_days; segments.yml's within_days)
SECONDS_MAX = 7 * 24 * 3600  # a week (every option in seconds; stream.lookback_seconds)
DEADLINE_HOURS_MAX = LATE_AFTER_HOURS_MAX  # landing_wait.deadline_hours: a week
POKE_MINUTES_MAX = 24 * 60.0  # landing_wait.poke_minutes: a day
DESTINATION_NAME_MAX = 200
STREAM_KEYS = ("lookback_seconds", "destinations")
LANDING_WAIT_KEYS = ("required", "marker", "deadline_hours", "poke_minutes", "late_check_days")
QUALITY_KEYS = ("min_profiles_kept",)
# The dated sources a run extracts (landing.SOURCES, partitioned, without importing DuckDB): the
# catalogue (elements) has no date, so no partition of a date to wait for.
LANDING_SOURCES = ("interactions", "form_entries", "identities")
# The keys of a destination entry every kind takes (read here); the other keys of an entry are
# its kind's options, which the kind's class declares in ``OPTIONS`` (destinations/base.py).
DESTINATION_KEYS = (
    "name",
    "kind",
    "tables",
    "conn_id",
    "formats",
    "format",
    "compression",
    "pii",
    "csv_injection_escape",
    "enabled",
)
DESTINATIONS_DIR = Path(__file__).resolve().parent / "destinations"
SCRATCH_DIR = "tmp"  # under work_dir: PipelineConfig.scratch

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(NotRetryable, ValueError):
    """A configuration problem, always naming the file and the key."""


def _expand(value: str, source: str, key: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` in one value (``key``, its path, names it in errors).

    As a shell reads them: ``:-`` gives the default when VAR is unset or empty. An unset VAR
    without one fails: read as "", ``work_dir: ${AP_HOME}/`` became ``/``, whose ``tmp/`` the
    scratch sweep empties."""

    def value_of(ref: re.Match) -> str:
        name, default = ref.group(1), ref.group(2)
        found = os.environ.get(name)
        if default is not None:
            return found or default
        if found is None:
            raise ConfigError(
                f"{source}: {key}: the environment variable {name} is not set; set it, or give "
                f"a default: ${{{name}:-default}}"
            )
        return found

    # ${VAR:?message}, ${VAR-default}, ${VAR/...}: a shell reads them, this would have kept them
    # as text (a landing folder named "${VAR:?...}")
    refs = value.count("${")
    if refs != len(_ENV_REF.findall(value)):
        raise ConfigError(
            f"{source}: {key}: {value!r}: only ${{VAR}} and ${{VAR:-default}} are read from the "
            "environment here"
        )
    return _ENV_REF.sub(value_of, value) if refs else value


def _expanded(node: Any, source: str, key: str = "") -> Any:
    """``node`` with every string value in it expanded (:func:`_expand`); keys stay as written.
    ``key`` is the key path of ``node`` (``destinations[0]``), for errors."""
    if isinstance(node, str):
        return _expand(node, source, key)
    if isinstance(node, dict):
        return {k: _expanded(v, source, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expanded(v, source, f"{key}[{i}]") for i, v in enumerate(node)]
    return node


def resolve_path(value: str) -> str:
    """Make a local relative path absolute against the project root (``${VAR}`` is expanded
    before, with the rest of the file: :func:`_expanded`).

    URLs (``s3://``, ``abfs://`` ...) are returned untouched.
    """
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


@dataclass(frozen=True)
class WarehouseConfig:
    engine: str = "duckdb"
    path: str = str(PROJECT_ROOT / "data" / "warehouse.duckdb")
    conn_id: str | None = None
    database: str | None = None
    schema: str = "main"
    memory_limit: str = "2GB"
    threads: int = 2
    # DuckDB: the erasure DAG compacts the file after it removed rows (warehouse/compact.py)
    compact_after_erasure: bool = True


@dataclass(frozen=True)
class StreamSection:
    """``stream:``, read by the stream DAG's task (``stream.StreamSettings``, which also checks
    that the destinations named are enabled stream destinations)."""

    lookback_seconds: int = 600
    destinations: tuple[str, ...] | None = None  # None: every enabled stream destination


@dataclass(frozen=True)
class LandingWait:
    """``landing_wait:``: which sources a date's run waits for, and until when.

    The daily DAG's first task (``operators.wait_for_landing``) waits until every source in
    ``required`` has its partition for the date (a data file in it, or ``marker`` when one is
    set), looking every ``poke_minutes``, until ``deadline_hours`` after the date is over (UTC);
    then a partition still missing fails the run, named. A source not required may be missing
    (a day without SSO logins): its day counts 0 rows.

    Whatever is required, each run's report looks at the last ``late_check_days`` dates, its own
    included (0: none), for files that landed, or changed, after their date was built
    (``pipeline.late_landings``).
    """

    required: tuple[str, ...] = ()
    marker: str | None = None
    deadline_hours: float = 6.0
    poke_minutes: float = 5.0
    late_check_days: int = 7


@dataclass(frozen=True)
class QualitySection:
    """``quality:``: the settings of the write-audit-publish checks (``checks/quality.sql``).

    ``min_profiles_kept``: a run's ``audience_profiles`` must hold at least this share of the
    profiles the nearest earlier published date had, or its checks fail and nothing is delivered.
    A lost history or a truncated source would otherwise sync every destination down to what is
    left. 0: not checked.
    """

    min_profiles_kept: float = 0.5


@dataclass(frozen=True)
class DestinationConfig:
    """One entry of ``destinations:``. ``options`` holds the kind-specific keys."""

    name: str
    kind: str
    tables: tuple[str, ...]
    conn_id: str | None = None
    formats: tuple[str, ...] = ("csv",)
    compression: str | None = None
    pii: str = "plain"
    csv_injection_escape: bool = True
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    source_file: str
    start_date: dt.date
    landing_root: str
    landing_conn_id: str | None
    work_dir: str
    warehouse: WarehouseConfig
    identity_config: str
    segments_config: str
    destinations: tuple[DestinationConfig, ...]
    landing_wait: LandingWait = LandingWait()
    stream: StreamSection = StreamSection()
    quality: QualitySection = QualitySection()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise ConfigError(f"{self.source_file}: no destination named {name!r}")

    @property
    def enabled_destinations(self) -> tuple[DestinationConfig, ...]:
        return tuple(d for d in self.destinations if d.enabled)

    @property
    def scratch_root(self) -> Path:
        """``<work_dir>/tmp/``: where tasks make their temporary folders, for files rendered on
        the way (rows of people: plain emails under ``pii: plain``). A killed task's folder is
        removed by a later run's cleanup (``pipeline.sweep_scratch``); in the system's temporary
        folder it stayed."""
        root = Path(self.work_dir) / SCRATCH_DIR
        root.mkdir(parents=True, exist_ok=True)
        return root

    def scratch(self, prefix: str) -> tempfile.TemporaryDirectory:
        """A temporary folder under :attr:`scratch_root`, removed when the block ends."""
        return tempfile.TemporaryDirectory(prefix=prefix, dir=self.scratch_root)


def _require(mapping: dict, key: str, where: str, source: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise ConfigError(f"{source}: missing required key {where}{key}")
    return mapping[key]


def _suggestion(key: Any, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(mapping: dict, valid: Iterable[str], where: str, source: str, what: str) -> None:
    """Fail on a key ``valid`` does not hold, naming it and the closest valid key.

    ``where`` is the key path prefix (``""``, ``"warehouse."``, ``"destinations[0]."``), ``what``
    the section in words (``"in warehouse"``). A key no code reads would otherwise be ignored.
    """
    valid = set(valid)
    unknown = [key for key in mapping if key not in valid]
    if not unknown:
        return
    path = f"{where}{unknown[0]}" if len(unknown) == 1 else where.rstrip(".") or "top level"
    names = ", ".join(f"{key!r}{_suggestion(key, valid)}" for key in unknown)
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(
        f"{source}: {path}: unknown key{plural} {names} {what}; "
        f"valid keys: {', '.join(sorted(valid))}"
    )


def check_destination_options(
    config: DestinationConfig, accepted: Iterable[str], source: str, where: str
) -> None:
    """Fail when ``config.options`` holds a key its kind does not read (``Destination.OPTIONS``).

    ``where`` is the entry's key path prefix (``"destinations[0]."``). Called when the file loads
    (with the options read from the kind's source, see :func:`declared_options`) and again by
    ``destinations.destination_for``, with the class attribute.
    """
    reject_unknown(
        config.options,
        {*DESTINATION_KEYS, *accepted},
        where,
        source,
        f"in destination {config.name!r} (kind {config.kind})",
    )


def _flag(mapping: dict, key: str, default: bool, where: str, source: str) -> bool:
    """A yes/no key, strictly YAML true or false: a quoted "false" must not mean true."""
    if key not in mapping:
        return default
    value = mapping[key]
    if not isinstance(value, bool):
        raise ConfigError(
            f"{source}: {where}{key}: must be true or false (unquoted), not {value!r}"
        )
    return value


def whole_number(
    mapping: dict,
    key: str,
    default: int,
    where: str,
    source: str,
    minimum: int,
    maximum: int | None = None,
) -> int:
    """A whole number of at least ``minimum`` (and at most ``maximum``), strictly: no strings,
    floats or booleans."""
    if key not in mapping:
        return default
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {where}{key}: must be a whole number, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{source}: {where}{key}: must be {minimum} or more, not {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{source}: {where}{key}: must be {maximum} or less, not {value!r}")
    return value


def _number(
    mapping: dict,
    key: str,
    default: float,
    where: str,
    source: str,
    minimum: float,
    *,
    above: bool,
    maximum: float | None = None,
) -> float:
    """A number (whole or decimal) of at least ``minimum``, or above it when ``above`` (and at
    most ``maximum``); strictly: no strings or booleans."""
    if key not in mapping:
        return default
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: {where}{key}: must be a number, not {value!r}")
    if not (value > minimum if above else value >= minimum):
        limit = f"above {minimum:g}" if above else f"{minimum:g} or more"
        raise ConfigError(f"{source}: {where}{key}: must be {limit}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{source}: {where}{key}: must be {maximum:g} or less, not {value!r}")
    return float(value)


def _positive_number(
    mapping: dict, key: str, where: str, source: str, maximum: float | None = None
) -> None:
    """A number above 0 when given: a drop read ``max_file_mb: 0`` as no limit and ``-1`` as a
    part per row, and a typo (``25O``) failed only at delivery."""
    if mapping.get(key) is not None:  # left out, or null: no limit
        _number(mapping, key, 0, where, source, 0, above=True, maximum=maximum)


def _text(mapping: dict, key: str, default: str | None, where: str, source: str) -> str | None:
    """A string (a number is taken as its text); null or a missing key gives ``default``."""
    value = mapping.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{source}: {where}{key}: must be a string, not {value!r}")
    return str(value)


def _path(mapping: dict, key: str, default: str | None, where: str, source: str) -> str | None:
    """A path (or URL) key, resolved (:func:`resolve_path`); null or left out, ``default``.
    Blank is refused, not resolved: "" was the project root (``landing_root: ${LANDING}``)."""
    value = _text(mapping, key, None, where, source)
    if value is None:
        return None if default is None else resolve_path(default)
    _refuse_blank_path(value, f"{where}{key}", source)
    return resolve_path(value)


def _refuse_blank_path(value: str, key: str, source: str) -> None:
    """A path key's value must not be blank: "" names the folder it is resolved against."""
    if not value.strip():
        raise ConfigError(
            f"{source}: {key}: must be a path, not {value!r} (an environment variable set "
            "but empty? ${VAR:-default} gives the default then)"
        )


def _section(raw: dict, key: str, source: str) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: must be a mapping, not {value!r}")
    return value


def _start_date(raw: dict, source: str) -> dt.date:
    """``start_date``: a YAML date (``2022-01-11``) or a YYYY-MM-DD string (``${VAR}`` expanded
    before: :func:`_expanded`)."""
    value = _require(raw, "start_date", "", source)
    if isinstance(value, dt.datetime):
        if value.time() != dt.time() or value.tzinfo is not None:
            raise ConfigError(
                f"{source}: start_date: must be a date (YYYY-MM-DD), not a date and time ({value})"
            )
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _ISO_DATE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
        raise ConfigError(f"{source}: start_date: {value!r} is not a date in YYYY-MM-DD")
    raise ConfigError(
        f"{source}: start_date: must be a date (YYYY-MM-DD), not {value!r} ({type(value).__name__})"
    )


def _registered_kind(node: ast.ClassDef) -> str | None:
    for decorator in node.decorator_list:
        if (
            isinstance(decorator, ast.Call)
            and isinstance(decorator.func, ast.Name)
            and decorator.func.id == "register"
            and decorator.args
            and isinstance(decorator.args[0], ast.Constant)
            and isinstance(decorator.args[0].value, str)
        ):
            return decorator.args[0].value
    return None


def _assigned(node: ast.ClassDef, name: str) -> ast.expr | None:
    """What the class's own body assigns to ``name`` (``name = ...`` or ``name: T = ...``)."""
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return value
    return None


def _literal_options(node: ast.ClassDef, attribute: str = "OPTIONS") -> frozenset[str] | None:
    """The class's own ``OPTIONS = frozenset({...})`` (or another such attribute) if it is a
    literal, else None."""
    value = _assigned(node, attribute)
    if not (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "frozenset"
        and len(value.args) <= 1
        and not value.keywords
    ):
        return None
    if not value.args:
        return frozenset()
    try:
        names = ast.literal_eval(value.args[0])
    except ValueError:
        return None
    if not isinstance(names, set | list | tuple) or not all(isinstance(n, str) for n in names):
        return None
    return frozenset(names)


@functools.cache
def _parsed(path: Path) -> ast.Module | None:
    """One destinations module's syntax tree, or None when it defines no class (read once per
    process, however many times pipeline.yml loads in it)."""
    text = path.read_text()
    if "class " not in text:
        return None
    return ast.parse(text, str(path))


@functools.cache
def _registered_in(path: Path) -> dict[str, frozenset[str] | None]:
    """Kind -> literal ``OPTIONS`` of each ``@register("<kind>")`` class in one module's source."""
    if "@register(" not in path.read_text() or (tree := _parsed(path)) is None:
        return {}
    return {
        kind: _literal_options(node)
        for node in tree.body
        if isinstance(node, ast.ClassDef) and (kind := _registered_kind(node))
    }


def _own_flag(node: ast.ClassDef, flag: str) -> bool | None:
    """``<flag> = True|False`` (or ``<flag>: ClassVar[bool] = ...``) in the class's own body."""
    value = _assigned(node, flag)
    if isinstance(value, ast.Constant) and isinstance(value.value, bool):
        return value.value
    return None


def _base_class(path: Path, base: ast.expr) -> tuple[Path, ast.ClassDef] | None:
    """Where a base class of a class in ``path`` is defined, if in ``destinations/``: the same
    module, or one it imports the name from (``from audience_profiles.destinations.x import``)."""
    name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
    tree = _parsed(path)
    if name is None or tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return path, node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            module = node.module or ""
            if node.level:  # from .local import LocalDestination
                stem = module
            elif module.startswith("audience_profiles.destinations."):
                stem = module.rsplit(".", 1)[1]
            else:
                return None
            other = DESTINATIONS_DIR / f"{stem}.py"
            if other.is_file() and (other_tree := _parsed(other)) is not None:
                for candidate in other_tree.body:
                    if isinstance(candidate, ast.ClassDef) and candidate.name == name:
                        return other, candidate
    return None


def _class_flag(path: Path, node: ast.ClassDef, flag: str, depth: int = 0) -> bool | None:
    """The class's ``flag`` as Python finds it: its own, else its bases' (left first, depth
    first); None when no class in ``destinations/`` on the way sets it."""
    own = _own_flag(node, flag)
    if own is not None or depth > 8:
        return own
    for base in node.bases:
        found = _base_class(path, base)
        if found and (inherited := _class_flag(*found, flag, depth + 1)) is not None:
            return inherited
    return None


FILE_KEYS = ("formats", "format", "compression", "csv_injection_escape")  # drops' only
DEFAULT_DROP_PATH = "data/output"  # a local drop's folder when it names none (project-relative)
# Destination options that are a whole number of at least 1, or a number of seconds above 0,
# whichever kind reads them (drops, streams, sql, Dotdigital). A kind may bound them further.
WHOLE_NUMBER_OPTIONS = ("keep_days", "max_attempts", "batch_rows", "max_active_imports")
SECONDS_OPTIONS = (
    "retry_base_seconds",
    "retry_max_seconds",
    "flush_timeout_seconds",
    "poll_interval",
    "import_timeout",
    "backoff_base",
    "max_rate_limit_wait",
)

# Options naming a warehouse schema or database (snowflake, sql): text (a list failed only at
# delivery), and a plain name where the kind writes it unquoted (``PLAIN_NAME_OPTIONS``).
SQL_NAME_OPTIONS = ("schema", "database")
# The sql kind's ``column_types``: the kinds of column it reads (generic_sql.ANSI_TYPES' keys),
# each mapped to a type name written into CREATE TABLE as it is.
COLUMN_TYPE_KINDS = ("string", "boolean", "integer", "float", "date", "timestamp")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ (),]*")  # VARCHAR(32000) CHARACTER SET UNICODE


def _check_sql_names(config: DestinationConfig, source: str, where: str) -> None:
    """The options of :data:`SQL_NAME_OPTIONS` are text, plain names where the kind's class
    says so (``PLAIN_NAME_OPTIONS``: Snowflake's are written unquoted into CREATE SCHEMA and a
    string literal; the sql kind quotes its schema), and ``column_types`` maps the kinds of
    :data:`COLUMN_TYPE_KINDS` to type names (:data:`_TYPE_NAME`)."""
    plain = class_literal(config.kind, "PLAIN_NAME_OPTIONS")
    for key in SQL_NAME_OPTIONS:
        name = _text(config.options, key, None, where, source)
        if name is not None and key in plain and not _PLAIN_NAME.fullmatch(name):
            raise ConfigError(
                f"{source}: {where}{key}: must be a plain name (letters, digits and underscores, "
                f"not starting with a digit), not {name!r}"
                + (": the database goes in database" if key == "schema" and "." in name else "")
            )
    types = config.options.get("column_types")
    if types is None:
        return
    if not isinstance(types, dict):
        raise ConfigError(
            f"{source}: {where}column_types: must map kinds of column "
            f"({', '.join(COLUMN_TYPE_KINDS)}) to type names, not {types!r}"
        )
    # a typo (strng:) was ignored, and the column kept its default type
    reject_unknown(
        types,
        COLUMN_TYPE_KINDS,
        f"{where}column_types.",
        source,
        f"in column_types of destination {config.name!r}",
    )
    for kind, type_name in types.items():
        if not isinstance(type_name, str) or not _TYPE_NAME.fullmatch(type_name.strip()):
            raise ConfigError(
                f"{source}: {where}column_types.{kind}: must be a type name (a letter, then "
                f"letters, digits, underscores, spaces, parentheses and commas, as "
                f"VARCHAR(32000) or TIMESTAMP_NTZ), not {type_name!r}"
            )


def refuse_file_keys(config: DestinationConfig, given: list[str], source: str, where: str) -> None:
    """Fail when ``given`` names :data:`FILE_KEYS` set on a kind that writes no files, which
    would ignore them. Called when the file loads and again by ``destination_for``."""
    if given:
        raise ConfigError(
            f"{source}: {where}{given[0]}: destination {config.name!r} (kind {config.kind}) "
            f"writes no files: {', '.join(given)} would be ignored; take them out"
        )


@functools.cache
def kind_declares(kind: str, flag: str) -> bool:
    """Whether the class of ``kind`` sets ``<flag>`` true, read from the source as ``OPTIONS``
    is: its own value or one inherited from a class in ``destinations/`` (``class
    Store(LocalDestination)``), assigned or annotated (``WRITES_FILES: ClassVar[bool] = True``).
    Flags: ``WRITES_FILES`` (only they take :data:`FILE_KEYS`), ``NEEDS_CONN_ID``, ``STREAMED``,
    ``LOADS_TABLES``."""
    module = module_of(kind)
    if module is None:
        return False
    path = DESTINATIONS_DIR / f"{module}.py"
    return any(
        isinstance(node, ast.ClassDef)
        and _registered_kind(node) == kind
        and bool(_class_flag(path, node, flag))
        for node in _parsed(path).body
    )


def class_literal(kind: str, attribute: str) -> frozenset[str]:
    """A literal frozenset of option names in the body of the class of ``kind``, read from the
    source as ``OPTIONS`` is: ``REQUIRED_OPTIONS``, ``PLAIN_NAME_OPTIONS``."""
    module = module_of(kind)
    if module is None:
        return frozenset()
    for node in _parsed(DESTINATIONS_DIR / f"{module}.py").body:
        if isinstance(node, ast.ClassDef) and _registered_kind(node) == kind:
            return _literal_options(node, attribute) or frozenset()
    return frozenset()


def required_options(kind: str) -> frozenset[str]:
    """The options the class of ``kind`` cannot work without (``REQUIRED_OPTIONS``)."""
    return class_literal(kind, "REQUIRED_OPTIONS")


def check_required_options(
    config: DestinationConfig, required: Iterable[str], source: str, where: str
) -> None:
    """Fail when an option the kind needs (``Destination.REQUIRED_OPTIONS``) is missing or
    empty. Called when the file loads and again by ``destinations.destination_for``."""
    for key in sorted(required):
        value = config.options.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(
                f"{source}: {where}{key}: destination {config.name!r} (kind {config.kind}) "
                f"needs {key}"
            )
        _text(config.options, key, None, where, source)  # a name, not a list or a mapping


def kinds_declaring(flag: str) -> frozenset[str]:
    """Every kind whose class sets ``<flag>`` true (:func:`kind_declares`)."""
    return frozenset(kind for kind in declared_options() if kind_declares(kind, flag))


def stream_kinds() -> tuple[str, ...]:
    """The kinds the stream DAG sends its micro-batches to (``STREAMED``), sorted."""
    return tuple(sorted(kinds_declaring("STREAMED")))


def module_of(kind: str) -> str | None:
    """The ``destinations/`` module that registers ``kind`` (its stem), or None: what
    ``destination_for`` imports. Usually named like the kind; ``sql`` is in generic_sql.py."""
    own = DESTINATIONS_DIR / f"{kind}.py"
    if kind.isidentifier() and own.is_file() and kind in _registered_in(own):
        return kind
    for path in sorted(DESTINATIONS_DIR.glob("*.py")):
        if kind in _registered_in(path):
            return path.stem
    return None


def declared_options(kind: str | None = None) -> dict[str, frozenset[str] | None]:
    """Destination kind -> the options its class declares (``OPTIONS``), read from the source.

    Every ``@register("<kind>")`` class in ``destinations/`` declares the options it reads; this
    reads those declarations without importing the modules (they pull in boto3, DuckDB, provider
    hooks, and every task loads this file first, most needing none of them), so a typo fails when
    the file loads. A kind whose declaration is not a literal maps to None: ``destination_for`` still
    checks it against the class attribute when it builds the destination.

    With ``kind``, only the module that registers it (:func:`module_of`) when there is one;
    otherwise every module (an unknown kind's error lists them all).
    """
    module = module_of(kind) if kind is not None else None
    if module is not None:
        return _registered_in(DESTINATIONS_DIR / f"{module}.py")
    kinds: dict[str, frozenset[str] | None] = {}
    for path in sorted(DESTINATIONS_DIR.glob("*.py")):
        kinds.update(_registered_in(path))
    return kinds


def _check_destination_name(name: str, where: str, source: str) -> None:
    """A destination's name names its state file (``<work_dir>/state/<name>.duckdb``), its locks
    and its Airflow asset: ``../../x`` kept the state outside work_dir, and a blank or a line
    break named nothing one could read back."""
    if not name.strip():
        problem = "is blank"
    elif name != name.strip():
        problem = "starts or ends with white space"
    elif any(not c.isprintable() and c != " " for c in name):
        problem = "holds a control character"
    elif "/" in name or "\\" in name:
        problem = "holds / or \\"
    elif name.startswith("."):
        problem = "starts with ."
    else:
        return
    raise ConfigError(
        f"{source}: {where}name: {name!r} {problem}: a destination's name is a file name too "
        "(its state and locks under work_dir), so no / or \\, control characters, leading . or "
        "white space at either end"
    )


def _parse_destination(item: Any, index: int, source: str) -> DestinationConfig:
    where = f"destinations[{index}]."
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: {where[:-1]} must be a mapping")
    _require(item, "name", where, source)
    name = _text(item, "name", None, where, source)  # a list was its text: "['a', 'b']"
    _check_destination_name(name, where, source)
    if len(name) > DESTINATION_NAME_MAX:
        # it names the destination's Airflow asset, whose name Airflow caps (assets.delivered_to)
        raise ConfigError(
            f"{source}: {where}name: at most {DESTINATION_NAME_MAX} characters, not {len(name)}"
        )
    kind = str(_require(item, "kind", where, source))
    kinds = declared_options(kind)
    if kind not in kinds:
        raise ConfigError(
            f"{source}: {where}kind: destination {name!r} has unknown kind {kind!r}"
            f"{_suggestion(kind, kinds)}; one of {', '.join(sorted(kinds))}"
        )
    tables = item.get("tables")
    if tables is None:
        tables = ["audience_profiles", "audience_profile_interactions"]
    if isinstance(tables, str):
        tables = [tables]
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: {where}tables: must be a list of tables, not {tables!r}")
    if not tables:
        # read as the default, [] sent both tables of personal data somewhere meant to get none
        raise ConfigError(
            f"{source}: {where}tables: must list one table or more (of {', '.join(OUTPUT_TABLES)})"
            ", not []; to send nothing, set enabled: false"
        )
    for table in tables:
        if table not in OUTPUT_TABLES:
            raise ConfigError(
                f"{source}: {where}tables: unknown table {table!r}"
                f"{_suggestion(table, OUTPUT_TABLES)} (one of {', '.join(OUTPUT_TABLES)})"
            )
    if "formats" in item and "format" in item:
        raise ConfigError(f"{source}: {where}format: give formats or format, not both")
    formats = item.get("formats", item.get("format", ["csv"]))
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not formats:
        # Empty, a drop would write no part, remove the date's old ones and vouch for 0 rows.
        raise ConfigError(
            f"{source}: {where}formats: must list one format or more (of {FORMATS}), "
            f"not {formats!r}"
        )
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(
                f"{source}: {where}formats: unknown format {fmt!r} (one of {FORMATS})"
            )
    # Listed twice, a table would be staged twice (a warehouse load fails on the second) and a
    # format's parts named twice in the drop's manifests.
    for key, values in (("tables", tables), ("formats", formats)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(f"{source}: {where}{key}: {', '.join(twice)} listed more than once")
    pii = item.get("pii", "plain")
    if pii not in PII_POLICIES:
        raise ConfigError(f"{source}: {where}pii must be one of {PII_POLICIES}, not {pii!r}")
    compression = item.get("compression")
    if compression not in (None, "none", "gzip"):
        raise ConfigError(f"{source}: {where}compression must be gzip or none, not {compression!r}")
    options = {k: v for k, v in item.items() if k not in DESTINATION_KEYS}
    # The drops' one yes/no option (drop.py reads it as truthy: a quoted "false" meant true).
    _flag(options, "quicksight_manifest", False, where, source)
    _positive_number(options, "max_file_mb", where, source)
    for key in ("path", "state_path"):  # a local drop's folder, a Dotdigital state's file
        if options.get(key) is not None:
            options[key] = _path(options, key, None, where, source)
    config = DestinationConfig(
        name=name,
        kind=kind,
        tables=tuple(tables),
        conn_id=_text(item, "conn_id", None, where, source),
        formats=tuple(formats),
        compression=None if compression in (None, "none") else compression,
        pii=pii,
        csv_injection_escape=_flag(item, "csv_injection_escape", True, where, source),
        enabled=_flag(item, "enabled", True, where, source),
        options=options,
    )
    accepted = kinds[kind]
    if accepted is not None:
        check_destination_options(config, accepted, source, where)
    check_required_options(config, required_options(kind), source, where)
    _check_sql_names(config, source, where)
    # The kinds' numeric options (each name means one thing in every kind that reads it), checked
    # here, not only when a delivery reads them: the run had built, checked and published first,
    # and a typo (max_attempts: "five") then failed as a bare ValueError, retried. After the
    # kind's keys: one it does not take is named as unknown, not as a number to correct.
    for key in WHOLE_NUMBER_OPTIONS:
        if options.get(key) is not None:
            whole_number(
                options, key, 0, where, source, 1, DAYS_MAX if key == "keep_days" else None
            )
    for key in SECONDS_OPTIONS:
        _positive_number(options, key, where, source, SECONDS_MAX)
    if not kind_declares(kind, "WRITES_FILES"):
        refuse_file_keys(config, [k for k in FILE_KEYS if k in item], source, where)
    if kind_declares(kind, "NEEDS_CONN_ID") and not config.conn_id:
        # found here, not by the delivery after the whole build (and its retries)
        raise ConfigError(
            f"{source}: {where}conn_id: destination {name!r} (kind {kind}) needs the id of an "
            "Airflow connection"
        )
    return config


def check_drop_places(
    destinations: tuple[DestinationConfig, ...], source: str, follow_links: bool = False
) -> None:
    """Refuse two enabled drops that write one table to one place (a folder, or a bucket or
    container and prefix): each run's drop replaces the table's ``dt=`` folder, so the last
    delivery deleted the other's parts, and both reported them delivered.

    When the file loads, local folders are compared as written (``data/output``, ``out/./``):
    following links there would touch the disk in every task's load, and a hung mount under a
    drop path would stall them all. A local drop's delivery checks again
    following links (``follow_links``), before it writes."""
    place_keys = ("path", "bucket", "container", "prefix")
    writers: dict[tuple, tuple[int, str]] = {}
    for index, dest in enumerate(destinations):
        if not dest.enabled or not kind_declares(dest.kind, "WRITES_FILES"):
            continue
        where = tuple(str(dest.options.get(key) or "").strip("/") for key in place_keys)
        if dest.kind == "local":  # the folder itself: the default, data/output/., a link
            folder = dest.options.get("path") or resolve_path(DEFAULT_DROP_PATH)
            folder = os.path.realpath(folder) if follow_links else os.path.normpath(folder)
            where = (folder, *where[1:])
        # An Azure container is named within the connection's storage account (wasb_default
        # when none is given); S3 bucket names are global, and a local folder has no connection.
        account = (dest.conn_id or "wasb_default") if dest.kind == "azure" else None
        place = (dest.kind, account, *where)
        if clash := _claim_tables(writers, place, index, dest):
            table, first, name = clash
            raise ConfigError(
                f"{source}: destinations[{index}] ({dest.name}) writes {table} where "
                f"destinations[{first}] ({name}) does: each run's drop would delete the "
                "other's; give one of them another path or prefix"
            )


def _claim_tables(
    claims: dict[tuple, tuple[int, str]], place: tuple, index: int, dest: DestinationConfig
) -> tuple[str, int, str] | None:
    """Claim each of ``dest``'s tables at ``place`` for it: the first table another destination
    claimed there first, with that one's index and name; None when all were free."""
    for table in dest.tables:
        if (place, table) in claims:
            return (table, *claims[place, table])
        claims[place, table] = (index, dest.name)
    return None


def check_warehouse_tables(destinations: tuple[DestinationConfig, ...], source: str) -> None:
    """Refuse two enabled warehouse destinations (``LOADS_TABLES``) that load one table into one
    schema: the same kind, connection, ``database`` and ``schema``. They share the table and its
    load log (``ap_loads``, one row per table and date), so each delivery rewrote the rows the
    other loaded (under its own ``pii`` policy), and an older date delivered by one was taken for
    the other's. Names are compared without case, as both kinds fold them (Snowflake to upper
    case, ``sql`` to lower). Only what pipeline.yml says is compared: a schema left to the
    connection, or two connections to one database, cannot be known without reading the
    connections, which the load does not do: every task loads the file, most use no connection,
    and a secrets backend failing would fail them all."""
    loaders: dict[tuple, tuple[int, str]] = {}
    for index, dest in enumerate(destinations):
        if not dest.enabled or not kind_declares(dest.kind, "LOADS_TABLES"):
            continue
        names = (str(dest.options.get(key) or "").casefold() for key in ("database", "schema"))
        if clash := _claim_tables(loaders, (dest.kind, dest.conn_id, *names), index, dest):
            table, first, name = clash
            raise ConfigError(
                f"{source}: destinations[{index}] ({dest.name}) loads {table} into the schema "
                f"destinations[{first}] ({name}) loads it into: each delivery would rewrite "
                "the other's rows; load it from one of them only, or into another schema"
            )


def _check_state_files(config: PipelineConfig, source: str) -> None:
    """Refuse two enabled destinations that keep their state in one file (``state_path``, by
    default ``<work_dir>/state/<name>.duckdb``): their confirmed contacts, watermarks and
    suppressions would mix (a contact one of them sent counted as sent by the other), and their
    deliveries would wait on one lock. Compared as written, not through links, as the drops are
    (``check_drop_places``)."""
    owners: dict[str, tuple[int, str]] = {}
    for index, dest in enumerate(config.destinations):
        accepted = declared_options(dest.kind).get(dest.kind) or frozenset()
        if not dest.enabled or "state_path" not in accepted:
            continue
        explicit = dest.options.get("state_path")
        default = default_state_path(config.work_dir, dest.name)
        state = os.path.normpath(explicit or default)  # explicit: resolved as the file loaded
        if state in owners:
            first, name = owners[state]
            raise ConfigError(
                f"{source}: destinations[{index}] ({dest.name}) keeps its state in {state}, as "
                f"destinations[{first}] ({name}) does: give each its own state_path"
            )
        owners[state] = (index, dest.name)


def default_state_path(work_dir: str, name: str) -> str:
    """Where a destination keeping state (Dotdigital's sync state) keeps it without a
    ``state_path``: one file per destination name under ``work_dir``."""
    return str(Path(work_dir) / "state" / f"{name}.duckdb")


def _parse_warehouse(raw: dict, source: str) -> WarehouseConfig:
    wh_raw = _section(raw, "warehouse", source)
    where = "warehouse."
    reject_unknown(wh_raw, WAREHOUSE_KEYS, where, source, "in warehouse")
    engine = wh_raw.get("engine", "duckdb")
    if engine not in ENGINES:
        raise ConfigError(f"{source}: warehouse.engine must be one of {ENGINES}, not {engine!r}")
    for other, keys in ENGINE_KEYS.items():
        given = [k for k in keys if k in wh_raw]
        if other != engine and given:
            raise ConfigError(
                f"{source}: warehouse.{given[0]}: a key of engine {other}, which engine {engine} "
                f"does not read; take it out (engine {engine} reads "
                f"{', '.join(('engine', 'schema', *ENGINE_KEYS[engine]))})"
            )
    warehouse = WarehouseConfig(
        engine=engine,
        path=_path(wh_raw, "path", WarehouseConfig.path, where, source),
        conn_id=_text(wh_raw, "conn_id", None, where, source),
        database=_text(wh_raw, "database", None, where, source),
        schema=_text(wh_raw, "schema", WarehouseConfig.schema, where, source),
        memory_limit=_text(wh_raw, "memory_limit", WarehouseConfig.memory_limit, where, source),
        threads=whole_number(
            wh_raw,
            "threads",
            WarehouseConfig.threads,
            where,
            source,
            minimum=1,
            maximum=WAREHOUSE_THREADS_MAX,
        ),
        compact_after_erasure=_flag(
            wh_raw, "compact_after_erasure", WarehouseConfig.compact_after_erasure, where, source
        ),
    )
    limit = _MEMORY_LIMIT.fullmatch(warehouse.memory_limit.strip())
    amount = float(limit.group(1)) if limit else 0
    if not limit or amount <= 0 or (limit.group(2) == "%" and amount > 100):
        raise ConfigError(
            f"{source}: warehouse.memory_limit: must be an amount of memory in MB, GB, TB, MiB, "
            f"GiB or TiB (2GB, 512MiB), or a share of the machine's, at most 100% (80%), not "
            f"{warehouse.memory_limit!r}"
        )
    if engine == "snowflake" and not warehouse.conn_id:
        raise ConfigError(f"{source}: warehouse.conn_id is required when engine is snowflake")
    if not _PLAIN_NAME.fullmatch(warehouse.schema):
        # written unquoted into the SQL, and the start of the run schemas' names
        raise ConfigError(
            f"{source}: warehouse.schema: must be a plain name (letters, digits and underscores, "
            f"not starting with a digit), not {warehouse.schema!r}"
            + (": the database goes in warehouse.database" if "." in warehouse.schema else "")
        )
    return warehouse


def _parse_stream(
    raw: dict, source: str, destinations: tuple[DestinationConfig, ...]
) -> StreamSection:
    stream = _section(raw, "stream", source)
    reject_unknown(stream, STREAM_KEYS, "stream.", source, "in stream")
    default = StreamSection()
    lookback = whole_number(
        stream,
        "lookback_seconds",
        default.lookback_seconds,
        "stream.",
        source,
        minimum=0,
        maximum=SECONDS_MAX,
    )
    names = stream.get("destinations")
    if names is None:
        return StreamSection(lookback)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"{source}: stream.destinations: must be a list of destination names, not {names!r}"
        )
    unknown = sorted(set(names) - {d.name for d in destinations})
    if unknown:
        raise ConfigError(
            f"{source}: stream.destinations: no destination named {', '.join(unknown)}"
            f"{_suggestion(unknown[0], [d.name for d in destinations])}"
        )
    return StreamSection(lookback, tuple(names))


def _parse_quality(raw: dict, source: str) -> QualitySection:
    quality = _section(raw, "quality", source)
    reject_unknown(quality, QUALITY_KEYS, "quality.", source, "in quality")
    kept = _number(
        quality,
        "min_profiles_kept",
        QualitySection.min_profiles_kept,
        "quality.",
        source,
        0,
        above=False,
    )
    if kept > 1:
        raise ConfigError(
            f"{source}: quality.min_profiles_kept: a share of the earlier date's profiles, "
            f"from 0 (not checked) to 1, not {quality['min_profiles_kept']!r}"
        )
    return QualitySection(kept)


LATE_CHECK_DAYS_MAX = 31  # each day looked at is a listing of every dated source's partition


def _late_check_days(wait: dict, source: str) -> int:
    days = whole_number(
        wait, "late_check_days", LandingWait.late_check_days, "landing_wait.", source, 0
    )
    if days > LATE_CHECK_DAYS_MAX:
        raise ConfigError(
            f"{source}: landing_wait.late_check_days: must be {LATE_CHECK_DAYS_MAX} or less, not "
            f"{days} (every run lists each day's partitions)"
        )
    return days


def _parse_landing_wait(raw: dict, source: str) -> LandingWait:
    wait = _section(raw, "landing_wait", source)
    reject_unknown(wait, LANDING_WAIT_KEYS, "landing_wait.", source, "in landing_wait")
    required = wait.get("required") or []
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        raise ConfigError(
            f"{source}: landing_wait.required: must be a list of source names, not {required!r}"
        )
    for name in required:
        if name not in LANDING_SOURCES:
            raise ConfigError(
                f"{source}: landing_wait.required: {name!r} is no dated source"
                f"{_suggestion(name, LANDING_SOURCES)}; dated sources: "
                f"{', '.join(LANDING_SOURCES)}"
            )
    marker = _text(wait, "marker", None, "landing_wait.", source)
    if marker in (".", ".."):  # the partition or its parent: there as soon as it is, or never
        raise ConfigError(
            f"{source}: landing_wait.marker: {marker!r} names a folder, not a file (as _SUCCESS)"
        )
    # Named as a writer's marker: any other name would be read as data, or fail the extract.
    if marker is not None and (not marker.startswith(("_", ".")) or "/" in marker):
        raise ConfigError(
            f"{source}: landing_wait.marker: {marker!r} must be a file name starting with _ or . "
            "(as _SUCCESS): the extract reads other names as data"
        )
    return LandingWait(
        required=tuple(dict.fromkeys(required)),
        marker=marker,
        deadline_hours=_number(
            wait,
            "deadline_hours",
            LandingWait.deadline_hours,
            "landing_wait.",
            source,
            0,
            above=False,
            maximum=DEADLINE_HOURS_MAX,
        ),
        poke_minutes=_number(
            wait,
            "poke_minutes",
            LandingWait.poke_minutes,
            "landing_wait.",
            source,
            0,
            above=True,
            maximum=POKE_MINUTES_MAX,
        ),
        late_check_days=_late_check_days(wait, source),
    )


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a parsed YAML mapping into a :class:`PipelineConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    reject_unknown(raw, TOP_LEVEL_KEYS, "", source, "at the top level")
    raw = _expanded(raw, source)
    start = _start_date(raw, source)
    # blank: named as no path (before _require, which calls it missing)
    landing_root = _path(raw, "landing_root", None, "", source)
    _require(raw, "landing_root", "", source)
    warehouse = _parse_warehouse(raw, source)

    dests_raw = raw.get("destinations") or []
    if not isinstance(dests_raw, list):
        raise ConfigError(f"{source}: destinations must be a list")
    destinations = tuple(_parse_destination(d, i, source) for i, d in enumerate(dests_raw))
    names = [d.name for d in destinations]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: destination names must be unique: {', '.join(dupes)}")
    check_drop_places(destinations, source)
    check_warehouse_tables(destinations, source)

    config_dir = Path(source).parent if source != "<dict>" else DEFAULT_CONFIG.parent

    def sibling(key: str, default: str) -> str:
        text = _text(raw, key, default, "", source)
        # blank, it was this file's folder: the load passed, and the run's first reader failed
        _refuse_blank_path(text, key, source)
        path = Path(text)
        if not path.is_absolute():
            path = config_dir / path
        return str(path)

    # Checked here for their errors; read by the callbacks and the DAG files themselves
    # (read_alerts_conn_id, read_dag_settings), which must not fail on the rest of the file.
    alerts = _section(raw, "alerts", source)
    reject_unknown(alerts, ALERTS_KEYS, "alerts.", source, "in alerts")
    _text(alerts, "webhook_conn_id", None, "alerts.", source)
    _late_after_hours(alerts, source)
    work_dir = _path(raw, "work_dir", "data/work", "", source)
    if Path(work_dir).parent == Path(work_dir):
        # ${AP_HOME}/ with AP_HOME empty: the scratch sweep empties <work_dir>/tmp/, here /tmp
        raise ConfigError(f"{source}: work_dir: {work_dir!r} is the root of the file system")
    config = PipelineConfig(
        source_file=source,
        start_date=start,
        landing_root=landing_root,
        landing_conn_id=_text(raw, "landing_conn_id", None, "", source),
        work_dir=work_dir,
        warehouse=warehouse,
        identity_config=sibling("identity_config", "identity.yml"),
        segments_config=sibling("segments_config", "segments.yml"),
        destinations=destinations,
        landing_wait=_parse_landing_wait(raw, source),
        stream=_parse_stream(raw, source, destinations),
        quality=_parse_quality(raw, source),
        raw=raw,
    )
    _check_state_files(config, source)
    # retention: is read by its task, but a mistake in it should fail here, when the file loads.
    from audience_profiles.privacy.retention import RetentionPolicy

    RetentionPolicy.from_config(config)
    return config


class _StrictLoader(yaml.SafeLoader):
    """YAML as a reader of these files expects it: a repeated key is an error, and a number is
    only a plain decimal (``12``, ``-3``, ``0.5``, ``5.0e-05``; ``+1``, ``+1.5`` and ``-0`` are
    text).

    PyYAML follows YAML 1.1, where the last of two equal keys silently wins, and ``2:1`` (a score)
    is the base-60 number 121, ``0601`` (an id) the octal 385 and ``1_000`` a thousand. Those
    now stay text, as a reader would read them.

    A merge key (``<<: *anchor``, one destination entry built from another) gives the anchor's
    keys as defaults the mapping's own override; only the mapping's own keys count as repeated.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # SafeConstructor flattens it below; constructed here, it failed
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool | None | dt.date):
                continue  # a list or mapping as a key: SafeLoader itself refuses it
            if key in seen:
                raise ConfigError(
                    f"{self.name}: line {line}: duplicate key {key!r} (first on line "
                    f"{seen[key]}): YAML would keep only the last one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        # 2022-13-11 and 2022-02-30 look like dates to YAML, and its ValueError named no file
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise ConfigError(
                f"{self.name}: line {node.start_mark.line + 1}: {node.value!r} is not a date ({exc})"
            ) from exc


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    # no sign on 0 and no plus: -0 and +1 (ids) read as 0 and 1 lost their text
    "tag:yaml.org,2002:int",
    re.compile(r"^(0|-?[1-9][0-9]*)$"),
    list("-0123456789"),
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # a decimal, with or without an exponent (5.0e-05, as yaml.dump writes small numbers); never
    # an exponent without the point (1e5: an id)
    re.compile(r"^-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?$"),
    list("-0123456789"),
)


def load_yaml(text: str, source: str) -> Any:
    """Parse one of the project's YAML files (:class:`_StrictLoader`); errors name ``source``."""
    loader = _StrictLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    finally:
        loader.dispose()


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def read_config_file(file: Path, what: str) -> str:
    """The text of one of the project's YAML files. A file that is missing, not a file, not
    readable by this user or not UTF-8 is a ConfigError (fixing it is someone's job: a retry would
    only repeat it); any other OSError (a network disk's hiccup) is left for the task to retry."""
    try:
        return file.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise ConfigError(f"{file}: cannot read {what} ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: {what} is not UTF-8 text ({exc})") from exc


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """Read and validate the pipeline configuration (``$AUDIENCE_PROFILES_CONFIG`` by default)."""
    file = Path(path) if path else config_path()
    text = read_config_file(file, "the pipeline configuration")
    return parse_config(load_yaml(text, str(file)), str(file))


def _read_raw(path: str | os.PathLike | None) -> tuple[dict, str]:
    """pipeline.yml as YAML, not validated, and its name."""
    file = Path(path) if path else config_path()
    raw = load_yaml(read_config_file(file, "the pipeline configuration"), str(file))
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping")
    return raw, str(file)


class DagSettings(NamedTuple):
    """What the DAG files take from pipeline.yml when they are parsed."""

    start_date: dt.date
    late_after_hours: float | None  # the daily DAG's deadline alert; None: no deadline


def read_dag_settings(path: str | os.PathLike | None = None) -> DagSettings:
    """``start_date`` and ``alerts.late_after_hours`` alone, for the DAG files: the rest of the file
    is validated by each task.

    A mistake elsewhere in the file (a destination's option, the ``retention`` section) then fails
    the run's first task, whose alert names the file and the key, instead of an import error that
    stops the daily and the erasure DAGs with no alert at all. For the same reason a bad
    ``late_after_hours`` gives no deadline here (the first task fails on it); only a bad
    ``start_date``, without which no DAG can be scheduled, is an import error.
    """
    raw, source = _read_raw(path)
    try:
        late_after_hours = _late_after_hours(_section(raw, "alerts", source), source)
    except ConfigError:
        late_after_hours = None
    # only the value read is expanded: an unset variable elsewhere is the tasks' to report
    start = {"start_date": _expanded(raw.get("start_date"), source, "start_date")}
    return DagSettings(_start_date(start, source), late_after_hours)


def _late_after_hours(alerts: dict, source: str) -> float | None:
    """``alerts.late_after_hours``: a daily run not finished this many hours after its day
    ended (UTC) posts a "late" alert. Hours above 0 and at most a week; left out or null, no
    deadline (off unless set: Airflow 3.3.2's dag.test() fails with a deadline,
    docs/operations.md). A run a week late is no news, and a value past what a timedelta holds
    would fail the DAG file's import."""
    if alerts.get("late_after_hours") is None:
        return None
    hours = _number(alerts, "late_after_hours", 0, "alerts.", source, 0, above=True)
    if hours > LATE_AFTER_HOURS_MAX:
        raise ConfigError(
            f"{source}: alerts.late_after_hours: must be {LATE_AFTER_HOURS_MAX:g} (a week) or "
            f"less, not {alerts['late_after_hours']!r}"
        )
    return hours


def read_alerts_conn_id(path: str | os.PathLike | None = None) -> str | None:
    """``alerts.webhook_conn_id`` alone, for the alert callbacks: the alert for a task failed by
    a mistake elsewhere in the file must not fail on that mistake too."""
    raw, source = _read_raw(path)
    alerts = _section(raw, "alerts", source)
    conn_id = _expanded(alerts.get("webhook_conn_id"), source, "alerts.webhook_conn_id")
    return _text({"webhook_conn_id": conn_id}, "webhook_conn_id", None, "alerts.", source)
