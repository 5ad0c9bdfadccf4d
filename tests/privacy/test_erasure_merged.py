"""An erasure of a person whose profiles merged: the merged-away profile's id goes too.

Eve fills in a form on 04-27 (profile anchored on her email), fills in another on 04-28 with her
work address and signs in with her SSO id (a second profile, in the segment as well), and on
04-29 signs in with her SSO id and her first email: the 04-28 profile merges into the first.
Its id is in no current table, but the 04-28 segment memberships name it alone (no identifier
beside it), in the run export kept for re-delivery and in the drop.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import yaml

from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy.erasure import run_erasure
from tests.privacy.people import file_request, form, interaction, query
from tests.support import FORM_HEADER, IDENTITY_HEADER, INTERACTION_HEADER, write_config, write_csv

DAYS = ("2022-04-27", "2022-04-28", "2022-04-29")
TABLES = ["audience_profiles", "profile_identifiers", "profile_merges", "segment_memberships"]


def write_eve(landing: Path) -> None:
    write_csv(
        landing / "elements" / "elements.csv",
        ["poll_id", "title", "option", "option_label"],
        [["54663", "Which team do you support?", 1, "Manchester Red"]],
    )
    write_csv(
        landing / "form_entries" / "date=2022-04-27" / "e.csv",
        FORM_HEADER,
        [form("2022-04-27T09:00:00", "Eve", "Moss", "eve@example.com", "eve-s1")],
    )
    write_csv(
        landing / "interactions" / "date=2022-04-27" / "e.csv",
        INTERACTION_HEADER,
        [interaction("2022-04-27", "eve-s1", 1)],
    )
    write_csv(
        landing / "form_entries" / "date=2022-04-28" / "e.csv",
        FORM_HEADER,
        [form("2022-04-28T09:00:00", "Eve", "Moss", "eve.work@example.com", "eve-s2")],
    )
    for day, session, email in (
        ("2022-04-28", "eve-s2", "eve.work@example.com"),
        ("2022-04-29", "eve-s3", "eve@example.com"),
    ):
        write_csv(
            landing / "identities" / f"date={day}" / "e.csv",
            IDENTITY_HEADER,
            [[f"{day}T10:00:00", session, "sso-eve", email, "Eve", "Moss"]],
        )


def holding(root: Path, needle: str) -> list[str]:
    """Files of the drop and the kept run exports whose rows mention ``needle``."""
    found = []
    with duckdb.connect() as con:
        for path in sorted(root.rglob("*")):
            if path.suffix == ".parquet":
                text = str(con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall())
            elif path.suffix == ".csv" and "landing" not in path.parts:
                text = path.read_text()
            else:
                continue
            if needle in text:
                found.append(str(path.relative_to(root)))
    return found


def test_the_ids_of_profiles_merged_into_the_persons_are_erased(tmp_path):
    segments = tmp_path / "segments.yml"
    segments.write_text(
        yaml.safe_dump({"segments": {"fans": {"attribute": {"column": "optin_1", "equals": True}}}})
    )
    drop = {"name": "drop", "kind": "local", "path": str(tmp_path / "output")}
    config = write_config(
        tmp_path,
        destinations=[{**drop, "formats": ["csv"], "tables": TABLES}],
        segments_config=str(segments),
    )
    write_eve(tmp_path / "landing")
    for ds in DAYS:
        run_all(RunWindow.for_date(ds), config)
    [(merged, survivor)] = query(
        config, "SELECT merged_profile_id, surviving_profile_id FROM profile_merges"
    )
    assert "segment_memberships/dt=2022-04-28/part-00000.csv" in " ".join(holding(tmp_path, merged))

    file_request(tmp_path / "landing", "r-1", "external_id", "sso-eve")
    result = run_erasure("2022-04-30", config)

    assert result["record"] == {"completed": ["r-1"], "pending": 0}
    assert holding(tmp_path, survivor) == []
    assert holding(tmp_path, merged) == []
