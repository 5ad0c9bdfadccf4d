"""
# audience_profiles_erasure

Carries out erasure and suppression requests everywhere the data went, and enforces retention.

```
read_requests -> resolve_requests -> remove_from_warehouse -> pending_erasures
  -> erase (one mapped task per destination) -> record_erasures -> cleanup
remove_from_warehouse -> announce_erasure
record_erasures, retention -> compact_warehouse
```

- **read_requests** stages `erasure_requests/*.csv|json` under the landing root (every suffix the
  landing reads, compressed too: docs/data-contract.md; request_id, identifier_type,
  identifier_value, requested_at, type = delete | suppress), once it has removed the work
  folders of earlier runs whose `cleanup` never ran (killed, or marked by hand).
- **resolve_requests** records new requests (identifier hashed), resolves each one through the
  identity graph to its profiles and all their identifiers, and adds every identifier, hashed, to
  the suppression list: no later daily or stream run builds or exports that person again.
- **remove_from_warehouse** deletes their rows (`delete`) or moves them out of processing
  (`suppress`) in every source, derived and current table, and in the kept run exports.
- **announce_erasure** emits the `audience_profiles_erased` asset event when that carried out a
  request (skipped otherwise): DAGs holding copies refresh them (docs/operations.md).
- **erase** asks each destination to remove them (drops rewritten, `profile_erased` stream
  records, Dotdigital address books); a destination that cannot says `not_supported`.
- **record_erasures** writes one `erasure_log` row per request and destination; a failed
  destination fails this task and is tried again by the next run.
- **retention** removes partitions older than `retention:` in pipeline.yml (`retention_log`).
- **compact_warehouse** copies the DuckDB warehouse into a new file when a request finished or
  retention removed rows since the last copy, so erased values do not stay in the bytes the
  deleted rows freed (skipped otherwise, on Snowflake, and with
  `warehouse.compact_after_erasure: false`).

Warehouse tasks share the `audience_profiles_warehouse` pool with the daily build.
Docs: `docs/privacy.md`.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from audience_profiles import dag_defaults
from audience_profiles.assets import ERASED
from audience_profiles.dag_defaults import DEFAULT_ARGS, WAREHOUSE_POOL, Tag, fails_fast, start_date


def _run() -> tuple[str, str]:
    from audience_profiles.pipeline import logical_ds

    context = get_current_context()
    return logical_ds(context), str(context["run_id"])


@dag(
    dag_id="audience_profiles_erasure",
    # Hourly: a suppression should reach the list before the next daily build reads new data.
    schedule=CronTriggerTimetable("@hourly", timezone="UTC"),
    start_date=start_date(),
    catchup=False,  # every run handles every pending request: missed hours need no catch-up
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[Tag.AUDIENCE_PROFILES, Tag.PRIVACY],
    doc_md=__doc__,
)
def audience_profiles_erasure():
    @task
    @fails_fast  # the first task reads pipeline.yml whole: a mistake there fails it at once
    def read_requests() -> dict:
        from audience_profiles.privacy.erasure import read_requests

        return read_requests(*_run())

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # a warehouse a newer release set up fails at once
    def resolve_requests(staged: dict) -> dict:
        from audience_profiles.privacy.erasure import resolve_requests

        return resolve_requests(staged)

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # as resolve_requests
    def remove_from_warehouse() -> dict:
        from audience_profiles.privacy.erasure import remove_from_warehouse

        return remove_from_warehouse()

    @task(outlets=[ERASED])
    def announce_erasure(removal: dict) -> None:
        from audience_profiles.privacy.erasure import announce_erasure

        announce_erasure(removal, get_current_context())

    @task(pool=WAREHOUSE_POOL)
    def pending_erasures() -> str:
        from audience_profiles.privacy.erasure import pending_erasures

        return pending_erasures(_run()[1])

    @task
    def destinations() -> list[str]:
        return dag_defaults.destination_names()  # a pipeline.yml mistake fails it at once

    @task(map_index_template="{{ destination_name }}")
    def erase(destination_name: str, pending: str) -> dict:
        from audience_profiles.privacy.erasure import erase_destination

        return erase_destination(destination_name, pending)

    # none_failed: with no destination enabled, erase maps to nothing and is skipped.
    @task(pool=WAREHOUSE_POOL, trigger_rule="none_failed")
    def record_erasures(results: list[dict]) -> dict:
        from audience_profiles.privacy.erasure import record_erasures

        return record_erasures(list(results), _run()[1])

    @task
    def cleanup() -> None:
        from audience_profiles.privacy.erasure import cleanup

        cleanup(_run()[1])

    @task(pool=WAREHOUSE_POOL)
    @fails_fast  # a mistake in pipeline.yml's retention section fails at once
    def retention() -> list[dict]:
        from audience_profiles.privacy.retention import apply_retention

        return apply_retention(*_run())

    # Not all_done: a run's state is decided by its last tasks, so after a failed record_erasures
    # this task's upstream_failed is what fails the run. What it finished is compacted for by the
    # next run that gets here (decided from the warehouse).
    @task(pool=WAREHOUSE_POOL)
    def compact_warehouse() -> dict:
        from audience_profiles.privacy.erasure import compact_warehouse

        return compact_warehouse()

    staged = read_requests()
    resolved = resolve_requests(staged)
    pending = pending_erasures()
    removal = remove_from_warehouse()
    resolved >> removal >> pending
    announce_erasure(removal)
    erased = erase.partial(pending=pending).expand(destination_name=destinations())
    recorded = record_erasures(erased)
    recorded >> cleanup().as_teardown(setups=[staged])
    [recorded, retention()] >> compact_warehouse()


audience_profiles_erasure()
