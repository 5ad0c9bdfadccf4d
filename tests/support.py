"""Helpers shared by tests: a pipeline.yml in a temp folder, and landing files."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import yaml

from audience_profiles.config import PROJECT_ROOT, PipelineConfig, load_config
from audience_profiles.landing import SOURCES

IDENTITY_RULES = PROJECT_ROOT / "include" / "config" / "identity.yml"
DAILY_DAG_FILE = PROJECT_ROOT / "dags" / "audience_profiles.py"


def register_dag(dag) -> None:
    """Store a DAG defined in a test in the metadata DB, as the dag-processor would: dag.test()
    only syncs DAGs found in the configured bundles (the project's dags/ folder)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
        )


def load_daily_dag():
    """The daily DAG object, imported from its file (dags/ is not a package)."""
    spec = importlib.util.spec_from_file_location("audience_profiles_dag_file", DAILY_DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.audience_profiles()


def asset_event_extras(asset, run_id: str) -> list[dict]:
    """The extras of the events of ``asset`` the DAG run ``run_id`` emitted, from the metadata
    database of a ``dag.test()`` run."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetEvent.extra)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name == asset.name, AssetEvent.source_run_id == run_id)
            )
        )


def write_config(root: Path, destinations: list[dict] | None = None, **overrides) -> PipelineConfig:
    """A pipeline.yml whose landing, work, warehouse and output all live under ``root``."""
    raw = {
        "start_date": "2022-01-01",
        "landing_root": str(root / "landing"),
        "work_dir": str(root / "work"),
        "warehouse": {
            "engine": "duckdb",
            "path": str(root / "warehouse.duckdb"),
            "memory_limit": "1GB",
        },
        "identity_config": str(IDENTITY_RULES),
        "destinations": destinations
        if destinations is not None
        else [
            {
                "name": "local_drop",
                "kind": "local",
                "path": str(root / "output"),
                "formats": ["csv", "json"],
                "tables": [
                    "audience_profiles",
                    "audience_profile_interactions",
                    "profile_identifiers",
                    "profile_merges",
                    "interactions_enriched",
                    "quarantine",
                ],
            }
        ],
        **overrides,
    }
    path = root / "pipeline.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_ndjson(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# Headers in contract order, straight from the landing contract.
INTERACTION_HEADER = list(SOURCES["interactions"].columns)
ELEMENT_HEADER = list(SOURCES["elements"].required)
# The contract's column order (the tests' rows are positional), every optional column included.
FORM_HEADER = [
    "entry_datetime",
    "first_name",
    "last_name",
    "email",
    "optin_1",
    "optin_2",
    "accept_terms",
    "session_id",
    "form_name",
    "form_id",
]
assert sorted(FORM_HEADER) == sorted(SOURCES["form_entries"].columns)
IDENTITY_HEADER = list(SOURCES["identities"].columns)

SEED_SESSION = "e298a949-fa5a-4fae-b4bb-f468cb185dd9"
SEED_EVENT = "73fa2b2b-6e24-4d35-9a01-83d36d4d48f5"


def write_seed_example(landing: Path) -> None:
    """Exactly the rows of the seed page's illustrations (with an email address filled in)."""
    write_csv(
        landing / "interactions" / "date=2022-04-29" / "part-0.csv",
        INTERACTION_HEADER,
        [["2022-04-29", SEED_EVENT, "54663", SEED_SESSION, 0, 1]],
    )
    write_csv(
        landing / "elements" / "elements.csv",
        ELEMENT_HEADER,
        [
            ["54663", "Which team do you support?", i, label]
            for i, label in enumerate(
                ["Manchester Blue", "Manchester Red", "North London White", "West London Blue"]
            )
        ],
    )
    write_csv(
        landing / "form_entries" / "date=2022-01-11" / "part-0.csv",
        FORM_HEADER,
        [
            [
                "2022-01-11T11:34:00",
                "David",
                "Wilson",
                "david.wilson@example.com",
                "Yes",
                "Yes",
                "Yes",
                SEED_SESSION,
                "Win a Signed Shirt",
                29,
            ]
        ],
    )


def break_validation(monkeypatch, source: str, staged: str | None = None, sql: str = "") -> None:
    """Make the validate SQL of ``source`` lose rows, as a faulty change to it would: read its
    staged rows through ``staged`` (``{staged}`` standing for the staged relation) and run
    ``sql`` after it."""
    from audience_profiles.warehouse.base import Warehouse

    render = Warehouse.render

    def broken(self, name, **params):
        if name != f"validate/{source}":
            return render(self, name, **params)
        if staged:
            params["staged"] = staged.format(staged=params["staged"])
        return render(self, name, **params) + "\n" + sql

    monkeypatch.setattr(Warehouse, "render", broken)


def union_find(edges) -> dict:
    """Plain-Python connected components, the reference the SQL and the stream are compared
    with: every node of ``edges`` -> the smallest node of its component."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}
