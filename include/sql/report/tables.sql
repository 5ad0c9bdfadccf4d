-- The run report's tables (see audience_profiles/report.py), created on first use.
CREATE TABLE IF NOT EXISTS pipeline_runs (
    ds DATE,
    run_id VARCHAR,
    state VARCHAR,
    rows_read BIGINT,
    rows_quarantined BIGINT,
    profiles BIGINT,
    profiles_created BIGINT,
    merges BIGINT,
    rows_delivered BIGINT,
    delivery_failures BIGINT,
    seconds DOUBLE,
    reported_at TIMESTAMP,
    report VARCHAR
);
CREATE TABLE IF NOT EXISTS quality_checks (
    dt DATE,
    run_id VARCHAR,
    check_name VARCHAR,
    failures BIGINT,
    checked_at TIMESTAMP
);
