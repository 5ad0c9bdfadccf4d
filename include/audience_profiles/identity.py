"""Identity resolution: the rules of ``identity.yml`` and the loops that drive the SQL.

The graph's nodes are typed identifiers (session_id, email, external_id); its edges are the links
the rules accept: session_id--email (form entries), session_id--external_id and
external_id--email (SSO identities). All the work happens in the warehouse, in the SQL under
``include/sql/identity/``, so the same code runs on DuckDB and on Snowflake; Python only loops
and asks small check queries whether to go on. See docs/identity.md. Everything written here is
scratch of the run (its schema, temp tables), so statements commit one by one (``run_sql_steps``).

1. ``links``: every link observed as of the cutoff, once per pair of identifiers (64-bit hash
   ids), with the value and session rules applied;
2. ``graph``: the accepted links as edges;
3. connected components: a star round hooks every session to its smallest neighbour (sessions
   never link to each other, so the stars are flat); then, on the values' graph, hook every node
   to its smallest neighbour, flatten the pointer forest by pointer jumping (ceil(log2(depth))
   jumps), contract every tree to its root and repeat on the smaller graph until no edge is
   left. Rounds grow with the log of the graph's diameter, not with the number of nodes
   (tests/sql/identity/test_components.py measures it);
4. profile limits: a component holding two external_ids is split between them (nearest first,
   then link priority, then recency), and the links between the parts are cut;
5. ``labels``/``profile_identifiers``: the nodes and each component's id, from its anchor;
6. ``rejected``, ``link_audit``, ``profile_merges``: what the rules rejected and what merged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from audience_profiles.config import (
    ConfigError,
    load_yaml,
    read_config_file,
    reject_unknown,
    whole_number,
)
from audience_profiles.privacy import EMAIL_PATTERN
from audience_profiles.warehouse.base import SQL_ROOT, Warehouse

log = logging.getLogger(__name__)

IDENTIFIER_TYPES = ("session_id", "email", "external_id")
LINKED_TO_SESSIONS = ("email", "external_id")  # the types a session links to
# identity.yml's keys, and those of its limits section
RULES_KEYS = (
    "blocked_values",
    "blocked_patterns",
    "email_pattern",
    "max_value_length",
    "limits",
    "priority",
)
LIMITS_KEYS = ("shared_device", "per_session", "per_profile")
MAX_ROUNDS = 64  # a 65,536-node path takes 10 rounds: 64 is beyond any real graph
MAX_SALTS = 4  # node-id hash salts to try; one collision among 2**64 values is already rare


@dataclass(frozen=True)
class IdentityRules:
    """The rules of ``identity.yml``; every list is per identifier type (``any`` folded in)."""

    blocked_values: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {t: () for t in IDENTIFIER_TYPES}
    )
    blocked_patterns: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {t: () for t in IDENTIFIER_TYPES}
    )
    email_pattern: str = EMAIL_PATTERN
    max_value_length: int = 1024
    shared_device: dict[str, int] = field(default_factory=lambda: {"email": 3})
    per_session: dict[str, int] = field(default_factory=lambda: {"external_id": 1})
    per_profile: tuple[str, ...] = ("external_id",)
    priority: tuple[str, ...] = IDENTIFIER_TYPES[::-1]

    def sql_params(self) -> dict:
        return {
            "blocked_values": {
                t: [v.strip().lower() for v in vs] for t, vs in self.blocked_values.items()
            },
            "blocked_patterns": {t: list(ps) for t, ps in self.blocked_patterns.items()},
            "email_pattern": self.email_pattern,
            "max_value_length": int(self.max_value_length),
            "shared_device": dict(self.shared_device),
            "per_session": dict(self.per_session),
            "rank": {t: i + 1 for i, t in enumerate(self.priority)},
        }


def _section(parent: dict, key: str, name: str, file: Path, what: str) -> dict:
    """The mapping ``parent[key]`` (``name`` in messages); left out or empty (``key:``), an empty
    one. Anything else is a mistake (``[]``, ``''``, ``0``): read as "nothing", it switched every
    rule of the section off."""
    section = parent.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{file}: {name} must {what}, not {section!r}")
    return section


def _per_type(raw: dict, key: str, file: Path) -> dict[str, tuple[str, ...]]:
    section = _section(raw, key, key, file, "map identifier types to lists")
    unknown = set(section) - {"any", *IDENTIFIER_TYPES}
    if unknown:
        raise ConfigError(f"{file}: {key}: unknown identifier type(s) {sorted(unknown)}")
    for type_, values in section.items():
        if values is not None and not isinstance(values, list):
            # a bare string would be read as its characters, none of them the value meant
            raise ConfigError(f"{file}: {key}.{type_} must be a list, not {values!r}")
        for value in values or []:
            # YAML's reading is not the text meant: null, 1.50 and true became "None", "1.5"
            # and "True" (a whole number is its own text)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ConfigError(
                    f"{file}: {key}.{type_}: {value!r} is not text as written: quote it"
                )
    common = [str(v) for v in section.get("any") or []]
    return {t: tuple(common + [str(v) for v in section.get(t) or []]) for t in IDENTIFIER_TYPES}


def _limits(limits: dict, key: str, types: tuple[str, ...], file: Path) -> dict[str, int]:
    section = _section(limits, key, f"limits.{key}", file, "map identifier types to numbers")
    out = {}
    for type_, value in section.items():
        if type_ not in types:
            raise ConfigError(f"{file}: limits.{key}.{type_}: must be one of {types}")
        if value is None:  # null switches the limit off
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{file}: limits.{key}.{type_}: must be a positive integer or null")
        out[type_] = value
    return out


_SQL_COMMENTS = re.compile(r"\{#.*?#\}|--[^\n]*", re.DOTALL)


def rules_fingerprint(rules: IdentityRules) -> str:
    """A short hash of the parsed rules and of the SQL that applies them: the same for the same
    rules and SQL, whatever the rules file's comments, key order, spelling of defaults, order and
    case of blocked values, and the SQL files' comments and layout. The SQL counts because a new
    version that groups profiles differently regroups them as a rules change does
    (docs/operations.md, "Upgrading")."""
    parsed = dataclasses.asdict(rules)
    # Blocked values and patterns are sets to the SQL (values matched trimmed and lower-cased):
    # reordering them, or writing Test@ for test@, changes nothing it does, so not the hash.
    params = rules.sql_params()
    for key in ("blocked_values", "blocked_patterns"):
        parsed[key] = {t: sorted(set(vs)) for t, vs in params[key].items()}
    rules_text = json.dumps(parsed, sort_keys=True, default=list)
    digest = hashlib.sha256(rules_text.encode())
    # the identity SQL and the macros it imports (the identifier normalisation among them)
    for path in [*sorted((SQL_ROOT / "identity").glob("*.sql")), SQL_ROOT / "privacy/_macros.sql"]:
        code = " ".join(_SQL_COMMENTS.sub(" ", path.read_text()).split())
        digest.update(f"\0{path.name}\0{code}".encode())
    return digest.hexdigest()[:16]


def load_rules(path: str | Path) -> IdentityRules:
    file = Path(path)
    text = read_config_file(file, "identity rules")
    raw = load_yaml(text, str(file))
    if raw is None:
        # Read as {}, an emptied file switched off every blocked value the shipped one lists:
        # sessions sharing external_id "anonymous" merged into one profile.
        raise ConfigError(
            f"{file}: empty (or only comments): the defaults block no values, where the shipped "
            "rules block placeholders such as 'anonymous'; write {} if the defaults are meant"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping")
    # A typo (limts:, priorty:) fell back to the default silently, changing who is merged.
    reject_unknown(raw, RULES_KEYS, "", file, "at the top level")
    defaults = IdentityRules()
    # Values are matched lower-cased, so a pattern is too: "GUEST-.*" matched nothing (lower-casing
    # a pattern without backslashes changes only its letters).
    patterns = {
        t: tuple(p.lower() for p in ps)
        for t, ps in _per_type(raw, "blocked_patterns", file).items()
    }
    # left out or empty: the default; '' and 0 took it silently too
    email_pattern = EMAIL_PATTERN if raw.get("email_pattern") is None else raw["email_pattern"]
    if not isinstance(email_pattern, str) or not email_pattern:
        raise ConfigError(
            f"{file}: email_pattern must be a regular expression, not {email_pattern!r}"
        )
    email_pattern = email_pattern.lower()
    for pattern in (email_pattern, *(p for ps in patterns.values() for p in ps)):
        # Backslashes are escapes in Snowflake string literals: the same pattern would differ.
        if "\\" in pattern:
            raise ConfigError(f"{file}: pattern {pattern!r}: write [.] instead of backslashes")
        if "(?" in pattern:
            # lower-cased, (?U) and (?P<name>) are no longer what was written, and inline flags
            # and named groups are not Snowflake's regular expressions
            raise ConfigError(
                f"{file}: pattern {pattern!r}: no (?...) groups or flags (write (...) for (?:...))"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{file}: pattern {pattern!r} is not a regular expression ({exc})"
            ) from exc
    limits = _section(raw, "limits", "limits", file, "be a mapping")
    reject_unknown(limits, LIMITS_KEYS, "limits.", file, "in limits")
    shared = (
        _limits(limits, "shared_device", LINKED_TO_SESSIONS, file)
        if "shared_device" in limits
        else defaults.shared_device
    )
    per_session = (
        _limits(limits, "per_session", LINKED_TO_SESSIONS, file)
        if "per_session" in limits
        else defaults.per_session
    )
    per_profile = (
        # not session_id: a session is no one's identity on its own (never a profile's anchor)
        _limits(limits, "per_profile", LINKED_TO_SESSIONS, file)
        if "per_profile" in limits
        else dict.fromkeys(defaults.per_profile, 1)
    )
    if any(v != 1 for v in per_profile.values()):
        raise ConfigError(f"{file}: limits.per_profile: only 1 (or null for no limit) is supported")
    priority = defaults.priority if raw.get("priority") is None else raw["priority"]
    if not isinstance(priority, list | tuple) or sorted(map(str, priority)) != sorted(
        IDENTIFIER_TYPES
    ):
        raise ConfigError(f"{file}: priority must list each of {IDENTIFIER_TYPES} once")
    # strictly whole: 2.9 was read as 2 and true as 1
    max_length = whole_number(raw, "max_value_length", defaults.max_value_length, "", str(file), 1)
    return IdentityRules(
        blocked_values=_per_type(raw, "blocked_values", file),
        blocked_patterns=patterns,
        email_pattern=email_pattern,
        max_value_length=max_length,
        shared_device=shared,
        per_session=per_session,
        # the higher-priority type is enforced first, so it decides where lower ones go
        per_profile=tuple(t for t in priority if t in per_profile),
        priority=tuple(priority),
    )


@dataclass
class ComponentStats:
    nodes: int = 0
    edges: int = 0
    rounds: int = 0
    jumps: int = 0
    split_profiles: int = 0
    cut_links: int = 0


def connected_components(wh: Warehouse, suffix: str = "", stars: bool = False) -> ComponentStats:
    """Label the components of ``id_edges{suffix}(a, b)`` (a < b; duplicates are fine) into
    ``id_cc_map{suffix}(node, parent)``: every node but its component's label, with that label.

    Without ``stars`` the label is the component's smallest node id. With ``stars``,
    ``id_edges`` also says which end of an edge is a session (``session_node``; sessions never
    link to each other): one star round hooks every session to its smallest neighbour first
    (cc_stars.sql) and the general rounds run on the values' graph, so the label is the
    component's smallest non-session node id and the map holds every session (a session's label
    may be larger than its own id).
    """
    params = {"suffix": suffix}
    stats = ComponentStats(edges=wh.query(f"SELECT count(*) FROM id_edges{suffix}")[0][0])
    edges = given = f"id_edges{suffix}"  # the caller's table stays; the rounds' own are dropped
    if stars:
        wh.run_sql_steps("identity/cc_stars", **params)
        edges = f"id_cc_edges{suffix}_0"
    remaining = wh.query(f"SELECT count(*) FROM {edges}")[0][0]
    while remaining:
        if stats.rounds >= MAX_ROUNDS:
            raise RuntimeError(f"identity resolution did not converge in {MAX_ROUNDS} rounds")
        round_ = stats.rounds
        wh.run_sql_steps("identity/cc_hook", **params, round=round_, edges=edges)
        moved = True
        while moved:  # the last jump finds the forest flat and moves nothing
            wh.run_sql_steps("identity/cc_jump", **params, round=round_)
            stats.jumps += 1
            moved = wh.query_sql("identity/cc_moved", **params, round=round_)[0][0]
        wh.run_sql_steps(
            "identity/cc_contract", **params, round=round_, edges=edges, drop_edges=edges != given
        )
        stats.rounds += 1
        edges = f"id_cc_edges{suffix}_{stats.rounds}"
        remaining = wh.query(f"SELECT count(*) FROM {edges}")[0][0]
    if edges != given:
        wh.execute_script(f"DROP TABLE {edges}")
    if stats.rounds:
        for round_ in reversed(range(stats.rounds)):
            last = round_ == stats.rounds - 1
            wh.run_sql_steps("identity/cc_compose", **params, round=round_, last=last)
    else:
        wh.run_sql_steps("identity/cc_empty", **params)
    if stars:
        wh.run_sql_steps("identity/cc_star_compose", **params)
    return stats


def enforce_profile_limit(wh: Warehouse, type_: str, suffix: str = "") -> tuple[int, int]:
    """Split components holding several ``type_`` values; return (profiles split, links cut)."""
    params = {"suffix": suffix, "type": type_}
    wh.run_sql_steps("identity/limit_start", **params)
    seeds = wh.query(f"SELECT count(*) FROM id_lim_part{suffix}")[0][0]
    if not seeds:
        wh.execute_script(
            f"DROP TABLE id_lim_nodes{suffix}; DROP TABLE id_lim_edges{suffix}; "
            f"DROP TABLE id_lim_part{suffix}"
        )
        return 0, 0
    split = wh.query(f"SELECT count(DISTINCT label) FROM id_lim_nodes{suffix}")[0][0]
    distance = 1
    while True:
        wh.run_sql_steps("identity/limit_grow", **params, distance=distance)
        placed = wh.query(f"SELECT count(*) FROM id_lim_part{suffix} WHERE distance = {distance}")
        if not placed[0][0]:
            break
        distance += 1
    before = wh.query(f"SELECT count(*) FROM id_cuts{suffix}")[0][0]
    wh.run_sql_steps("identity/limit_apply", **params)
    return split, wh.query(f"SELECT count(*) FROM id_cuts{suffix}")[0][0] - before


def label_as_of(
    wh: Warehouse,
    rules: IdentityRules,
    cutoff_dt: str,
    cutoff_ts: str,
    suffix: str = "",
    new_since: dict | None = None,
) -> tuple[ComponentStats, dict]:
    """Steps 1-3 and the labels: the session's ``id_labels{suffix}`` (every identifier with its
    component label, before the profile limits) from the identity data landed by ``cutoff_dt``
    and observed before ``cutoff_ts``, and the ``id_checked{suffix}`` view of every link with the
    rule that rejects it. Returns the statistics and the parameters the later SQL takes (the
    node-id salt among them)."""
    params = {"suffix": suffix, "cutoff_dt": cutoff_dt, "cutoff_ts": cutoff_ts}
    for salt in range(MAX_SALTS):
        params["salt"] = salt
        wh.run_sql_steps("identity/links", **params, **rules.sql_params(), new_since=new_since)
        if not wh.query_sql("identity/node_collisions", **params)[0][0]:
            break
        log.warning("node id collision with salt %s: retrying with the next salt", salt)
    else:
        raise RuntimeError(f"node ids collide with {MAX_SALTS} different salts")
    wh.run_sql_steps("identity/graph", **params)
    stats = connected_components(wh, suffix, stars=True)
    wh.run_sql_steps("identity/labels", **params)
    stats.nodes = wh.query(f"SELECT count(*) FROM id_labels{suffix}")[0][0]
    return stats, params


def resolve_as_of(
    wh: Warehouse,
    rs: str,
    rules: IdentityRules,
    cutoff_dt: str,
    cutoff_ts: str,
    suffix: str = "",
    new_since: dict | None = None,
) -> ComponentStats:
    """Profiles from identity data landed by ``cutoff_dt`` and observed before ``cutoff_ts``.

    Writes ``{rs}.profile_identifiers`` (with a suffix: the session's TEMP table
    ``profile_identifiers{suffix}``), the session's ``id_rejected{suffix}`` and, with
    ``new_since={"ds", "interval_start"}``, ``id_new_links{suffix}``.
    """
    stats, params = label_as_of(wh, rules, cutoff_dt, cutoff_ts, suffix, new_since)
    for type_ in rules.per_profile:
        split, cut = enforce_profile_limit(wh, type_, suffix)
        stats.split_profiles += split
        stats.cut_links += cut
    wh.run_sql_steps("identity/profile_identifiers", **params, rs=rs, persist=not suffix)
    wh.run_sql_steps("identity/rejected", **params, cuts=stats.cut_links > 0, new_since=new_since)
    wh.run_sql_steps("identity/drop_scratch", suffix=suffix, extra=[])
    return stats


def record_merges(wh: Warehouse, rs: str, interval_start: str) -> int:
    """Write ``{rs}.profile_merges`` from the session's two snapshots (``profile_identifiers_prev``
    and ``{rs}.profile_identifiers``) and ``id_new_links``; return the search rounds it took.

    The search for the link that joined two profiles relaxes one more edge of every path a round,
    until a round improves nothing: it ends (ranks only fall), and a chain of any length of
    profiles joined in one day is found.
    """
    wh.run_sql_steps("identity/merge_search", rs=rs)
    rounds = 0
    while wh.query("SELECT count(*) FROM id_merge_reach WHERE moved")[0][0]:
        wh.run_sql_steps("identity/merge_relax")
        rounds += 1
    wh.run_sql_steps("identity/profile_merges", rs=rs, interval_start=interval_start)
    log.info("merge history searched in %s rounds", rounds)
    return rounds


def resolve_run(
    wh: Warehouse, rs: str, rules: IdentityRules, ds: str, interval_start: str, interval_end: str
) -> dict:
    """Resolve identities as of the run's interval end, and the merges that happened in it.

    Both snapshots are recomputed from the data (not read from an earlier run), so a re-run or a
    backfill gives the same ids and merges whatever ran before.
    """
    previous_dt = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    resolve_as_of(wh, rs, rules, previous_dt, interval_start, suffix="_prev")
    current = resolve_as_of(
        wh, rs, rules, ds, interval_end, new_since={"ds": ds, "interval_start": interval_start}
    )
    wh.run_sql_steps("identity/link_audit", rs=rs, ds=ds)
    record_merges(wh, rs, interval_start)
    # The profiles, and those whose id did not exist as of the interval's start (for the run
    # report), counted in one pass while the previous snapshot is still there.
    profiles, created = wh.query(
        "SELECT count(*), coalesce(count_if(profile_id NOT IN (SELECT profile_id FROM profile_identifiers_prev)), 0)"
        f" FROM (SELECT DISTINCT profile_id FROM {rs}.profile_identifiers) ids"
    )[0]
    wh.run_sql_steps(
        "identity/drop_scratch",
        suffix="",
        extra=["id_rejected", "id_rejected_prev", "id_new_links", "profile_identifiers_prev"],
    )
    merges, rejected = wh.query(
        f"SELECT (SELECT count(*) FROM {rs}.profile_merges),"
        f" (SELECT count(*) FROM {rs}.identity_link_audit)"
    )[0]
    result = {
        "nodes": current.nodes,
        "edges": current.edges,
        "rounds": current.rounds,
        "jumps": current.jumps,
        "split_profiles": current.split_profiles,
        "cut_links": current.cut_links,
        "profiles": profiles,
        "merges": merges,
        "links_rejected": rejected,
        "profiles_created": created,
    }
    log.info("identity resolved as of %s: %s", interval_end, result)
    return result
