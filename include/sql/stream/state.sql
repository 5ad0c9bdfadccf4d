-- The stream DAG's durable state, next to the tables it feeds.
-- stream_files: every landing file version a micro-batch has emitted (the idempotency ledger).
CREATE TABLE IF NOT EXISTS stream_files (
    source VARCHAR, file VARCHAR, version VARCHAR, modified TIMESTAMP, ds DATE,
    run_id VARCHAR, processed_at TIMESTAMP
);
-- stream_watermarks: per source, the newest modification time a complete listing has covered.
CREATE TABLE IF NOT EXISTS stream_watermarks (
    source VARCHAR, watermark TIMESTAMP, run_id VARCHAR, updated_at TIMESTAMP
);
-- stream_identifiers: identifiers the stream attached to a profile (new, or moved by a merge)
-- that no published daily build has seen yet. A daily publish that refreshes the current tables
-- drops the entries its build saw (publish/current.sql); nothing here drops any: a publish that
-- keeps the current tables (an old date re-run) or whose build started before a batch recorded
-- an entry has not put that entry in profile_identifiers.
CREATE TABLE IF NOT EXISTS stream_identifiers (
    identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR, dt DATE,
    recorded_at TIMESTAMP
);
-- stream_shared_sessions: sessions a batch made shared devices (more people than their limit)
-- since the last daily publish: later batches keep them out of every profile, as the batch did
-- and as the next daily build will. That publish drops the entries its build saw.
CREATE TABLE IF NOT EXISTS stream_shared_sessions (session_id VARCHAR, dt DATE, recorded_at TIMESTAMP);
-- The daily build's current identity state (publish replaces it); empty before its first run.
CREATE TABLE IF NOT EXISTS profile_identifiers (
    identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR
);
