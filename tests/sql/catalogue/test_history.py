"""The element catalogue kept by date (catalogue/record.sql, catalogue/_macros.sql): a re-run of
a date enriches with the catalogue it had, whatever has landed since."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pytest

from audience_profiles.landing import SOURCES, LandingError
from audience_profiles.pipeline import RunWindow, enrich, extract_source, run_all, validate
from tests.support import (
    ELEMENT_HEADER,
    INTERACTION_HEADER,
    SEED_EVENT,
    SEED_SESSION,
    write_config,
    write_csv,
    write_seed_example,
)

FIRST, SECOND = "2022-04-29", "2022-04-30"
OLD_TITLE, NEW_TITLE = "Which team do you support?", "Which club do you support?"


def write_catalogue(landing: Path, title: str, labels=("Manchester Blue", "Manchester Red")):
    write_csv(
        landing / "elements" / "elements.csv",
        ELEMENT_HEADER,
        [["54663", title, option, label] for option, label in enumerate(labels)]
        + [["777", "Man of the match?", 0, "The keeper"]],
    )


def landing_of_two_days(root: Path) -> Path:
    """The seed's example, a catalogue of two polls, and a second day voting on both."""
    landing = root / "landing"
    write_seed_example(landing)
    write_catalogue(landing, OLD_TITLE)
    write_csv(
        landing / "interactions" / f"date={SECOND}" / "part-0.csv",
        INTERACTION_HEADER,
        [
            [SECOND, SEED_EVENT, "54663", SEED_SESSION, 1, 1],
            [SECOND, SEED_EVENT, "777", SEED_SESSION, 0, 1],
        ],
    )
    return landing


def titles(config, ds: str) -> list[tuple]:
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        return con.execute(
            "SELECT poll_id, option, title, option_label FROM interactions_enriched "
            f"WHERE dt = DATE '{ds}' ORDER BY ALL"
        ).fetchall()


def history(config) -> list[tuple]:
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        return con.execute(
            "SELECT CAST(valid_from AS VARCHAR), poll_id, option, title, removed "
            "FROM element_history ORDER BY ALL"
        ).fetchall()


def outputs(root: Path, ds: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "output").rglob(f"dt={ds}/part-*"))
    }


def test_a_re_run_after_a_title_changed_keeps_the_date_s_title_and_outputs(tmp_path):
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    first = outputs(tmp_path, FIRST)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]

    write_catalogue(landing, NEW_TITLE, labels=("Manchester Blue", "Man. Red"))
    run_all(RunWindow.for_date(SECOND), config)
    assert titles(config, SECOND) == [
        ("54663", 1, NEW_TITLE, "Man. Red"),
        ("777", 0, "Man of the match?", "The keeper"),
    ]
    # the first date recorded the whole catalogue; the second only the two rows that changed
    assert history(config) == [
        (FIRST, "54663", 0, OLD_TITLE, False),
        (FIRST, "54663", 1, OLD_TITLE, False),
        (FIRST, "777", 0, "Man of the match?", False),
        (SECOND, "54663", 0, NEW_TITLE, False),
        (SECOND, "54663", 1, NEW_TITLE, False),
    ]

    run_all(RunWindow.for_date(FIRST), config)  # after later data (the new catalogue) landed
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]
    assert outputs(tmp_path, FIRST) == first
    assert len(history(config)) == 5  # an earlier date's re-run records nothing


def test_an_element_removed_is_gone_from_its_date_on_and_kept_before(tmp_path):
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    write_csv(
        landing / "elements" / "elements.csv",
        ELEMENT_HEADER,
        [["54663", OLD_TITLE, option, label] for option, label in enumerate(["A", "B"])],
    )
    run_all(RunWindow.for_date(SECOND), config)
    assert titles(config, SECOND) == [("54663", 1, OLD_TITLE, "B"), ("777", 0, None, None)]
    assert (SECOND, "777", 0, None, True) in history(config)
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]


def load_only(ds: str, config, restate_catalogue: str = "") -> None:
    """A run that failed after enrich (before publishing): its retry is still the date's first."""
    window = RunWindow.for_date(ds)
    staged = [extract_source(s, window, config) for s in SOURCES]
    validate(window, staged, config, restate_catalogue)
    enrich(window, config)


