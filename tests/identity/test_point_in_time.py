"""Point-in-time correctness and stable ids, through the real daily build (run_all).

One generated sample (the seed's form entry on 2022-01-11, then three days of activity with
merges, a kiosk and dirty rows) is built two ways:
- incrementally, one date after the other, as the scheduler would; then a past date is re-run
  after later data arrived: every export must be identical to the first run's;
- as a rebuild in another warehouse: every partition loaded first (newest first), then the
  dates built out of order: every export must equal the incremental run's, ids included.
Random landings of the rules' edge cases (tests/edge_landings.py) go through both too.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings

from audience_profiles.config import OUTPUT_TABLES, load_config
from audience_profiles.generate import GenerateOptions, data_dates, generate
from audience_profiles.pipeline import RunWindow, run_all
from tests.edge_landings import DATES, build_date, edge_config, landings, load_date, write_landing
from tests.identity.world import IDENTITY_YML

EXPORTED = [t for t in OUTPUT_TABLES if t != "segment_memberships"]


def make_config(root: Path, name: str, landing_root: Path):
    path = root / f"{name}.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "start_date": "2022-01-11",
                "landing_root": str(landing_root),
                "work_dir": str(root / name / "work"),
                "warehouse": {"path": str(root / name / "warehouse.duckdb"), "threads": 2},
                "identity_config": str(IDENTITY_YML),
                "destinations": [],
            }
        )
    )
    return load_config(path)


def read_exports(config, ds: str) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every export of the run: columns and rows (sorted: row order is not the contract)."""
    export = Path(config.work_dir) / "runs" / ds / "export"
    out = {}
    for table in EXPORTED:
        relation = duckdb.sql(f"SELECT * FROM read_parquet('{export / table}.parquet')")
        out[table] = (relation.columns, sorted(relation.fetchall(), key=repr))
    return out


