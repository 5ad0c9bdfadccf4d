"""A small world of fans for identity tests: rows go in as landing text, through the real
validation, enrichment, identity and profile SQL, in one in-memory DuckDB warehouse.

Only the storage differs from a daily run (memory instead of a file, no Parquet staging), so a
scenario reads like its story and still exercises the same SQL.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from pathlib import Path

import pandas as pd

from audience_profiles import landing
from audience_profiles.config import WarehouseConfig
from audience_profiles.identity import IdentityRules, load_rules, resolve_run
from audience_profiles.pipeline import RunWindow
from audience_profiles.privacy import EMAIL_PATTERN
from audience_profiles.warehouse.duckdb import DuckDBWarehouse

IDENTITY_YML = Path(__file__).resolve().parents[2] / "include" / "config" / "identity.yml"
SOURCES = ("elements", "interactions", "form_entries", "identities")


def profile_id(identifier: str) -> str:
    """The id a profile anchored on ``identifier`` ("type:value") gets (profile_identifiers.sql)."""
    return "ap_" + hashlib.md5(identifier.encode()).hexdigest()[:20]


class World:
    def __init__(self, rules: IdentityRules | None = None):
        self.rules = rules or load_rules(IDENTITY_YML)
        self.wh = DuckDBWarehouse(WarehouseConfig(path=":memory:", threads=1))
        self.wh.run_sql("setup/tables")
        self.rows: dict[str, dict[str, list[dict]]] = {s: defaultdict(list) for s in SOURCES}
        self.lines = itertools.count(2)  # line 1 is a CSV header
        self.raw_forms: list[list] = []
        self.raw_ssos: list[list] = []

    def close(self) -> None:
        self.wh.close()

    # --- landing rows (text, as a fan's browser sent them) --------------------------------

    def _add(self, source: str, dt: str, **values) -> None:
        columns = landing.SOURCES[source].columns
        row = {c: None if values.get(c) is None else str(values[c]) for c in columns}
        row["_file"] = f"landing/{source}/date={dt}/part-0.csv"
        row["_line"] = next(self.lines)
        self.rows[source][dt].append(row)

    def element(self, poll_id, title, labels, element_type="vote", event_id="event-1"):
        for option, label in enumerate(labels):
            self._add(
                "elements",
                "-",
                poll_id=poll_id,
                title=title,
                option=option,
                option_label=label,
                element_type=element_type,
                event_id=event_id,
            )

    def form(
        self,
        at,
        session_id,
        email,
        first_name=None,
        last_name=None,
        optin_1=None,
        optin_2=None,
        accept_terms=None,
        form_name="Win a Signed Shirt",
        form_id=29,
        dt=None,
    ):
        self._add(
            "form_entries",
            dt or at[:10],
            entry_datetime=at,
            first_name=first_name,
            last_name=last_name,
            email=email,
            optin_1=optin_1,
            optin_2=optin_2,
            accept_terms=accept_terms,
            session_id=session_id,
            form_name=form_name,
            form_id=form_id,
        )

    def sso(
        self, at, session_id, external_id, email=None, first_name=None, last_name=None, dt=None
    ):
        self._add(
            "identities",
            dt or at[:10],
            observed_at=at,
            session_id=session_id,
            external_id=external_id,
            email=email,
            first_name=first_name,
            last_name=last_name,
        )

    def interaction(self, date, session_id, poll_id, option, event_id="event-1", votes=1, dt=None):
        self._add(
            "interactions",
            dt or date,
            date=date,
            event_id=event_id,
            poll_id=poll_id,
            session_id=session_id,
            option=option,
            votes=votes,
        )

    def raw_form(
        self, at, session_id, email, file="other-loader", dt=None, first_name=None, last_name=None
    ):
        """A form entry that reaches the warehouse past validation (another loader's row; its
        file may be NULL, as the table allows), in partition ``dt`` (default: ``at``'s day)."""
        line = next(self.lines) if file is not None else None
        self.raw_forms.append(
            [dt or at[:10], at, email, session_id, file, line, first_name, last_name]
        )

    def raw_sso(self, at, session_id, external_id, email=None, file="other-loader", dt=None):
        """An SSO identity that reaches the warehouse past validation (another loader's row), in
        partition ``dt`` (default: ``at``'s day)."""
        line = next(self.lines) if file is not None else None
        self.raw_ssos.append([dt or at[:10], at, session_id, external_id, email, file, line])

    # --- runs ------------------------------------------------------------------------------

    def load(self) -> None:
        """Validate every partition (and enrich interactions) with the pipeline's SQL."""
        for source in SOURCES:
            for dt, rows in self.rows[source].items():
                columns = ["_file", "_line", "_error", "_raw", *landing.SOURCES[source].columns]
                frame = pd.DataFrame(
                    [{**r, "_error": None, "_raw": ""} for r in rows], columns=columns
                ).astype({c: "string" for c in columns if c != "_line"})
                self.wh.con.register("staged", frame)
                ds = "2000-01-01" if dt == "-" else dt
                self.wh.run_sql(
                    f"validate/{source}",
                    ds=ds,
                    staged="staged",
                    email_pattern=EMAIL_PATTERN,
                    write_quarantine=True,
                )
                self.wh.con.unregister("staged")
                if source == "interactions":
                    self.wh.run_sql("enrich/interactions_enriched", ds=dt, dated=True)
        for row in self.raw_forms:
            self.wh.con.execute(
                "INSERT INTO form_entries (dt, entry_datetime, email, session_id, _file, _line, "
                "first_name, last_name) "
                "VALUES (CAST(? AS DATE), CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?, ?)",
                row,
            )
        for row in self.raw_ssos:
            self.wh.con.execute(
                "INSERT INTO identities (dt, observed_at, session_id, external_id, email, _file, "
                "_line) VALUES (CAST(? AS DATE), CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?)",
                row,
            )
        quarantined = self.wh.query("SELECT source, reason FROM quarantine")
        assert not quarantined, f"test rows quarantined: {quarantined}"

    def run(self, ds: str) -> dict:
        """Identity and profiles as of ``ds`` (the daily run's SQL), quality checks included."""
        self.load()
        window = RunWindow.for_date(ds)
        rs = window.run_schema
        self.wh.execute_script(f"DROP SCHEMA IF EXISTS {rs} CASCADE; CREATE SCHEMA {rs}")
        result = resolve_run(
            self.wh, rs, self.rules, ds, window.interval_start, window.interval_end
        )
        params = {"rs": rs, **window.as_dict()}
        self.wh.run_sql("profiles/audience_profiles", **params)
        failed = [c for c in self.wh.query_sql("checks/quality", rs=rs, ds=ds) if c[1]]
        assert not failed, f"quality checks failed: {failed}"
        return result

    # --- reading results -------------------------------------------------------------------

    def table(self, ds: str, name: str, order: str = "1") -> list[dict]:
        rs = RunWindow.for_date(ds).run_schema
        relation = f"{rs}.{name}"
        if name == "audience_profile_interactions":  # a query, exported by publish
            query = self.wh.render(f"profiles/{name}", schema=f"{rs}.", ds=ds)
            relation = f"({query})"
        cursor = self.wh.con.execute(f"SELECT * FROM {relation} ORDER BY {order}")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def profiles(self, ds: str) -> dict[str, set[str]]:
        """profile_id -> {"type:value", ...} as of ``ds``."""
        out: dict[str, set[str]] = defaultdict(set)
        for row in self.table(ds, "profile_identifiers"):
            out[row["profile_id"]].add(f"{row['identifier_type']}:{row['identifier_value']}")
        return dict(out)

    def groups(self, ds: str) -> set[frozenset[str]]:
        return {frozenset(ids) for ids in self.profiles(ds).values()}

    def profile_of(self, ds: str, identifier: str) -> str | None:
        for profile_id, ids in self.profiles(ds).items():
            if identifier in ids:
                return profile_id
        return None

    def audit(self, ds: str) -> list[dict]:
        return self.table(ds, "identity_link_audit", order="file, line, rule")

    def merges(self, ds: str) -> list[dict]:
        return self.table(ds, "profile_merges", order="merged_profile_id")

    def profile(self, ds: str, profile_id: str) -> dict:
        rows = [r for r in self.table(ds, "audience_profiles") if r["profile_id"] == profile_id]
        assert len(rows) == 1, rows
        return rows[0]