def test_a_retry_before_publishing_takes_a_corrected_catalogue_a_published_date_keeps_it(
    tmp_path, caplog
):
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    write_catalogue(landing, "Which team do you support??")  # a typo landed
    load_only(SECOND, config)
    write_catalogue(landing, NEW_TITLE)  # corrected, before the date's retry
    run_all(RunWindow.for_date(SECOND), config)
    assert titles(config, SECOND)[0] == ("54663", 1, NEW_TITLE, "Manchester Red")
    assert [row for row in history(config) if row[0] == SECOND] == [
        (SECOND, "54663", 0, NEW_TITLE, False),
        (SECOND, "54663", 1, NEW_TITLE, False),
    ]
    published = outputs(tmp_path, SECOND)

    write_catalogue(landing, "A third title")  # landed after the latest date was published
    with caplog.at_level(logging.INFO, logger="audience_profiles.pipeline"):
        run_all(RunWindow.for_date(SECOND), config)  # cleared
    assert titles(config, SECOND)[0][2] == NEW_TITLE
    assert outputs(tmp_path, SECOND) == published
    assert f"elements: {SECOND} keeps the catalogue in force on it" in caplog.text
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]


def test_a_re_run_keeps_the_date_s_quarantined_element_rows(tmp_path):
    """The quarantine is an output too: a re-run after a catalogue with other bad rows landed
    keeps the rows the date's outputs were built with (and the run's counts still reconcile)."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    catalogue = landing / "elements" / "elements.csv"
    catalogue.write_text(catalogue.read_text() + "54663,A bad option,x,Nobody\n")
    run_all(RunWindow.for_date(FIRST), config)
    published = outputs(tmp_path, FIRST)
    catalogue.write_text(
        catalogue.read_text().replace(",x,", ",0,").replace("Nobody", "Dup") + "99,,1,No title\n"
    )
    result = run_all(RunWindow.for_date(FIRST), config)
    assert outputs(tmp_path, FIRST) == published
    assert result["validate"]["sources"]["elements"]["quarantined"] == 2  # what it read now
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute(
            "SELECT reason FROM quarantine WHERE source = 'elements'"
        ).fetchall() == [("option: not a non-negative integer",)]


def test_a_date_before_the_first_recorded_takes_the_earliest_catalogue(tmp_path):
    """Out of order (a backfill run backwards), or the first re-run of an old date after an
    upgrade: nothing was recorded on or before the date, and the earliest record stands in."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(SECOND), config)
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]
    assert {row[0] for row in history(config)} == {SECOND}


def test_a_warehouse_without_history_enriches_with_the_catalogue_loaded_last(tmp_path):
    """A warehouse set up before the history was kept: an enrich cleared on its own (no validate
    before it) finds no record and takes `elements`, as every run did then."""
    config = write_config(tmp_path)
    landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    with duckdb.connect(config.warehouse.path) as con:
        con.execute("DELETE FROM element_history; DELETE FROM element_history_dates")
        con.execute("UPDATE elements SET title = 'Loaded last'")
        con.execute(f"DELETE FROM interactions_enriched WHERE dt = DATE '{FIRST}'")
    from audience_profiles.pipeline import enrich

    enrich(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, "Loaded last", "Manchester Blue")]


