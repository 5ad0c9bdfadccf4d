"""
# load_local_drop (an example consumer of one destination)

A downstream DAG that follows one destination's deliveries only: the `local_drop` destination
of pipeline.yml (docs/operations.md, "Scheduling on the outputs"). Each deliver task also sends
an event to its destination's own asset, `audience_profiles_delivered/<name>`
(`audience-profiles://delivered/<name>`, the name URL-quoted); a DAG scheduled on the shared
`audience_profiles_delivered` would run for every destination's delivery instead. Copy it into
the DAGs folder of the deployment that runs the daily DAG and put your load where the `...` is.
Once it is unpaused, a scheduler runs it when `local_drop` has delivered; `audience-profiles run`
runs the daily DAG only, not this one. Run by hand (`airflow dags test load_local_drop`), it has no event
to read and returns no dates. tests/scheduler/test_backfill.py runs this very file on a real
scheduler, after a backfill.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

# Name and URI as audience_profiles.assets.delivered_to("local_drop") makes them: both must match,
# or this declares another asset and the DAG never runs (docs/operations.md).
LOCAL_DROP = Asset(
    name="audience_profiles_delivered/local_drop", uri="audience-profiles://delivered/local_drop"
)


@dag(schedule=LOCAL_DROP, catchup=False, doc_md=__doc__)
def load_local_drop():
    @task(inlets=[LOCAL_DROP])
    def load() -> dict:
        context = get_current_context()
        triggering = context["triggering_asset_events"][LOCAL_DROP]
        if not triggering:  # triggered by hand
            return {"dates": [], "destinations": []}
        # Every event since the earliest triggering one, as refresh_marketing_mart.py reads them
        # (Airflow gives a run only the events up to the one that queued it).
        since = min(e.timestamp for e in triggering).isoformat()
        events = [e for e in context["inlet_events"][LOCAL_DROP].after(since) if "ds" in e.extra]
        files = [path for e in events for path in e.extra.get("files") or []]
        ...  # load the files the drop wrote for those dates (their keys under its folder)
        return {
            "dates": sorted({e.extra["ds"] for e in events}),
            "destinations": sorted({e.extra["destination"] for e in events}),
            "files": len(files),
        }

    load()


load_local_drop()
