"""Retention: old partitions go, what went is logged, and a configuration mistake names its key."""

from __future__ import annotations

import logging
import re

import pytest

from audience_profiles.config import ConfigError
from audience_profiles.privacy.retention import RetentionPolicy, apply_retention
from tests.privacy.people import query
from tests.support import write_config

RUN_DAY = "2022-04-30"


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        (
            {"interaction_days": 3},
            "retention.interaction_days: unknown key 'interaction_days' (did you mean "
            "'interactions_days'?) in retention",
        ),
        ({"quarantine_days": 0}, "retention.quarantine_days must be a whole number"),
        ({"snapshots_days": "30"}, "retention.snapshots_days must be a whole number"),
        ({"snapshots_days": True}, "retention.snapshots_days must be a whole number"),
        # its cutoff's date arithmetic failed in a run, naming no key (OverflowError)
        (
            {"interactions_days": 10**11},
            "retention.interactions_days must be a whole number of days (1 to 36500)",
        ),
        ([30], "retention must be a mapping"),
    ],
)
def test_a_bad_retention_setting_names_the_file_and_key(tmp_path, retention, message):
    # pipeline.yml is validated as it loads, so the mistake surfaces before any task runs.
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        write_config(tmp_path, retention=retention)
    assert str(tmp_path / "pipeline.yml") in str(err.value)


def test_cutoffs_count_back_from_the_run_date(tmp_path):
    config = write_config(tmp_path, retention={"interactions_days": 30, "snapshots_days": None})
    assert RetentionPolicy.from_config(config).cutoffs(RUN_DAY) == {
        "interactions_days": "2022-03-31"
    }


def test_old_partitions_and_run_folders_go_and_the_log_says_how_many(built, tmp_path, caplog):
    retention = {"interactions_days": 1, "quarantine_days": 1, "snapshots_days": 1}
    config = write_config(tmp_path, retention=retention)
    counts = {
        t: query(config, f"SELECT dt, count(*) FROM {t} GROUP BY dt ORDER BY dt")
        for t in ("interactions", "interactions_enriched", "quarantine", "profile_merges")
    }
    runs = sorted(p.name for p in (tmp_path / "work" / "runs").iterdir())
    assert runs == ["2022-01-11", "2022-04-28", "2022-04-29"]
    caplog.set_level(logging.INFO)

    removed = apply_retention(RUN_DAY, "retention-run", config)

    kept = "2022-04-29"
    for table, before in counts.items():
        assert query(config, f"SELECT dt, count(*) FROM {table} GROUP BY dt ORDER BY dt") == [
            (d, n) for d, n in before if str(d) >= kept
        ], table
    assert sorted(p.name for p in (tmp_path / "work" / "runs").iterdir()) == [kept]
    interactions_gone = sum(n for d, n in counts["interactions"] if str(d) < kept)
    assert interactions_gone
    assert {"target": "interactions_days", "table": "interactions", "cutoff": kept,
            "rows_removed": interactions_gone} in removed  # fmt: skip
    assert {"target": "snapshots_days", "table": "work_dir/runs", "cutoff": kept,
            "rows_removed": 2} in removed  # fmt: skip
    logged = query(
        config,
        "SELECT CAST(ds AS VARCHAR), run_id, target, table_name, CAST(cutoff AS VARCHAR), "
        "rows_removed FROM retention_log ORDER BY table_name",
    )
    assert logged == sorted(
        (RUN_DAY, "retention-run", e["target"], e["table"], e["cutoff"], e["rows_removed"])
        for e in removed
        if e["rows_removed"]
    )
    # Nothing in quarantine was that old: counted in the task log, not logged as a removal.
    assert {"target": "quarantine_days", "table": "quarantine", "cutoff": kept,
            "rows_removed": 0} in removed  # fmt: skip
    assert not [row for row in logged if row[3] == "quarantine"]
    assert f"removed {interactions_gone} row(s) of interactions older than {kept}" in caplog.text

    # The same day again removes nothing and logs no removal.
    again = apply_retention(RUN_DAY, "retention-run-2", config)
    assert all(e["rows_removed"] == 0 for e in again)
    assert query(config, "SELECT count(*) FROM retention_log")[0][0] == len(logged)


def test_no_retention_configured_removes_nothing(built, caplog):
    caplog.set_level(logging.INFO)
    before = query(built, "SELECT count(*) FROM interactions")
    assert apply_retention(RUN_DAY, "r", built) == []
    assert query(built, "SELECT count(*) FROM interactions") == before
    assert "no retention configured" in caplog.text