def test_a_restated_backfill_gives_its_dates_the_catalogue_landed_now(tmp_path):
    """A typo fixed for every date: the backfill's runs carry restate_catalogue (the daily DAG's
    param); in date order, its first date records the catalogue landed now, the later find it in
    force."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    run_all(RunWindow.for_date(SECOND), config)
    write_catalogue(landing, NEW_TITLE)
    for ds in (FIRST, SECOND):
        run_all(RunWindow.for_date(ds), config, restate_catalogue="typo fixed")
    assert titles(config, FIRST) == [("54663", 0, NEW_TITLE, "Manchester Blue")]
    assert titles(config, SECOND)[0] == ("54663", 1, NEW_TITLE, "Manchester Red")
    assert [row[0] for row in history(config)] == [FIRST] * 3  # nothing changed after it
    run_all(RunWindow.for_date(FIRST), config)  # and a plain re-run keeps it
    assert titles(config, FIRST) == [("54663", 0, NEW_TITLE, "Manchester Blue")]


def test_a_restated_date_alone_carries_the_catalogue_to_the_dates_after_it(tmp_path):
    """One date restated (not a backfill): the dates after it keep their outputs until they run
    again, then take the restated catalogue, and keep it whatever lands after."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    run_all(RunWindow.for_date(SECOND), config)
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="typo fixed")
    assert titles(config, SECOND)[0] == ("54663", 1, OLD_TITLE, "Manchester Red")
    run_all(RunWindow.for_date(SECOND), config)
    assert titles(config, SECOND)[0] == ("54663", 1, NEW_TITLE, "Manchester Red")
    write_catalogue(landing, "A third title")  # landed since: for the next new date
    run_all(RunWindow.for_date(SECOND), config)
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST)[0][2] == titles(config, SECOND)[0][2] == NEW_TITLE
    assert {row[0] for row in history(config)} == {FIRST}


def test_an_element_landed_after_its_date_ran_gives_it_titles_when_it_runs_again(tmp_path):
    """A poll's interactions can land before the catalogue export has it: the date runs with no
    title, and a re-run after a later date recorded the poll takes its first recorded content,
    as the date had none."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    write_csv(
        landing / "elements" / "elements.csv",
        ELEMENT_HEADER,
        [["54663", OLD_TITLE, 1, "Manchester Red"], ["777", "Man of the match?", 0, "The keeper"]],
    )
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, None, None)]
    write_catalogue(landing, NEW_TITLE)  # option 0 arrives, with the title changed
    run_all(RunWindow.for_date(SECOND), config)
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, NEW_TITLE, "Manchester Blue")]
    assert titles(config, SECOND)[0] == ("54663", 1, NEW_TITLE, "Manchester Red")


def test_a_day_with_no_catalogue_and_no_interactions_records_no_change(tmp_path):
    """An empty elements/ folder passes validate on a day without interactions: the day records
    no change (its elements are not taken as removed), and the date before it keeps its titles
    on a re-run after a new catalogue landed (helper-134)."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    (landing / "interactions" / f"date={SECOND}" / "part-0.csv").unlink()
    run_all(RunWindow.for_date(FIRST), config)
    first = outputs(tmp_path, FIRST)
    (landing / "elements" / "elements.csv").unlink()
    run_all(RunWindow.for_date(SECOND), config)  # no catalogue, no interactions: passes

    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]
    assert outputs(tmp_path, FIRST) == first
    assert {row[0] for row in history(config)} == {FIRST}
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute(
            "SELECT CAST(dt AS VARCHAR), changed FROM element_history_dates ORDER BY 1"
        ).fetchall() == [(FIRST, 3), (SECOND, 0)]


def test_a_date_past_quarantine_retention_re_runs_and_restates_with_a_bad_element_row(tmp_path):
    """The element rows the catalogue quarantines are read now (the catalogue has no date): on a
    date retention has aged the quarantine out of, they count as aged out, once. They counted
    as quarantined and as aged out too, and validate failed to reconcile for good: a restate
    (its record written, then deleted as past retention) and a plain re-run (the first run's
    rows, still there until retention ran) alike (helper-136)."""
    from audience_profiles.privacy.retention import apply_retention

    config = write_config(tmp_path, retention={"quarantine_days": 3})
    landing = landing_of_two_days(tmp_path)
    catalogue = landing / "elements" / "elements.csv"
    catalogue.write_text(catalogue.read_text() + "54663,A bad option,x,Nobody\n")
    run_all(RunWindow.for_date(FIRST), config)
    run_all(RunWindow.for_date(SECOND), config)
    apply_retention("2022-05-03", "retention-run", config)  # keeps the quarantine from 04-30

    for restate in ("", "typo fixed"):
        result = run_all(RunWindow.for_date(FIRST), config, restate_catalogue=restate)
        assert result["validate"]["sources"]["elements"] == {
            "read": 4, "valid": 3, "quarantined": 0, "aged_out": 1
        }  # fmt: skip
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute(
            f"SELECT count(*) FROM quarantine WHERE dt = DATE '{FIRST}'"
        ).fetchall() == [(0,)]