def add_late_entry(landing_root: Path) -> dict:
    """A form entry observed on 04-27 that only lands on 04-29: person A's session enters
    person B's email, so A and B merge, but only from the 04-29 run on."""
    entries = duckdb.sql(
        f"SELECT * FROM read_csv('{landing_root}/form_entries/date=2022-04-27/*.csv', "
        "all_varchar=true) WHERE email LIKE '%@%' AND form_name <> 'Stadium Kiosk Draw'"
    ).fetchall()
    (a, b) = [e for e in entries if e[3].strip().lower() != entries[0][3].strip().lower()][:1] + [
        entries[0]
    ]
    late = landing_root / "form_entries" / "date=2022-04-29" / "part-9.csv"
    late.write_text(
        "entry_datetime,first_name,last_name,email,optin_1,optin_2,accept_terms,session_id,"
        f"form_name,form_id\n2022-04-27T23:00:00,{b[1]},{b[2]},{b[3]},Yes,No,Yes,{a[7]},"
        "Win a Signed Shirt,29\n"
    )
    return {"session_a": a[7], "email_b": b[3].strip().lower()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("pit")
    generate(
        GenerateOptions(out=root / "landing", start=dt.date(2022, 4, 27), days=3, interactions=2000)
    )
    late = add_late_entry(root / "landing")
    dates = data_dates(root / "landing")
    assert dates == ["2022-01-11", "2022-04-27", "2022-04-28", "2022-04-29"]
    return root, dates, late


@pytest.fixture(scope="module")
def incremental(sample):
    root, dates, _ = sample
    config = make_config(root, "incremental", root / "landing")
    first_runs = {}
    for ds in dates:
        run_all(RunWindow.for_date(ds), config)
        first_runs[ds] = read_exports(config, ds)
    return config, first_runs


def test_rerunning_a_past_date_after_later_data_gives_identical_outputs(incremental):
    config, first_runs = incremental
    ds = "2022-04-27"  # since its first run, 04-28 and 04-29 landed, with a late 04-27 entry
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        before = {
            t: sorted(con.sql(f"SELECT * FROM {t} WHERE dt = DATE '{ds}'").fetchall())
            for t in ("profile_merges", "identity_link_audit")
        }
    run_all(RunWindow.for_date(ds), config)
    again = read_exports(config, ds)
    for table in EXPORTED:
        assert again[table] == first_runs[ds][table], f"{ds}: {table} changed on re-run"
    with duckdb.connect(config.warehouse.path, read_only=True) as con:
        for table, rows in before.items():
            query = f"SELECT * FROM {table} WHERE dt = DATE '{ds}'"
            assert sorted(con.sql(query).fetchall()) == rows


def rows_of(exports, table):
    columns, rows = exports[table]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_the_late_entry_merges_on_the_day_it_landed(sample, incremental):
    _, _, late = sample
    _, first_runs = incremental

    def profile_of(ds, type_, value):
        ids = rows_of(first_runs[ds], "profile_identifiers")
        return next(
            r["profile_id"]
            for r in ids
            if (r["identifier_type"], r["identifier_value"]) == (type_, value)
        )

    a27 = profile_of("2022-04-27", "session_id", late["session_a"])
    b27 = profile_of("2022-04-27", "email", late["email_b"])
    assert a27 != b27  # not merged as of 04-27, though the entry was made that evening
    assert rows_of(first_runs["2022-04-28"], "profile_merges") == []
    merged = {
        (m["merged_profile_id"], m["surviving_profile_id"]): m
        for m in rows_of(first_runs["2022-04-29"], "profile_merges")
    }
    survivor = profile_of("2022-04-29", "email", late["email_b"])
    assert survivor in (a27, b27)
    [merge] = [m for (gone, kept), m in merged.items() if {gone, kept} == {a27, b27}]
    assert str(merge["merged_at"]) == "2022-04-27 23:00:00"
    assert merge["reason"] == "form_entries:session_id-email"


def test_the_sample_exercises_rejections_and_the_seed(incremental):
    _, first_runs = incremental
    assert any(first_runs[ds]["identity_link_audit"][1] for ds in first_runs)
    seed = [
        (
            r["first_name"],
            r["last_name"],
            r["email"],
            r["interaction_date"],
            r["attribute"],
            r["option"],
        )
        for r in rows_of(first_runs["2022-04-29"], "audience_profile_interactions")
        if r["session_id"] == "e298a949-fa5a-4fae-b4bb-f468cb185dd9"
    ]
    assert seed == [
        (
            "David",
            "Wilson",
            "david.wilson@example.com",
            dt.date(2022, 4, 29),
            "Which team do you support?",
            "Manchester Blue",
        )
    ]


def test_a_rebuild_in_another_order_gives_the_same_outputs_and_ids(sample, incremental):
    root, dates, _ = sample
    _, first_runs = incremental
    config = make_config(root, "rebuild", root / "landing")
    for ds in reversed(dates):  # every partition first, newest first
        load_date(config, ds)
    build_date(config, "2022-04-29")
    assert read_exports(config, "2022-04-29") == first_runs["2022-04-29"]
    shutil.rmtree(root / "rebuild", ignore_errors=True)


# About 10 s an example: a few per CI run (150 were run while writing it, none differing).
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(landing=landings)
# Found by CI: three people on the first day, one the next (sess-0's later emails merge them all),
# which the quality gate's volume check stopped before any output could be compared.
@example(
    landing={
        "interactions": [],
        "form_entries": [
            ((day, False), "00:00:00", session, email, "", "", "", "", "")
            for day, session, email in [
                (0, "sess-3", "bob@example.com"),
                (0, "sess-1", "ann@example.com"),
                (0, "sess-0", "cat@example.com"),
                (1, "sess-0", "bob@example.com"),
                (1, "sess-0", "ann@example.com"),
            ]
        ],
        "identities": [],
        "json": set(),
    }
)
def test_random_landings_give_the_same_outputs_on_rerun_and_in_a_rebuild(landing, tmp_path_factory):
    """Kiosks, limits, merges, blocked and late rows at random: every date built as the scheduler
    would, one after the other; each earlier date re-run once all data has landed; and a rebuild
    in another warehouse (partitions newest first, dates out of order). Every export of a date
    must be the same, profile ids included."""
    root = tmp_path_factory.mktemp("pit-random")
    write_landing(root / "landing", landing)
    config = edge_config(root / "incremental", root / "landing")
    first_runs = {}
    for ds in DATES:
        load_date(config, ds)
        build_date(config, ds)
        first_runs[ds] = read_exports(config, ds)
    for ds in DATES[:-1]:
        build_date(config, ds)
        assert read_exports(config, ds) == first_runs[ds], f"{ds} changed on re-run"
    rebuild = edge_config(root / "rebuild", root / "landing")
    for ds in reversed(DATES):
        load_date(rebuild, ds)
    for ds in (DATES[1], DATES[0], DATES[2]):
        build_date(rebuild, ds)
        assert read_exports(rebuild, ds) == first_runs[ds], f"{ds} differs in the rebuild"
    shutil.rmtree(root, ignore_errors=True)
