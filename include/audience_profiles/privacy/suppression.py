"""Keep suppressed people out of every build and every export.

Two hooks, both cheap when the suppression list is empty (one count, nothing else):

- :func:`apply_suppression` runs right after a partition is validated (``pipeline.validate``; the
  stream runs call it too): rows of people on the list leave the partition's source tables before
  identities and profiles are built (``include/sql/privacy/suppress.sql``). A listed session
  covers only the rows no one else claims (docs/privacy.md).
- :func:`suppress_run_outputs` runs at the start of ``pipeline.publish``: it deletes suppressed
  profiles from the run's snapshot tables, so neither the exports nor the warehouse's current
  tables carry someone suppressed while the run was being built (belt and braces).
"""

from __future__ import annotations

import logging

from audience_profiles.identity import IdentityRules
from audience_profiles.privacy import hash_identifier
from audience_profiles.warehouse.base import Warehouse, check_ds

log = logging.getLogger(__name__)

# Run-schema tables keyed by profile, in the order they are cleaned.
PROFILE_TABLES = (
    "audience_profiles",
    "segment_memberships",
    "profile_identifiers",
)


def suppression_count(wh: Warehouse) -> int:
    return wh.query("SELECT count(*) FROM suppression_list")[0][0]


def unlist_placeholders(wh: Warehouse, rules: IdentityRules) -> int:
    """Take entries for values ``rules`` block (``null``, ``test@test.com``) off the suppression
    list and mark the requests for them invalid; returns how many entries left the list. Such a
    value names no one: listed, it takes out every stranger carrying it. Runs before every
    suppression, so it looks first (a plain IN on the hashes) and acts only on a hit."""
    placeholders = sorted(
        f"{type_}:{hashed}"
        for type_, values in rules.blocked_values.items()
        for hashed in {hash_identifier(v) for v in values}
        if hashed
    )
    if not placeholders:
        return 0
    hashes = sorted({p.split(":", 1)[1] for p in placeholders})
    among = f"identifier_hash IN ({', '.join(wh.literal(h) for h in hashes)})"
    hits = wh.query(
        f"SELECT (SELECT count(*) FROM suppression_list WHERE {among})"
        f" + (SELECT count(*) FROM erasure_requests WHERE status <> 'invalid' AND {among})"
    )[0][0]
    if not hits:
        return 0
    wh.run_sql("privacy/unlist_placeholders", placeholders=placeholders, hashes=hashes)
    entries = wh.query("SELECT entries FROM unlisted_entries")[0][0]
    left = wh.query("SELECT entries FROM unlisted_left")[0][0]
    requests = [r[0] for r in wh.query("SELECT request_id FROM unlisted_requests ORDER BY 1")]
    if entries or requests:
        # request ids and counts only, as every privacy log line
        log.warning(
            "took %s suppression-list entr(ies) for values identity.yml blocks off the list%s",
            entries,
            f"; request(s) {', '.join(requests)} named such a value, which names no one: now "
            f"invalid. {left} other entr(ies) they made stay listed, to review (docs/privacy.md, "
            "'A placeholder listed before')"
            if requests
            else "",
        )
    return entries


def apply_suppression(wh: Warehouse, ds: str, rules: IdentityRules) -> dict[str, int]:
    """Filter partition ``ds`` of the source tables; returns rows taken out per table.

    ``rules`` (the pipeline's identity.yml, never a default: another file's blocked values
    would list placeholders) say which values are identifiers: a placeholder such as
    ``unknown`` never joins the list and claims no session.
    """
    unlist_placeholders(wh, rules)
    if not suppression_count(wh):
        return {}
    params = {"ds": check_ds(ds), "home": wh.home_schema, **rules.sql_params()}
    wh.run_sql("privacy/suppress", step="people", **params)
    # The other identifiers of SSO rows carrying a listed person, until no round adds one (each
    # round adds a value or turns one into a delete: it ends).
    while True:
        wh.run_sql("privacy/suppress", step="grow", **params)
        if not wh.query("SELECT count(*) FROM person_grown")[0][0]:
            break
    wh.run_sql("privacy/suppress", step="apply", **params)
    removed = {
        table: int(rows)
        for table, rows in wh.query(
            "SELECT source, sum(rows_removed) FROM suppression_report GROUP BY source"
        )
        if rows
    }
    # Counts only: which rows (and whose) is exactly what must not reach a log.
    log.info("suppression on %s took out %s", ds, removed or "nothing")
    return removed


def suppress_run_outputs(wh: Warehouse, run_schema: str) -> int:
    """Delete suppressed profiles from the run's snapshot tables; returns how many profiles."""
    if not suppression_count(wh):
        return 0
    present = wh.table_names(run_schema)
    wh.run_sql(
        "privacy/suppress_outputs",
        rs=run_schema,
        profile_tables=[t for t in PROFILE_TABLES if t in present],
        has_merges="profile_merges" in present,
        has_audit="identity_link_audit" in present,
    )
    profiles = wh.query("SELECT count(*) FROM run_suppressed_profiles")[0][0]
    if profiles:
        log.info("left %s suppressed profile(s) out of the run's outputs", profiles)
    return profiles
