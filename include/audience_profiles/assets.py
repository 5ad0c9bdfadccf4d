"""The Airflow assets this project's DAGs emit events to, for downstream DAGs to schedule on
(docs/operations.md, "Scheduling on the outputs"): one event per date published (the run's
exports written, the warehouse's current tables refreshed if it is the latest date), one per date
and destination delivered, each naming the date; and one per erasure run that carried out a
request in the warehouse and the run exports (copies must follow). Each delivery also sends an
event to its destination's own asset (:func:`delivered_to`, through an asset alias), for a DAG
that follows one destination only.

Its own module, not ``dag_defaults``: defining an asset imports ``airflow.sdk`` (about 2 s and
100 MiB), which the build's modules (the report imports ``dag_defaults``) must not pay outside
Airflow (the CLI, the benchmark). DAG files import it; the tasks that emit import it lazily.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

PUBLISHED = Asset(name="audience_profiles_published", uri="audience-profiles://published")
DELIVERED = Asset(name="audience_profiles_delivered", uri="audience-profiles://delivered")
ERASED = Asset(name="audience_profiles_erased", uri="audience-profiles://erased")
# Resolved by each deliver task to its destination's asset (delivered_to).
DELIVERED_TO = AssetAlias(name="audience_profiles_delivered_to")


def delivered_to(destination: str) -> Asset:
    """The asset one destination's deliveries send events to (``destination`` is its name in
    pipeline.yml): a DAG scheduled on it runs for that destination only, where one scheduled on
    ``DELIVERED`` runs for every destination's delivery."""
    return Asset(
        name=f"audience_profiles_delivered/{destination}",
        uri=f"audience-profiles://delivered/{quote(destination, safe='')}",
    )
