"""Identity resolution: the rules of ``identity.yml`` and the connected-components loop.

The graph's nodes are typed identifiers (``session_id:…``, ``email:…``, ``external_id:…``); its
edges are the links the rules accept. Components are computed inside the warehouse by the SQL in
``include/sql/identity/`` so the same code runs on DuckDB and on Snowflake:

1. hook: every label points at the smallest label it touches through an edge;
2. jump: labels follow their parent's parent until the pointer forest is flat (log2 of its depth);
3. relabel nodes, and repeat until no edge joins two labels.

Python only loops and asks the check queries whether anything changed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from audience_profiles.config import ConfigError
from audience_profiles.warehouse.base import Warehouse

log = logging.getLogger(__name__)
MAX_ROUNDS = 64  # each round at least halves the labels of a chain; 64 is beyond any real graph


@dataclass(frozen=True)
class IdentityRules:
    blocked: dict[str, list[str]] = field(default_factory=dict)
    blocked_any: list[str] = field(default_factory=list)
    max_value_length: int = 1024
    session_max_emails: int = 3
    session_max_external_ids: int = 1

    def sql_params(self) -> dict:
        return {
            "blocked": {k: [v.strip().lower() for v in vs] for k, vs in self.blocked.items()},
            "blocked_any": [v.strip().lower() for v in self.blocked_any],
            "max_value_length": int(self.max_value_length),
            "session_max_emails": int(self.session_max_emails),
            "session_max_external_ids": int(self.session_max_external_ids),
        }


def load_rules(path: str | Path) -> IdentityRules:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read identity rules ({exc})") from exc
    blocked = dict(raw.get("blocked_values") or {})
    blocked_any = blocked.pop("any", []) or []
    for key in blocked:
        if key not in ("session_id", "email", "external_id"):
            raise ConfigError(f"{file}: blocked_values.{key}: unknown identifier type")
    limits = raw.get("limits") or {}
    try:
        return IdentityRules(
            blocked={k: [str(v) for v in (vs or [])] for k, vs in blocked.items()},
            blocked_any=[str(v) for v in blocked_any],
            max_value_length=int(raw.get("max_value_length", 1024)),
            session_max_emails=int(limits.get("session_max_emails", 3)),
            session_max_external_ids=int(limits.get("session_max_external_ids", 1)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{file}: limits and max_value_length must be integers ({exc})") from exc


@dataclass
class ComponentStats:
    rounds: int = 0
    jumps: int = 0
    nodes: int = 0
    edges: int = 0


def connected_components(wh: Warehouse, rs: str, suffix: str = "") -> ComponentStats:
    """Label ``{rs}.id_labels{suffix}`` with components of ``{rs}.id_edges{suffix}``."""
    params = {"rs": rs, "suffix": suffix}
    stats = ComponentStats()
    stats.nodes = wh.query(f"SELECT count(*) FROM {rs}.id_nodes{suffix}")[0][0]
    stats.edges = wh.query(f"SELECT count(*) FROM {rs}.id_edges{suffix}")[0][0]
    while wh.query_sql("identity/unconverged", **params)[0][0]:
        if stats.rounds >= MAX_ROUNDS:
            raise RuntimeError(f"identity resolution did not converge in {MAX_ROUNDS} rounds")
        stats.rounds += 1
        wh.run_sql("identity/hook", **params)
        while True:
            wh.run_sql("identity/jump", **params)
            stats.jumps += 1
            changed = wh.query_sql("identity/jump_changed", **params)[0][0]
            wh.run_sql("identity/jump_swap", **params)
            if not changed:
                break
        wh.run_sql("identity/relabel", **params)
    return stats


def resolve_as_of(
    wh: Warehouse, rs: str, rules: IdentityRules, cutoff_dt: str, cutoff_ts: str, suffix: str = ""
) -> ComponentStats:
    """Profiles from identity data landed by ``cutoff_dt`` and observed before ``cutoff_ts``."""
    params = {"rs": rs, "suffix": suffix, "cutoff_dt": cutoff_dt, "cutoff_ts": cutoff_ts}
    wh.run_sql("identity/links", **params, **rules.sql_params())
    wh.run_sql("identity/graph", **params)
    stats = connected_components(wh, rs, suffix)
    wh.run_sql("identity/profile_identifiers", **params)
    return stats


def resolve_run(
    wh: Warehouse, rs: str, rules: IdentityRules, ds: str, interval_start: str, interval_end: str
) -> dict:
    """Resolve identities as of the run's interval end, and the merges that happened in it.

    Both snapshots are recomputed from the data (not read from an earlier run), so a re-run or a
    backfill gives the same ids and merges whatever ran before.
    """
    current = resolve_as_of(wh, rs, rules, ds, interval_end)
    previous_dt = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    resolve_as_of(wh, rs, rules, previous_dt, interval_start, suffix="_prev")
    wh.run_sql("identity/profile_merges", rs=rs, ds=ds, interval_start=interval_start)
    profiles, merges, rejected = wh.query(
        f"SELECT (SELECT count(DISTINCT profile_id) FROM {rs}.profile_identifiers),"
        f" (SELECT count(*) FROM {rs}.profile_merges),"
        f" (SELECT count(*) FROM {rs}.identity_link_audit)"
    )[0]
    result = {
        "nodes": current.nodes,
        "edges": current.edges,
        "rounds": current.rounds,
        "jumps": current.jumps,
        "profiles": profiles,
        "merges": merges,
        "links_rejected": rejected,
    }
    log.info("identity resolved as of %s: %s", interval_end, result)
    return result
