"""Retention as a property: random landings, random ``retention:`` settings, random schedules.

What docs/privacy.md ("Retention") and docs/operations.md ("Backfilling", "Housekeeping", "Counts
per file") promise, checked against a deployment built the same way without retention:

1. after a retention run, no row dated before a cutoff is left in a table that key covers
   (``retention.TABLES``), no run folder before the ``snapshots_days`` cutoff is left, and every
   row and folder on or after it is still there; form entries and identities are never aged out;
2. every daily run counts read = valid + quarantined + aged out per source, in its result, in
   its run report (``pipeline_runs``) and per file (``landed_files``), with the rows past the
   cutoffs (counted back from the latest date reached, never from the run's own date) aged out;
3. a backfill of an older date and a re-run of the latest date, after retention, bring nothing
   back: what is past a cutoff stays out of the warehouse and comes out empty in the exports;
4. profiles, identifiers, segments and the profiles' interactions built after interactions aged
   out are those of a deployment whose landing never had them: every profile is kept (form
   entries and identities are not aged out), its counts, answers and first/last seen without
   them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from audience_profiles import pipeline
from audience_profiles.config import PipelineConfig
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy.retention import RUN_FOLDERS, TABLES, apply_retention
from tests.edge_landings import DATES, EDGE_CASE_LANDING, landings, write_landing
from tests.privacy.people import query
from tests.support import write_config

# The runs' exports: the profile-level ones are built from every kept partition up to the date,
# the others are the date's own partition (and go empty when it is past its key's cutoff).
PROFILE_EXPORTS = (
    "audience_profiles",
    "profile_identifiers",
    "audience_profile_interactions",
    "segment_memberships",
)
PARTITION_EXPORTS = {
    "interactions_enriched": "interactions_days",
    "quarantine": "quarantine_days",
    "profile_merges": "snapshots_days",
    "identity_link_audit": "snapshots_days",
}
NEVER_AGED = ("form_entries", "identities")
# Segments on what retention takes away (answers, interactions) and keeps (consent).
SEGMENTS = {
    "segments": {
        "blue_now": {"answer": {"attribute": "Which team do you support?", "equals": "Blue"}},
        "voted_twice": {"interaction": {"min": 2, "poll_id": "poll-1"}},
        "voted_lately": {"interaction": {"min": 1, "within_days": 2}},
        "no_votes_kept": {"attribute": {"column": "interactions", "equals": 0}},
        "consenting_voters": {
            "all": [
                {"attribute": {"column": "optin_1", "equals": True}},
                {"interaction": {"min": 1}},
            ]
        },
    }
}


def day(offset: int) -> str:
    """The date ``offset`` days after the landing's first."""
    return (dt.date.fromisoformat(DATES[0]) + dt.timedelta(days=offset)).isoformat()


def make_config(root: Path, landing_root: Path, retention: dict | None) -> PipelineConfig:
    """As tests/edge_landings.py's edge_config (no destinations, no volume check), with the
    segments above and ``retention``."""
    segments = root / "segments.yml"
    root.mkdir(parents=True, exist_ok=True)
    segments.write_text(yaml.safe_dump(SEGMENTS))
    extra = {"retention": retention} if retention else {}
    return write_config(
        root,
        destinations=[],
        landing_root=str(landing_root),
        start_date=DATES[0],
        quality={"min_profiles_kept": 0},
        segments_config=str(segments),
        **extra,
    )


WAREHOUSE_TABLES = (*(t for tables in TABLES.values() for t in tables), *NEVER_AGED)