def test_a_restate_with_no_catalogue_landed_fails_and_keeps_the_history(tmp_path):
    """An empty elements/ folder on a day without interactions passes validate and records no
    change; restated, it dropped what later dates recorded, so a later date's plain re-run went
    back to the catalogue before the restated date, the export back unchanged (helper-136)."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    (landing / "interactions" / f"date={SECOND}" / "part-0.csv").unlink()
    run_all(RunWindow.for_date(FIRST), config)
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(SECOND), config)
    recorded = history(config)
    (landing / "elements" / "elements.csv").unlink()
    with pytest.raises(LandingError, match="restate_catalogue restates with the catalogue"):
        run_all(RunWindow.for_date(SECOND), config, restate_catalogue="typo fixed")
    assert history(config) == recorded
    run_all(RunWindow.for_date(SECOND), config)  # without restating, the empty day still passes


def test_a_restate_applies_once_per_date_though_its_run_keeps_the_conf(tmp_path):
    """Airflow keeps a run's conf: a restated run cleared later, or the same backfill run again,
    passes the same text. It restates no more (helper-136): the dates after it recorded since."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="2026-12-04 typo")
    write_catalogue(landing, "A third title")
    run_all(RunWindow.for_date(SECOND), config)  # the next date records the third title
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="2026-12-04 typo")  # cleared
    assert titles(config, FIRST)[0][2] == NEW_TITLE
    assert titles(config, SECOND)[0][2] == "A third title"
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute(
            "SELECT CAST(dt AS VARCHAR), restated_by FROM element_history_restates"
        ).fetchall() == [(FIRST, "2026-12-04 typo")]
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="2026-12-05 the third")
    assert titles(config, FIRST)[0][2] == "A third title"  # a new text restates


def test_a_restate_stays_applied_after_a_later_restate_drops_the_date_s_record(tmp_path):
    """A restate of an earlier date deletes the later dates' records: the run of a date restated
    before still carries its text, and must not restate again over a date recorded since
    (helper-137)."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    third = "2022-05-01"
    write_csv(
        landing / "interactions" / f"date={third}" / "part-0.csv",
        INTERACTION_HEADER,
        [[third, SEED_EVENT, "54663", SEED_SESSION, 0, 1]],
    )
    for ds in (FIRST, SECOND):
        run_all(RunWindow.for_date(ds), config)
    write_catalogue(landing, "Second title")
    run_all(RunWindow.for_date(SECOND), config, restate_catalogue="fix A")
    write_catalogue(landing, "Third title")
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="fix B")  # drops SECOND's record
    write_catalogue(landing, "Fourth title")
    run_all(RunWindow.for_date(third), config)  # a new date records the fourth
    run_all(RunWindow.for_date(SECOND), config, restate_catalogue="fix A")  # its run cleared
    assert [titles(config, ds)[0][2] for ds in (FIRST, SECOND, third)] == [
        "Third title",
        "Third title",
        "Fourth title",
    ]
    assert {row[0] for row in history(config)} == {FIRST, third}


def test_a_restate_with_every_element_row_quarantined_fails_before_it_records(tmp_path):
    """The catalogue kept is the one loaded before: restating with it would drop the later
    dates' records, and mark the text applied, so the fixed file's retry would not restate."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    for ds in (FIRST, SECOND):
        run_all(RunWindow.for_date(ds), config)
    catalogue = landing / "elements" / "elements.csv"
    good = catalogue.read_text()
    header, *rows = good.splitlines()
    catalogue.write_text("\n".join([header, *("," + r.split(",", 1)[1] for r in rows)]) + "\n")
    with pytest.raises(LandingError, match="every one of its 3 element row"):
        run_all(RunWindow.for_date(FIRST), config, restate_catalogue="fix")
    assert {row[0] for row in history(config)} == {FIRST}  # SECOND recorded no change
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM element_history_dates").fetchall() == [(2,)]
        assert con.execute("SELECT count(*) FROM element_history_restates").fetchall() == [(0,)]
    write_catalogue(landing, NEW_TITLE)  # fixed; the task cleared
    run_all(RunWindow.for_date(FIRST), config, restate_catalogue="fix")
    assert titles(config, FIRST)[0][2] == NEW_TITLE
