"""A run of a date retention has aged out (a backfill, a late or repeated run) brings nothing back.

Retention counts its cutoffs back from the date it runs for; a daily run of an older date counts
them back from the latest date the deployment has reached (its own, the latest published, the
latest retention ran for), never from the wall clock. What is past the cutoff is read, counted as
aged out and not loaded: rows read = valid + quarantined + aged out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import duckdb

from audience_profiles import pipeline
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy.retention import (
    RUN_IN_FLIGHT_MARKER,
    RUN_IN_FLIGHT_SECONDS,
    apply_retention,
)
from tests.privacy.people import ANN_SESSION, BOB, DAVID, DAYS, form, query, write_people
from tests.support import FORM_HEADER, write_config, write_csv

RETENTION_DAY = "2022-04-30"


def dates(config, table: str) -> list[tuple[str, int]]:
    return [
        (str(d), n)
        for d, n in query(config, f"SELECT dt, count(*) FROM {table} GROUP BY dt ORDER BY dt")
    ]


def export_rows(config, ds: str, table: str) -> int:
    path = Path(config.work_dir) / "runs" / ds / "export" / f"{table}.parquet"
    with duckdb.connect() as con:
        return con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()[0]


def drop_partition(root: Path, table: str, ds: str) -> tuple[int, str]:
    """Rows the local drop's manifest names for ``table`` on ``ds``, and the text of its parts."""
    folder = root / "output" / table / f"dt={ds}"
    manifest = json.loads((folder / "_manifest.json").read_text())
    text = "".join(p.read_text() for p in sorted(folder.glob("part-*")))
    return manifest["rows"], text


def reconciled(result: dict, config, ds: str) -> None:
    """read = valid + quarantined + aged out, per source and (landed_files) summed per file."""
    per_file = {
        source: counts
        for source, *counts in query(
            config,
            "SELECT source, sum(rows_read), sum(rows_valid), sum(rows_quarantined), "
            f"sum(rows_aged_out) FROM landed_files WHERE dt = DATE '{ds}' GROUP BY source",
        )
    }
    for source, c in result["validate"]["sources"].items():
        assert c["read"] == c["valid"] + c["quarantined"] + c["aged_out"], (source, c)
        if source != "elements":  # not dated: no landed_files rows
            expected = [c["read"], c["valid"], c["quarantined"], c["aged_out"]]
            assert per_file[source] == expected, (source, per_file[source], c)


def test_a_backfill_past_retention_brings_nothing_back(built, tmp_path, caplog):
    # The reviewer's case: one day of interactions kept, retention run, 2022-04-28 run again.
    config = write_config(tmp_path, retention={"interactions_days": 1})
    apply_retention(RETENTION_DAY, "retention-run", config)
    assert dates(config, "interactions") == [("2022-04-29", 3)]
    caplog.set_level(logging.INFO)

    result = run_all(RunWindow.for_date("2022-04-28"), config)

    for table in ("interactions", "interactions_enriched"):
        assert dates(config, table) == [("2022-04-29", 3)], table
    assert export_rows(config, "2022-04-28", "interactions_enriched") == 0
    # The drop's partition of that date is replaced by an empty one: Ann's interaction is gone.
    rows, text = drop_partition(tmp_path, "interactions_enriched", "2022-04-28")
    assert rows == 0 and ANN_SESSION not in text
    # Read, counted as aged out, reconciled; form entries and identities are not aged out.
    validated = result["validate"]
    assert validated["sources"]["interactions"] == {
        "read": 1, "valid": 0, "quarantined": 0, "aged_out": 1
    }  # fmt: skip
    assert validated["sources"]["form_entries"] == {
        "read": 1, "valid": 1, "quarantined": 0, "aged_out": 0
    }  # fmt: skip
    reconciled(result, config, "2022-04-28")
    assert validated["retention"] == {
        "as_of": RETENTION_DAY,
        "cutoffs": {"interactions_days": "2022-04-29"},
        "past": ["interactions_days"],
    }
    assert result["enrich"]["rows"] == 0
    assert "2022-04-28 is past retention as of 2022-04-30" in caplog.text

    # Idempotent: the same run again gives the same counts and the same warehouse.
    again = run_all(RunWindow.for_date("2022-04-28"), config)
    assert again["validate"] == validated
    assert dates(config, "interactions") == [("2022-04-29", 3)]


def test_quarantined_lines_past_retention_are_not_quarantined_again(built, tmp_path):
    # David's bad form entry of 2022-04-29 names his address in its raw line.
    config = write_config(tmp_path, retention={"quarantine_days": 1})
    apply_retention("2022-05-01", "retention-run", config)
    assert dates(config, "quarantine") == []

    result = run_all(RunWindow.for_date("2022-04-29"), config)

    assert dates(config, "quarantine") == []
    assert export_rows(config, "2022-04-29", "quarantine") == 0
    rows, text = drop_partition(tmp_path, "quarantine", "2022-04-29")
    assert rows == 0 and DAVID not in text.lower()
    # Interactions have no retention here: they load as before. Bob's valid entry too.
    assert ("2022-04-29", 3) in dates(config, "interactions")
    assert result["validate"]["sources"]["form_entries"] == {
        "read": 2, "valid": 1, "quarantined": 0, "aged_out": 1
    }  # fmt: skip
    assert BOB in [r[0] for r in query(config, "SELECT email FROM form_entries")]
    reconciled(result, config, "2022-04-29")


