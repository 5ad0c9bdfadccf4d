-- Warehouse tables that accumulate across runs. Source tables are partitioned by dt, the landing
-- partition date (elements are a catalogue, replaced whole; element_history dates its changes);
-- each run overwrites only its dt.
CREATE TABLE IF NOT EXISTS interactions (
    dt DATE, date DATE, event_id VARCHAR, poll_id VARCHAR, session_id VARCHAR,
    option INTEGER, votes INTEGER, _file VARCHAR, _line BIGINT
);
CREATE TABLE IF NOT EXISTS elements (
    poll_id VARCHAR, title VARCHAR, option INTEGER, option_label VARCHAR,
    element_type VARCHAR, event_id VARCHAR, _file VARCHAR, _line BIGINT
);
-- The element catalogue as the daily runs found it, kept as changes (catalogue/record.sql): a
-- row per element whose content changed on the date of the run that first saw it (removed: it
-- left the catalogue). Enrich joins the catalogue in force on its date, so re-running a date
-- after a title changed gives it the titles it had. Element content only: no personal data.
CREATE TABLE IF NOT EXISTS element_history (
    valid_from DATE, poll_id VARCHAR, option INTEGER, title VARCHAR, option_label VARCHAR,
    element_type VARCHAR, event_id VARCHAR, removed BOOLEAN
);
-- The dates whose daily run recorded the catalogue it landed, with its count of changed rows.
CREATE TABLE IF NOT EXISTS element_history_dates (dt DATE, changed BIGINT, recorded_at TIMESTAMP);
-- Every restate_catalogue a run applied, by date and text: a run keeps its conf, so a text seen
-- here for the date is not applied again (its run cleared later, its backfill run again). Kept
-- whole: a later restate that deletes the history after its date leaves these.
CREATE TABLE IF NOT EXISTS element_history_restates (
    dt DATE, restated_by VARCHAR, restated_at TIMESTAMP
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
-- The profiles the date published (the quality checks' volume guard compares a run with it);
-- NULL for dates published before the column was added.
ALTER TABLE published_snapshots ADD COLUMN IF NOT EXISTS profiles BIGINT;
-- Every landing file a date's partitions hold in the warehouse, at the version read: the daily
-- validate replaces a date's rows, a stream batch adds the files it merged. A source's date whose
-- extract found no file (and no file a stream batch merged stands in) has one row with file NULL.
-- The run report compares this with what is on landing now (pipeline.late_landings): a file that
-- landed, or changed, after its date was built. Rows older than the report looks are deleted.
CREATE TABLE IF NOT EXISTS landed_files (
    source VARCHAR, dt DATE, file VARCHAR, version VARCHAR, recorded_at TIMESTAMP
);
-- Each file's rows as the run counts them (validate/file_counts.sql): rows_read = rows_valid +
-- rows_quarantined + rows_aged_out, per file. NULL on rows recorded before the columns were added.
ALTER TABLE landed_files ADD COLUMN IF NOT EXISTS rows_read BIGINT;
ALTER TABLE landed_files ADD COLUMN IF NOT EXISTS rows_valid BIGINT;
ALTER TABLE landed_files ADD COLUMN IF NOT EXISTS rows_quarantined BIGINT;
ALTER TABLE landed_files ADD COLUMN IF NOT EXISTS rows_aged_out BIGINT;
-- The identity rules each date was built with, as a fingerprint of identity.yml's parsed rules:
-- a change regroups profiles with no profile_merges row, so the run after it says so.
CREATE TABLE IF NOT EXISTS identity_rules_log (dt DATE, fingerprint VARCHAR, recorded_at TIMESTAMP);

-- Privacy (docs/privacy.md). Identifiers of people who asked to be erased or suppressed, hashed
-- (privacy/_macros.sql); matched per identifier type. kind: delete | suppress. identifier_hash
-- is lower-cased whatever the type (the join key); exact_hash keeps a session's or SSO id's case
-- as identity does (schema version 3: NULL in entries listed before, which match either case).
CREATE TABLE IF NOT EXISTS suppression_list (
    identifier_type VARCHAR, identifier_hash VARCHAR, kind VARCHAR, request_id VARCHAR,
    added_at TIMESTAMP
);
ALTER TABLE suppression_list ADD COLUMN IF NOT EXISTS exact_hash VARCHAR;
-- Erasure requests as received: the identifier is kept only as its hashes.
CREATE TABLE IF NOT EXISTS erasure_requests (
    request_id VARCHAR, identifier_type VARCHAR, identifier_hash VARCHAR, requested_at TIMESTAMP,
    type VARCHAR, status VARCHAR, reason VARCHAR, received_at TIMESTAMP, resolved_at TIMESTAMP,
    completed_at TIMESTAMP, _file VARCHAR, _line BIGINT
);
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS exact_hash VARCHAR;
-- What a pending request resolved to (plain values: destinations need them); purged once every
-- destination has confirmed the request.
CREATE TABLE IF NOT EXISTS erasure_subjects (
    request_id VARCHAR, identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR
);
-- The profile ids a finished suppress request resolved, kept (pseudonymous ids, no identifier)
-- once its plain identifiers are purged: a later delete that takes the person over
-- (privacy/requests.sql) tells destinations to erase those profiles, and drops these rows.
CREATE TABLE IF NOT EXISTS suppressed_profiles (request_id VARCHAR, profile_id VARCHAR);
-- One row per request and destination (plus the warehouse and the suppression list); attempts
-- counts the erasure runs that tried it, run_id names the last one.
CREATE TABLE IF NOT EXISTS erasure_log (
    request_id VARCHAR, destination VARCHAR, status VARCHAR, detail VARCHAR, attempts INTEGER,
    first_at TIMESTAMP, updated_at TIMESTAMP, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS retention_log (
    ds DATE, run_id VARCHAR, target VARCHAR, table_name VARCHAR, cutoff DATE, rows_removed BIGINT,
    ran_at TIMESTAMP
);
-- Rows of suppressed people (type suppress): kept, but out of every build and export.
CREATE TABLE IF NOT EXISTS restricted_form_entries AS SELECT * FROM form_entries WHERE false;
CREATE TABLE IF NOT EXISTS restricted_identities AS SELECT * FROM identities WHERE false;
CREATE TABLE IF NOT EXISTS restricted_interactions AS SELECT * FROM interactions WHERE false;
CREATE TABLE IF NOT EXISTS restricted_quarantine AS SELECT * FROM quarantine WHERE false;
