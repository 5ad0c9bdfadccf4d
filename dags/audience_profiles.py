"""
# audience_profiles

The daily build of **Audience Profiles** from fan-engagement data, one run per landing date.

```
wait_for_landing -> extract (per source) -> validate -> enrich -> resolve_identities
  -> build_profiles -> build_segments -> check_quality -> publish -> deliver (per destination)
  -> cleanup -> report
```

- **wait_for_landing** waits for the partitions `landing_wait.required` lists, up to a deadline.
- **extract** (mapped per source): the partitions as text with file and line; a bad file fails.
- **validate** types every row (read = kept + quarantined + aged out); a bad row's reason names
  the field. Re-runs keep the date's titles; param `restate_catalogue`: see docs/operations.md.
- **resolve_identities** links identifiers into profiles as of the day's end (re-runs agree).
- **check_quality** audits the outputs; if a check fails nothing is delivered, the task fails
  at once (no retries: the data would not change) and its log and alert name the check.
- **publish** exports the tables; **deliver** sends them to every enabled destination (a failing
  one blocks no other). Both emit asset events to schedule DAGs on (docs/operations.md).
- **report** (a teardown: a failed run stays failed): counts, quarantine, merges, deliveries,
  late files to `pipeline_runs` and `<output>/reports/`, whatever happened before it.

Every write is keyed by the logical date: re-run or backfill any date safely (backfills need
`--reprocess-behavior failed|completed`: validate and enrich wait for the previous date's, as
each date builds on all earlier partitions). Warehouse tasks share the `audience_profiles_warehouse`
pool (DuckDB has one writer). Retries, failures and a run unfinished `alerts.late_after_hours`
after its day post an alert. Docs: `docs/operations.md`; config: `include/config/pipeline.yml`.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from audience_profiles import assets, dag_defaults
from audience_profiles.dag_defaults import DEFAULT_ARGS, WAREHOUSE_POOL, Tag, fails_fast, start_date
from audience_profiles.operators.deliver import DeliverOperator
from audience_profiles.operators.wait_for_landing import WaitForLandingOperator


def _window():
    from audience_profiles.pipeline import RunWindow

    return RunWindow.from_context(get_current_context())


@dag(
    dag_id="audience_profiles",
    # D's run covers [D, D+1), once D is over (Airflow 3's "@daily" has intervals of no width).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=start_date(),
    deadline=dag_defaults.late_run_deadline(),
    catchup=True,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    params=dag_defaults.daily_params(),
    tags=[Tag.AUDIENCE_PROFILES, Tag.DAILY],
    doc_md=__doc__,
)
def audience_profiles():
    @task(map_index_template="{{ source }}", max_active_tis_per_dag=2)
    def extract(source: str) -> dict:
        from audience_profiles.pipeline import extract_source

        return extract_source(source, _window())

    # D's profiles read every partition up to D: in a backfill or catch-up, D's are loaded and
    # enriched after D-1's, and D's catalogue recorded (`elements` replaced) after D-1's enrich.
    @task(pool=WAREHOUSE_POOL, depends_on_past=True, wait_for_downstream=True)
    @fails_fast  # it reads identity.yml (the suppression list's rules)
    def validate(staged: list[dict], params: dict) -> dict:
        from audience_profiles.pipeline import validate

        # staged[:]: one request (iterating read past the end); params: dag_defaults.daily_params
        return validate(_window(), list(staged[:]), restate_catalogue=params["restate_catalogue"])

    @task(pool=WAREHOUSE_POOL, depends_on_past=True)
    def enrich() -> dict:
        from audience_profiles.pipeline import enrich

        return enrich(_window())

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # a mistake in its YAML file fails at once
    def resolve_identities() -> dict:
        from audience_profiles.pipeline import resolve_identities

        return resolve_identities(_window())

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # its run's build gone (cleaned up): clear from resolve_identities
    def build_profiles() -> dict:
        from audience_profiles.pipeline import build_profiles

        return build_profiles(_window())

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # a mistake in its YAML file fails at once
    def build_segments() -> dict:
        from audience_profiles.pipeline import build_segments

        return build_segments(_window())

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # the same data fails the same check again: no retry
    def check_quality() -> dict:
        from audience_profiles.pipeline import check_quality

        return check_quality(_window())

    @task(pool=WAREHOUSE_POOL, outlets=[assets.PUBLISHED])
    def publish() -> dict[str, str]:
        from audience_profiles.pipeline import publish_from_context

        return publish_from_context(get_current_context())

    @task
    def destinations() -> list[str]:
        return dag_defaults.destination_names()  # a pipeline.yml mistake fails it at once

    @task(pool=WAREHOUSE_POOL)
    def cleanup() -> None:
        from audience_profiles.pipeline import cleanup

        cleanup(_window())

    @task(pool=WAREHOUSE_POOL)
    def report() -> dict:
        from audience_profiles.report import report_from_context

        return report_from_context(get_current_context())

    staged = extract.expand(source=list(dag_defaults.EXTRACT_SOURCES))
    WaitForLandingOperator(task_id="wait_for_landing") >> staged
    built = validate(staged) >> enrich() >> resolve_identities() >> build_profiles()
    tables = publish()
    built >> build_segments() >> check_quality() >> tables
    delivered = DeliverOperator.partial(
        task_id="deliver",
        tables=tables,
        outlets=[assets.DELIVERED, assets.DELIVERED_TO],
        map_index_template="{{ task.destination_name }}",
    ).expand(destination_name=(names := destinations()))
    # Teardowns wait for every upstream (retrying extracts too); report has no setup: failed stays red
    [delivered, staged, names] >> cleanup().as_teardown(setups=[tables]) >> report().as_teardown()


audience_profiles()
