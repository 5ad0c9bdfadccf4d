"""What the stream attached (``stream_identifiers``) stays until a daily publish has put it in the
current ``profile_identifiers``: a re-run of an old date (which keeps the current tables) and a
publish whose build started before a batch recorded an entry drop nothing of it."""

from __future__ import annotations

import dataclasses

from audience_profiles import pipeline as P
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.warehouse import open_warehouse
from tests.identity.world import profile_id
from tests.stream.support import form_row, query, write_forms
from tests.support import write_config, write_seed_example

STREAM_STATE = "SELECT identifier_value, profile_id FROM stream_identifiers ORDER BY ALL"


def stream_batch(config, ds: str, attached: list[tuple[str, str, str]]) -> None:
    """A micro-batch's durable part: its start (stream/state.sql) and the identifiers it commits
    (as stream/commit.sql records them: the batch's date, the commit's time)."""
    with open_warehouse(config) as wh:
        wh.run_sql("setup/tables")
        wh.run_sql("stream/state")
        for identifier_type, value, profile_id in attached:
            wh.execute_script(
                f"DELETE FROM stream_identifiers WHERE identifier_value = '{value}';"
                f" INSERT INTO stream_identifiers VALUES ('{identifier_type}', '{value}',"
                f" '{profile_id}', DATE '{ds}', CAST(current_timestamp AS TIMESTAMP))"
            )


def next_batch_state(config) -> list[tuple]:
    stream_batch(config, "2022-04-30", [])
    return query(config, STREAM_STATE)


def setup(tmp_path):
    config = dataclasses.replace(write_config(tmp_path), destinations=())
    write_seed_example(tmp_path / "landing")
    return config, tmp_path / "landing"


ANN = [("email", "ann@x.org", "ap_ann"), ("session_id", "s-ann", "ap_ann")]
BOB = profile_id("email:bob@x.org")  # as the build names him (the entry agrees with it)


def test_rerunning_an_old_date_keeps_what_the_stream_attached(tmp_path):
    config, landing = setup(tmp_path)
    for ds in ("2022-04-28", "2022-04-29"):
        run_all(RunWindow.for_date(ds), config)
    # A late form entry lands in 2022-04-28, already built: the stream attaches Ann at once.
    write_forms(landing, "2022-04-28", "late-ann.csv", [form_row("2022-04-28T09:00:00", "Ann", "ann@x.org", "s-ann")])  # fmt: skip
    stream_batch(config, "2022-04-28", ANN)

    # docs/streams.md: the late file enters 2022-04-28's tables when the date is re-run. A later
    # date is live, so the current tables are kept: Ann is still only the stream's.
    run_all(RunWindow.for_date("2022-04-28", run_id="rerun"), config)
    assert query(config, "SELECT 1 FROM profile_identifiers WHERE identifier_value = 'ann@x.org'") == []  # fmt: skip
    assert next_batch_state(config) == [("ann@x.org", "ap_ann"), ("s-ann", "ap_ann")]

    # The next build of the live date sees her rows: its publish takes her over.
    run_all(RunWindow.for_date("2022-04-29", run_id="again"), config)
    assert query(config, "SELECT identifier_value FROM profile_identifiers WHERE identifier_value IN ('ann@x.org', 's-ann') ORDER BY 1") == [("ann@x.org",), ("s-ann",)]  # fmt: skip
    assert next_batch_state(config) == []


def test_a_batch_between_the_identity_build_and_its_publish_is_kept(tmp_path):
    config, landing = setup(tmp_path)
    run_all(RunWindow.for_date("2022-04-28"), config)
    # Before the daily run: one entry of its date (the build sees it), one of the next date.
    write_forms(landing, "2022-04-29", "bob.csv", [form_row("2022-04-29T08:00:00", "Bob", "bob@x.org", "s-bob")])  # fmt: skip
    stream_batch(config, "2022-04-29", [("email", "bob@x.org", BOB)])
    stream_batch(config, "2022-04-30", [("email", "cy@x.org", "ap_cy")])

    window = RunWindow.for_date("2022-04-29")
    staged = [P.extract_source(s, window, config) for s in P.VALIDATION_ORDER]
    P.validate(window, staged, config)
    P.enrich(window, config)
    P.resolve_identities(window, config)
    # The pool is free between tasks: a batch attaches Ann, which this build never saw.
    write_forms(landing, "2022-04-29", "ann.csv", [form_row("2022-04-29T23:59:00", "Ann", "ann@x.org", "s-ann")])  # fmt: skip
    stream_batch(config, "2022-04-29", ANN)
    P.build_profiles(window, config)
    P.build_segments(window, config)
    P.check_quality(window, config)
    P.publish(window, config)

    assert next_batch_state(config) == [
        ("ann@x.org", "ap_ann"),
        ("cy@x.org", "ap_cy"),
        ("s-ann", "ap_ann"),
    ]
