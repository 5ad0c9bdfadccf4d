-- When rows were last freed for good by the erasure DAG: a request finished (its plain
-- identifiers in erasure_subjects purged with it, its people's rows removed before), or
-- retention removed rows. compact_warehouse copies the DuckDB file when this is later than the
-- last copy, so the freed bytes do not keep what they held. Not retention's run folders (the
-- log's work_dir/runs rows): files under work_dir, no rows in the warehouse.
SELECT greatest(
    (SELECT max(completed_at) FROM erasure_requests WHERE status = 'done'),
    (SELECT max(ran_at) FROM retention_log
     WHERE rows_removed > 0 AND table_name <> {{ run_folders | literal }})
) AS freed_at