def test_retention_that_removed_nothing_still_sets_the_date_a_catch_up_counts_from(tmp_path):
    # A new deployment catching up: retention ran (hourly) before the first daily run.
    config = write_config(tmp_path, retention={"interactions_days": 1})
    write_people(tmp_path / "landing")
    assert apply_retention(RETENTION_DAY, "retention-run", config)[0]["rows_removed"] == 0

    for ds in DAYS:
        run_all(RunWindow.for_date(ds), config)

    assert dates(config, "interactions") == [("2022-04-29", 3)]
    assert dates(config, "interactions_enriched") == [("2022-04-29", 3)]


def test_the_cutoff_counts_from_the_latest_date_reached_not_the_clock(built, tmp_path):
    # No retention run yet. 2022-04-29 is the latest date published: as of then, one day is kept.
    config = write_config(tmp_path, retention={"interactions_days": 1})
    # Not the wall clock (years later): the latest date and the day before it still load.
    latest = run_all(RunWindow.for_date("2022-04-29"), config)
    assert latest["validate"]["sources"]["interactions"]["valid"] == 3
    assert run_all(RunWindow.for_date("2022-04-28"), config)["enrich"]["rows"] == 1

    # Once a later date is published, the run of 2022-04-28 is past it: enrich, re-run on its
    # own, does not deliver the partition validate loaded before (retention removes that).
    run_all(RunWindow.for_date("2022-04-30"), config)
    enriched = pipeline.enrich(RunWindow.for_date("2022-04-28"), config)
    assert enriched["rows"] == 0
    assert enriched["past_retention"] == {"as_of": "2022-04-30", "cutoff": "2022-04-29"}
    assert dates(config, "interactions_enriched") == [("2022-04-29", 3)]
    assert latest["validate"]["retention"] == {
        "as_of": "2022-04-29", "cutoffs": {"interactions_days": "2022-04-28"}, "past": []
    }  # fmt: skip


def test_a_date_after_tomorrow_in_the_warehouse_does_not_age_out_every_later_run(
    built, tmp_path, caplog
):
    """A run of a mistyped year (2099) that got as far as publishing, before runs refused such
    dates: counted as the latest date reached, every later run's rows would be aged out."""
    config = write_config(tmp_path, retention={"interactions_days": 30})
    run_all(RunWindow.for_date("2022-04-28"), config)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute(
            "INSERT INTO published_snapshots (table_name, dt, run_id) "
            "VALUES ('all', DATE '2099-04-28', 'typo')"
        )

    with caplog.at_level(logging.WARNING):
        result = run_all(RunWindow.for_date("2022-04-29"), config)

    assert result["validate"]["sources"]["interactions"]["valid"] == 3
    assert result["validate"]["retention"]["as_of"] == "2022-04-29"
    assert "published_snapshots has 1 row(s) with dt after tomorrow" in caplog.text


OLD = "2022-01-11"  # inside interactions_days 400 as of RETENTION_DAY, past snapshots_days 14


def test_retention_leaves_the_folder_of_a_backfill_in_flight(built, tmp_path):
    """The hourly retention removed an old date's run folder between its extract and validate
    (and its publish and deliver): every later task and retry of the backfill failed."""
    config = write_config(tmp_path, retention={"interactions_days": 400, "snapshots_days": 14})
    window = RunWindow.for_date(OLD)
    marker = Path(config.work_dir) / "runs" / OLD / RUN_IN_FLIGHT_MARKER
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    apply_retention(RETENTION_DAY, "hourly-1", config)  # while validate waits
    pipeline.validate(window, staged, config)
    for step in (pipeline.enrich, pipeline.resolve_identities, pipeline.build_profiles):
        step(window, config)
    pipeline.build_segments(window, config)
    pipeline.check_quality(window, config)
    # The run waited more than a day in between (the dates before it held it): its marker is
    # older than the limit, the extract folder with it, until publish touches it again.
    stale = time.time() - RUN_IN_FLIGHT_SECONDS - 3600
    for path in (marker, marker.parent / "extract"):
        os.utime(path, (stale, stale))
    tables = pipeline.publish(window, config)
    apply_retention(RETENTION_DAY, "hourly-2", config)  # before deliver
    pipeline.deliver("local_drop", window, tables, config)
    pipeline.cleanup(window, config)

    apply_retention(RETENTION_DAY, "hourly-3", config)  # the run is over: its folder goes
    assert not marker.parent.exists()

    # A run that died a day ago (no cleanup) keeps its folder no longer.
    pipeline.extract_source("elements", window, config)
    os.utime(marker, (stale, stale))
    apply_retention(RETENTION_DAY, "hourly-4", config)
    assert not marker.parent.exists()


