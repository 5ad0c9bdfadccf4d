"""Load and validate ``pipeline.yml``: the one place sources, warehouse and destinations are set.

The file is read at task run time (never while a DAG file is parsed) and validated once, so a typo
fails with the key and the file in the message instead of deep inside a task.

Paths: ``${VAR}`` and ``${VAR:-default}`` are expanded from the environment; a relative path is
resolved against the project root (the folder that holds ``include/``), so the same file works from
any working directory, in ``airflow dags test`` and on a scheduler alike. Secrets never live here:
connections are named by their Airflow connection id and come from ``AIRFLOW_CONN_*`` or a secrets
backend.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
PII_POLICIES = ("plain", "hashed", "omit")
FORMATS = ("csv", "json", "parquet")
ENGINES = ("duckdb", "snowflake")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A configuration problem, always naming the file and the key."""


def _expand(value: str) -> str:
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


def resolve_path(value: str) -> str:
    """Expand env references; make a local relative path absolute against the project root.

    URLs (``s3://``, ``abfs://`` ...) are returned expanded but otherwise untouched.
    """
    value = _expand(value)
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
    alerts_webhook_conn_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise ConfigError(f"{self.source_file}: no destination named {name!r}")

    @property
    def enabled_destinations(self) -> tuple[DestinationConfig, ...]:
        return tuple(d for d in self.destinations if d.enabled)


def _require(mapping: dict, key: str, where: str, source: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise ConfigError(f"{source}: missing required key {where}{key}")
    return mapping[key]


def _parse_destination(item: Any, index: int, source: str) -> DestinationConfig:
    where = f"destinations[{index}]."
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: {where[:-1]} must be a mapping")
    name = str(_require(item, "name", where, source))
    kind = str(_require(item, "kind", where, source))
    tables = item.get("tables") or ["audience_profiles", "audience_profile_interactions"]
    if isinstance(tables, str):
        tables = [tables]
    for table in tables:
        if table not in OUTPUT_TABLES:
            raise ConfigError(
                f"{source}: {where}tables: unknown table {table!r} (one of {', '.join(OUTPUT_TABLES)})"
            )
    formats = item.get("formats", item.get("format", ["csv"]))
    if isinstance(formats, str):
        formats = [formats]
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(
                f"{source}: {where}formats: unknown format {fmt!r} (one of {FORMATS})"
            )
    pii = item.get("pii", "plain")
    if pii not in PII_POLICIES:
        raise ConfigError(f"{source}: {where}pii must be one of {PII_POLICIES}, not {pii!r}")
    compression = item.get("compression")
    if compression not in (None, "none", "gzip"):
        raise ConfigError(f"{source}: {where}compression must be gzip or none, not {compression!r}")
    known = {
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
    }
    options = {k: v for k, v in item.items() if k not in known}
    if "path" in options:
        options["path"] = resolve_path(str(options["path"]))
    return DestinationConfig(
        name=name,
        kind=kind,
        tables=tuple(tables),
        conn_id=item.get("conn_id"),
        formats=tuple(formats),
        compression=None if compression in (None, "none") else compression,
        pii=pii,
        csv_injection_escape=bool(item.get("csv_injection_escape", True)),
        enabled=bool(item.get("enabled", True)),
        options=options,
    )


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a parsed YAML mapping into a :class:`PipelineConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    start = _require(raw, "start_date", "", source)
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(_expand(start))
        except ValueError as exc:
            raise ConfigError(f"{source}: start_date {start!r} is not YYYY-MM-DD") from exc
    if isinstance(start, dt.datetime):
        start = start.date()

    wh_raw = raw.get("warehouse") or {}
    if not isinstance(wh_raw, dict):
        raise ConfigError(f"{source}: warehouse must be a mapping")
    engine = wh_raw.get("engine", "duckdb")
    if engine not in ENGINES:
        raise ConfigError(f"{source}: warehouse.engine must be one of {ENGINES}, not {engine!r}")
    warehouse = WarehouseConfig(
        engine=engine,
        path=resolve_path(str(wh_raw.get("path", "data/warehouse.duckdb"))),
        conn_id=wh_raw.get("conn_id"),
        database=wh_raw.get("database"),
        schema=str(wh_raw.get("schema", "main")),
        memory_limit=str(wh_raw.get("memory_limit", "2GB")),
        threads=int(wh_raw.get("threads", 2)),
    )
    if engine == "snowflake" and not warehouse.conn_id:
        raise ConfigError(f"{source}: warehouse.conn_id is required when engine is snowflake")

    dests_raw = raw.get("destinations") or []
    if not isinstance(dests_raw, list):
        raise ConfigError(f"{source}: destinations must be a list")
    destinations = tuple(_parse_destination(d, i, source) for i, d in enumerate(dests_raw))
    names = [d.name for d in destinations]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: destination names must be unique: {', '.join(dupes)}")

    config_dir = Path(source).parent if source != "<dict>" else DEFAULT_CONFIG.parent

    def sibling(key: str, default: str) -> str:
        value = _expand(str(raw.get(key, default)))
        path = Path(value)
        if not path.is_absolute():
            path = config_dir / path
        return str(path)

    alerts = raw.get("alerts") or {}
    config = PipelineConfig(
        source_file=source,
        start_date=start,
        landing_root=resolve_path(str(_require(raw, "landing_root", "", source))),
        landing_conn_id=raw.get("landing_conn_id"),
        work_dir=resolve_path(str(raw.get("work_dir", "data/work"))),
        warehouse=warehouse,
        identity_config=sibling("identity_config", "identity.yml"),
        segments_config=sibling("segments_config", "segments.yml"),
        destinations=destinations,
        alerts_webhook_conn_id=alerts.get("webhook_conn_id") if isinstance(alerts, dict) else None,
        raw=raw,
    )
    # retention: is read by its task, but a mistake in it should fail here, when the file loads.
    from audience_profiles.privacy.retention import RetentionPolicy

    RetentionPolicy.from_config(config)
    return config


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """Read and validate the pipeline configuration (``$AUDIENCE_PROFILES_CONFIG`` by default)."""
    file = Path(path) if path else config_path()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the pipeline configuration ({exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})") from exc
    return parse_config(raw, str(file))