def warehouse_rows(config: PipelineConfig) -> dict[str, list[tuple]]:
    """The rows of each table retention covers, and of those it never ages out, that the
    warehouse has made yet (sorted; every one has the landing date dt first)."""
    if not Path(config.warehouse.path).exists():
        return {}
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        made = {
            t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        return {
            table: sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in WAREHOUSE_TABLES
            if table in made
        }


def kept(rows: list[tuple], cutoff: str | None) -> list[tuple]:
    """The rows dated on or after ``cutoff`` (all of them when there is none)."""
    return [r for r in rows if cutoff is None or str(r[0]) >= cutoff]


def read_exports(config: PipelineConfig, ds: str) -> dict[str, list[tuple]]:
    export = Path(config.work_dir) / "runs" / ds / "export"
    with duckdb.connect() as con:
        return {
            p.stem: sorted(con.execute(f"SELECT * FROM read_parquet('{p}')").fetchall(), key=repr)
            for p in export.glob("*.parquet")
        }


def run_folders(config: PipelineConfig, cutoff: str | None = None) -> list[str]:
    """The dates of the run folders (those on or after ``cutoff``, if given)."""
    runs = Path(config.work_dir) / "runs"
    names = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    return [name for name in names if cutoff is None or name >= cutoff]


class Reference:
    """The same landing built without retention, date after date; and, asked for, the same
    warehouse with the interactions landed before a date taken out, as if they had never landed
    (validation and enrichment are row by row and date by date), and a date built again in it."""

    def __init__(self, root: Path, landing_root: Path):
        self.root = root
        self.config = make_config(root / "reference", landing_root, None)
        self.results = {ds: run_all(RunWindow.for_date(ds), self.config) for ds in DATES}
        self.exports = {ds: read_exports(self.config, ds) for ds in DATES}
        self.rows = warehouse_rows(self.config)
        self._without: dict[str, PipelineConfig] = {}  # by the first landing date kept
        self._built: dict[tuple[str, str], dict[str, list[tuple]]] = {}

    def profiles(self, ds: str, interactions_from: str | None) -> dict[str, list[tuple]]:
        """The profile-level exports of ``ds`` when no interaction landed before
        ``interactions_from``."""
        if interactions_from is None or interactions_from <= DATES[0]:
            exports = self.exports[ds]
        elif (ds, interactions_from) in self._built:
            exports = self._built[ds, interactions_from]
        else:
            config = self._without.get(interactions_from)
            if config is None:
                root = self.root / f"without-{interactions_from}"
                config = make_config(root, Path(self.config.landing_root), None)
                shutil.copyfile(self.config.warehouse.path, config.warehouse.path)
                with duckdb.connect(config.warehouse.path) as con:
                    for table in ("interactions", "interactions_enriched"):
                        con.execute(f"DELETE FROM {table} WHERE dt < DATE '{interactions_from}'")
                self._without[interactions_from] = config
            window = RunWindow.for_date(ds)
            for step in (
                pipeline.resolve_identities,
                pipeline.build_profiles,
                pipeline.build_segments,
                pipeline.check_quality,
                pipeline.publish,
                pipeline.cleanup,
            ):
                step(window, config)
            exports = self._built[ds, interactions_from] = read_exports(config, ds)
        return {t: exports[t] for t in PROFILE_EXPORTS}


class Deployment:
    """The deployment under test, and what the docs say each of its steps does."""

    def __init__(self, root: Path, landing_root: Path, retention: dict, reference: Reference):
        self.retention = {k: v for k, v in retention.items() if v is not None}
        self.config = make_config(root / "retained", landing_root, self.retention)
        self.reference = reference
        self.reached: list[str] = []  # dates published and dates retention ran for

    def cutoffs(self, as_of: str) -> dict[str, str]:
        base = dt.date.fromisoformat(as_of)
        return {k: (base - dt.timedelta(days=n)).isoformat() for k, n in self.retention.items()}

    def retain(self, ds: str) -> list[dict]:
        """The erasure DAG's retention task for ``ds``: (1), and what its log says."""
        cutoffs = self.cutoffs(ds)
        before = warehouse_rows(self.config)
        folders = run_folders(self.config)
        run_id = f"retention-{len(self.reached)}"

        removed = apply_retention(ds, run_id, self.config)

        after = warehouse_rows(self.config)
        expected = [
            (
                target,
                table,
                cutoff,
                len(before.get(table, [])) - len(kept(before.get(table, []), cutoff)),
            )
            for target, cutoff in cutoffs.items()
            for table in TABLES[target]
            if table in after
        ]
        if "snapshots_days" in cutoffs:
            cutoff = cutoffs["snapshots_days"]
            expected.append(
                ("snapshots_days", RUN_FOLDERS, cutoff, sum(f < cutoff for f in folders))
            )
        assert sorted(tuple(e.values()) for e in removed) == sorted(expected), ds
        for target, tables in TABLES.items():
            for table in tables:
                rows = before.get(table, [])
                assert after.get(table, []) == kept(rows, cutoffs.get(target)), (ds, table)
        cutoff = cutoffs.get("snapshots_days")
        assert run_folders(self.config) == [f for f in folders if cutoff is None or f >= cutoff]
        logged = query(
            self.config,
            "SELECT target, table_name, CAST(cutoff AS VARCHAR), rows_removed FROM retention_log "
            f"WHERE run_id = '{run_id}'",
        )
        assert sorted(logged) == sorted(e for e in expected if e[3]), ds
        self.reached.append(ds)
        return removed

    def run(self, ds: str) -> dict:
        """A daily run of ``ds`` (``run_all``, reported): (2), and its exports as (3) and (4)
        say."""
        as_of = max([ds, *self.reached])
        cutoffs = self.cutoffs(as_of)
        past = {k for k, c in cutoffs.items() if ds < c}
        reference = self.reference.results[ds]

        result = run_all(RunWindow.for_date(ds), self.config)

        # Rows past interactions_days (valid interactions) or quarantine_days (quarantined
        # lines) are read and counted as aged out, not loaded.
        validated = result["validate"]
        expected = {}
        for source, counts in reference["validate"]["sources"].items():
            aged_valid = source == "interactions" and "interactions_days" in past
            aged_quarantined = "quarantine_days" in past
            expected[source] = {
                "read": counts["read"],
                "valid": 0 if aged_valid else counts["valid"],
                "quarantined": 0 if aged_quarantined else counts["quarantined"],
            }
            if {"interactions_days", "quarantine_days"} & cutoffs.keys():
                expected[source]["aged_out"] = (counts["valid"] if aged_valid else 0) + (
                    counts["quarantined"] if aged_quarantined else 0
                )
        assert validated["sources"] == expected, (ds, as_of, cutoffs)
        validated_cutoffs = {
            k: c for k, c in cutoffs.items() if k in ("interactions_days", "quarantine_days")
        }
        if validated_cutoffs:
            assert validated["retention"] == {
                "as_of": as_of,
                "cutoffs": validated_cutoffs,
                "past": sorted(past & validated_cutoffs.keys()),
            }
        if "interactions_days" in past:
            assert result["enrich"]["rows"] == 0
        else:
            assert result["enrich"]["rows"] == reference["enrich"]["rows"]
        self.reconciled(ds, validated["sources"])

        exports = read_exports(self.config, ds)
        for table, target in PARTITION_EXPORTS.items():
            wanted = [] if target in past else self.reference.exports[ds][table]
            assert exports[table] == wanted, (ds, table, as_of, cutoffs)
        interactions_from = cutoffs.get("interactions_days")
        wanted = self.reference.profiles(ds, interactions_from)
        assert {t: exports[t] for t in PROFILE_EXPORTS} == wanted, (ds, as_of, cutoffs)
        self.reached.append(ds)
        return exports

    def reconciled(self, ds: str, sources: dict[str, dict]) -> None:
        """The run report and the per-file counts say what the run's result says, and add up."""
        (report,) = query(self.config, f"SELECT report FROM pipeline_runs WHERE ds = DATE '{ds}'")[
            0
        ]
        report = json.loads(report)
        assert report["sources"] == sources
        for counts in sources.values():
            assert counts["read"] == (
                counts["valid"] + counts["quarantined"] + counts.get("aged_out", 0)
            ), (ds, counts)
        assert report["rows_read"] == sum(c["read"] for c in sources.values())
        assert report["rows_quarantined"] == sum(c["quarantined"] for c in sources.values())
        per_file = {
            source: list(counts)
            for source, *counts in query(
                self.config,
                "SELECT source, sum(rows_read), sum(rows_valid), sum(rows_quarantined), "
                f"sum(rows_aged_out) FROM landed_files WHERE dt = DATE '{ds}' GROUP BY source",
            )
        }
        for source, c in sources.items():
            if source != "elements":  # not dated: no landed_files rows
                expected = [c["read"], c["valid"], c["quarantined"], c.get("aged_out", 0)]
                assert per_file[source] == expected, (ds, source)

    def holds_what_is_kept(self, as_of: str) -> None:
        """(1): what the cutoffs as of ``as_of`` keep, and nothing else."""
        cutoffs = self.cutoffs(as_of)
        rows = warehouse_rows(self.config)
        for target, tables in TABLES.items():
            for table in tables:
                wanted = kept(self.reference.rows.get(table, []), cutoffs.get(target))
                assert rows.get(table, []) == wanted, table
        for table in NEVER_AGED:
            assert rows[table] == self.reference.rows[table], table
        wanted = run_folders(self.reference.config, cutoffs.get("snapshots_days"))
        assert run_folders(self.config) == wanted


retention_settings = st.fixed_dictionaries(
    {target: st.sampled_from([None, 1, 2, 3]) for target in TABLES}
)


# Each example builds the landing twice over (without retention and with it: eight daily runs),
# and the profiles again without the aged-out interactions: about 10 s of CPU. So one random
# example per CI run (40 were run while writing it, none failing) besides the fixed one.
@settings(
    max_examples=1,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    landing=landings,
    retention=retention_settings,
    # an hourly retention run before a date's daily run, counting from that date or days later
    # (the erasure DAG runs on the clock: a catch-up of old dates runs after it)
    retention_before=st.lists(st.sampled_from([None, 0, 1, 2, 3]), min_size=3, max_size=3),
    days_later=st.integers(0, 2),
    backfilled=st.sampled_from(DATES[:-1]),
    backfill_first=st.booleans(),
)
# Every key at once, on the landing of every edge case, with no retention run until the dates
# are built: the latest date's run moves the cutoff past interactions still in the warehouse
# (random schedules rarely leave that gap), then everything but the latest date's merges ages out.
@example(
    landing=EDGE_CASE_LANDING,
    retention={"interactions_days": 1, "quarantine_days": 1, "snapshots_days": 2},
    retention_before=[None, None, None],
    days_later=2,
    backfilled=DATES[1],
    backfill_first=False,
)
def test_retention_keeps_what_the_docs_say_and_runs_bring_nothing_back(
    landing, retention, retention_before, days_later, backfilled, backfill_first, tmp_path_factory
):
    root = tmp_path_factory.mktemp("retention-property")
    write_landing(root / "landing", landing)
    reference = Reference(root, root / "landing")
    deployment = Deployment(root, root / "landing", retention, reference)

    for i, ds in enumerate(DATES):
        if retention_before[i] is not None:
            deployment.retain(day(i + retention_before[i]))
        deployment.run(ds)
    latest = max([day(len(DATES) - 1 + days_later), *deployment.reached])
    deployment.retain(latest)
    deployment.holds_what_is_kept(latest)
    # Re-running removes nothing new.
    assert not any(e["rows_removed"] for e in deployment.retain(latest))

    # A backfill of an older date and a re-run of the latest, in either order.
    exports = {}
    for ds in (backfilled, DATES[-1]) if backfill_first else (DATES[-1], backfilled):
        exports[ds] = deployment.run(ds)
    # The warehouse's current view of the profiles' interactions is the latest export's.
    current = query(deployment.config, "SELECT * FROM audience_profile_interactions")
    assert sorted(current, key=repr) == exports[DATES[-1]]["audience_profile_interactions"]
    # Nothing past a cutoff came back; the next retention takes only the run folders of those
    # runs, if past snapshots_days.
    deployment.retain(latest)
    deployment.holds_what_is_kept(latest)

    # (4) as the docs put it: form entries and identities are not aged out, so every profile is
    # kept with its identity and consent; its counts and answers no longer include the aged-out
    # interactions, nor do first_seen and last_seen (its earliest and latest interaction or
    # identity row, docs/data-contract.md). The reference comparison in run() checks the values.
    unretained = {p[0]: p for p in reference.exports[DATES[-1]]["audience_profiles"]}
    profiles = exports[DATES[-1]]["audience_profiles"]
    assert sorted(p[0] for p in profiles) == sorted(unretained)
    export = Path(reference.config.work_dir) / "runs" / DATES[-1] / "export"
    columns = duckdb.sql(
        f"SELECT * FROM read_parquet('{export}/audience_profiles.parquet')"
    ).columns
    from_interactions = {"first_seen", "last_seen", "interactions", "answers"}
    for profile in profiles:
        before = dict(zip(columns, unretained[profile[0]], strict=True))
        now = dict(zip(columns, profile, strict=True))
        assert {c: v for c, v in now.items() if c not in from_interactions} == {
            c: v for c, v in before.items() if c not in from_interactions
        }
        assert now["interactions"] <= before["interactions"]
        assert now["first_seen"] >= before["first_seen"]
    shutil.rmtree(root, ignore_errors=True)