def test_a_backfill_past_snapshots_days_brings_back_no_merges_or_audit(tmp_path):
    """Retention aged out the date's merge history and link audit (identifier values); a re-run
    of the date wrote them back into the warehouse, and exported and delivered them."""
    landing = tmp_path / "landing"
    write_people(landing)
    forms = [
        ("2022-01-10", "a@example.com", "s-a"),
        ("2022-01-10", "b@example.com", "s-b"),
        ("2022-01-11", "a@example.com", "s-x"),  # s-x joins a and b: a merge
        ("2022-01-11", "b@example.com", "s-x"),
        ("2022-01-11", "test@test.com", "s-t"),  # a blocked value: an audit row
    ]
    for i, (ds, email, session) in enumerate(forms):
        write_csv(
            landing / "form_entries" / f"date={ds}" / f"f{i}.csv",
            FORM_HEADER,
            [form(f"{ds}T1{i}:00:00", "A", "B", email, session)],
        )
    config = write_config(tmp_path, retention={"snapshots_days": 1})
    for ds in ("2022-01-10", *DAYS):
        run_all(RunWindow.for_date(ds), config)
    assert dates(config, "profile_merges")[0] == (OLD, 1)
    assert dates(config, "identity_link_audit")[0] == (OLD, 1)
    apply_retention(RETENTION_DAY, "r", config)
    gone = {t: dates(config, t) for t in ("profile_merges", "identity_link_audit")}
    assert all(d != OLD for rows in gone.values() for d, _ in rows)

    run_all(RunWindow.for_date(OLD), config)  # a backfill of the old date

    assert {t: dates(config, t) for t in gone} == gone
    assert export_rows(config, OLD, "profile_merges") == 0
    assert export_rows(config, OLD, "identity_link_audit") == 0


def test_enrich_cleared_after_the_cutoff_moved_reconciles(built, tmp_path):
    """A later date published, retention not run yet: enrich of an aged-out date emptied its
    enriched rows but left its interactions, and the reconciliation check failed the run."""
    config = write_config(tmp_path, retention={"interactions_days": 1})
    run_all(RunWindow.for_date(RETENTION_DAY), config)  # the cutoff moves; retention not run
    window = RunWindow.for_date(DAYS[1])  # 2022-04-28: interactions loaded, now past the cutoff
    assert (DAYS[1], 1) in dates(config, "interactions")

    assert pipeline.enrich(window, config)["rows"] == 0
    pipeline.resolve_identities(window, config)
    pipeline.build_profiles(window, config)
    pipeline.build_segments(window, config)
    pipeline.check_quality(window, config)
    assert DAYS[1] not in {d for d, _ in dates(config, "interactions")}


def test_a_run_before_retention_hands_on_what_a_run_after_it_does(built, tmp_path):
    """Until the hourly retention ran, a build read interactions its own cutoff had passed: its
    exports, counts, answers and segments differed from the same run's after retention."""
    config = write_config(tmp_path, retention={"interactions_days": 1})
    window = RunWindow.for_date(RETENTION_DAY)
    tables = ("audience_profile_interactions", "audience_profiles")
    export = Path(config.work_dir) / "runs" / RETENTION_DAY / "export"

    run_all(window, config)  # the cutoff moves to 04-29: 04-28's interactions are past it
    before = {t: (export / f"{t}.parquet").read_bytes() for t in tables}
    apply_retention(RETENTION_DAY, "r", config)
    run_all(window, config)

    assert {t: (export / f"{t}.parquet").read_bytes() for t in tables} == before


def test_the_current_view_takes_the_cutoff_the_current_tables_took(built, tmp_path):
    config = write_config(tmp_path, retention={"interactions_days": 1})
    run_all(RunWindow.for_date(RETENTION_DAY), config)  # cutoff 04-29; retention has not run
    counted = query(config, "SELECT sum(interactions) FROM audience_profiles")[0][0]
    assert query(config, "SELECT count(*) FROM audience_profile_interactions")[0][0] == counted
    assert export_rows(config, RETENTION_DAY, "audience_profile_interactions") == counted


def test_a_runs_tables_and_exports_take_one_cutoff_when_a_later_date_publishes_between(
    built, tmp_path
):
    """Several runs at once: D+1 published while D was between build_profiles and publish, which
    moved the cutoff; D's profiles counted interactions its interactions export left out."""
    config = write_config(tmp_path, retention={"interactions_days": 1})
    window = RunWindow.for_date(RETENTION_DAY)
    staged = [pipeline.extract_source(s, window, config) for s in pipeline.VALIDATION_ORDER]
    pipeline.validate(window, staged, config)
    for step in (pipeline.enrich, pipeline.resolve_identities, pipeline.build_profiles):
        step(window, config)
    pipeline.build_segments(window, config)
    pipeline.check_quality(window, config)
    run_all(RunWindow.for_date("2022-05-01"), config)  # the next date publishes first

    tables = pipeline.publish(window, config)

    with duckdb.connect() as con:
        counted = con.execute(
            "SELECT sum(interactions) FROM read_parquet(?)", [tables["audience_profiles"]]
        ).fetchone()[0]
    assert export_rows(config, RETENTION_DAY, "audience_profile_interactions") == counted > 0
