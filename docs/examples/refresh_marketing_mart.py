"""
# refresh_marketing_mart (an example consumer)

A downstream DAG of another team, scheduled on what audience-profiles publishes
(docs/operations.md, "Scheduling on the outputs"). Copy it into your own DAGs folder and put
your refresh where the `...` is. tests/scheduler/test_backfill.py runs this very file on a real
scheduler, after a backfill.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

PUBLISHED = Asset(name="audience_profiles_published", uri="audience-profiles://published")


@dag(schedule=PUBLISHED, catchup=False, doc_md=__doc__)
def refresh_marketing_mart():
    @task(inlets=[PUBLISHED])
    def refresh() -> dict:
        context = get_current_context()
        triggering = context["triggering_asset_events"][PUBLISHED]
        if not triggering:  # triggered by hand
            return {"dates": [], "refreshed": False}
        # Airflow gives a run the events up to the one that queued it: those published while it
        # was queued go to the next run, and to none if no event follows (the last dates of a
        # backfill). So read every event since the earliest triggering one; a date seen by two
        # runs is refreshed twice, which a refresh does not mind.
        since = min(e.timestamp for e in triggering).isoformat()
        # (an event made by hand, in the UI or through the API, may carry no date)
        events = [e for e in context["inlet_events"][PUBLISHED].after(since) if "ds" in e.extra]
        dates = sorted({e.extra["ds"] for e in events})
        current = any(e.extra.get("current") for e in events)
        if current:
            ...  # rebuild from the warehouse's current tables once, whatever the number of dates
        return {"dates": dates, "refreshed": current}

    refresh()


refresh_marketing_mart()
