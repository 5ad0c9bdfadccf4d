-- Warehouse tables that accumulate across runs. Source tables are partitioned by dt, the landing
-- partition date (elements are a catalogue, replaced whole); each run overwrites only its dt.
CREATE TABLE IF NOT EXISTS interactions (
    dt DATE, date DATE, event_id VARCHAR, poll_id VARCHAR, session_id VARCHAR,
    option INTEGER, votes INTEGER, _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS elements (
    poll_id VARCHAR, title VARCHAR, option INTEGER, option_label VARCHAR,
    element_type VARCHAR, event_id VARCHAR, _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS form_entries (
    dt DATE, entry_datetime TIMESTAMP, first_name VARCHAR, last_name VARCHAR,
    email VARCHAR, email_raw VARCHAR, optin_1 BOOLEAN, optin_2 BOOLEAN, accept_terms BOOLEAN,
    session_id VARCHAR, form_name VARCHAR, form_id INTEGER, _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS identities (
    dt DATE, observed_at TIMESTAMP, session_id VARCHAR, external_id VARCHAR,
    email VARCHAR, first_name VARCHAR, last_name VARCHAR, _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS quarantine (
    dt DATE, source VARCHAR, file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR
);
CREATE TABLE IF NOT EXISTS interactions_enriched (
    dt DATE, date DATE, event_id VARCHAR, poll_id VARCHAR, title VARCHAR, element_type VARCHAR,
    session_id VARCHAR, option INTEGER, option_label VARCHAR, votes INTEGER,
    _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS published_snapshots (
    table_name VARCHAR, dt DATE, run_id VARCHAR, published_at TIMESTAMP
);
