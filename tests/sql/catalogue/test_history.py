"""The element catalogue kept by date (catalogue/record.sql, catalogue/_macros.sql): a re-run of
a date enriches with the catalogue it had, whatever has landed since."""

from __future__ import annotations

from pathlib import Path

import duckdb

from audience_profiles import cli
from audience_profiles.config import CONFIG_ENV
from audience_profiles.pipeline import RunWindow, run_all
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


def test_a_re_run_of_the_latest_date_takes_a_corrected_catalogue(tmp_path):
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    run_all(RunWindow.for_date(SECOND), config)
    write_catalogue(landing, "Which team do you support??")
    run_all(RunWindow.for_date(SECOND), config)  # a typo landed, the date run again
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(SECOND), config)  # corrected
    assert titles(config, SECOND)[0] == ("54663", 1, NEW_TITLE, "Manchester Red")
    assert [row for row in history(config) if row[0] == SECOND] == [
        (SECOND, "54663", 0, NEW_TITLE, False),
        (SECOND, "54663", 1, NEW_TITLE, False),
    ]
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, OLD_TITLE, "Manchester Blue")]


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


def test_restate_gives_earlier_dates_the_catalogue_loaded_last(tmp_path, capsys, monkeypatch):
    """A typo fixed for every date: restate from the first date, then run the dates again."""
    config = write_config(tmp_path)
    landing = landing_of_two_days(tmp_path)
    run_all(RunWindow.for_date(FIRST), config)
    write_catalogue(landing, NEW_TITLE)
    run_all(RunWindow.for_date(SECOND), config)

    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    assert cli.main(["restate-catalogue", "--from", FIRST]) == 0
    assert f"from {FIRST}" in capsys.readouterr().out
    assert {row[0] for row in history(config)} == {FIRST}
    run_all(RunWindow.for_date(FIRST), config)
    assert titles(config, FIRST) == [("54663", 0, NEW_TITLE, "Manchester Blue")]
    run_all(RunWindow.for_date(SECOND), config)
    assert {row[0] for row in history(config)} == {FIRST}  # nothing changed since
