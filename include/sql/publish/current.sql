-- Refresh the warehouse's current-state tables from this run, but only when no later date has
-- been published: re-running or backfilling an old date must not roll the current state back.
-- Tables keyed by date (merges, audit) always take the run's partition.
{% if is_latest %}
CREATE OR REPLACE TABLE audience_profiles AS SELECT * FROM {{ rs }}.audience_profiles;
CREATE OR REPLACE TABLE profile_identifiers AS
    SELECT identifier_type, identifier_value, profile_id FROM {{ rs }}.profile_identifiers;
{% if has_stream %}
{#- The stream's entries this build saw are in the profile_identifiers just written: those of its
    date or earlier recorded before its identity build started (pipeline.resolve_identities; the
    pool keeps batches and daily tasks apart). Later ones stay for a later refreshed publish. -#}
DELETE FROM stream_identifiers
WHERE recorded_at <= (SELECT max(started_at) FROM {{ rs }}.build_started)
  AND (dt < DATE '{{ ds }}'
       -- an entry of the date itself only when the build has its identifier: a row of the date
       -- observed after the date's end (its writer's clock behind UTC) is in no build of it, but
       -- in the next day's, whose publish then takes it over
       OR (dt = DATE '{{ ds }}' AND EXISTS (
           SELECT 1 FROM profile_identifiers p
           WHERE p.identifier_type = stream_identifiers.identifier_type
             AND p.identifier_value = stream_identifiers.identifier_value
             -- under the same profile: a merge the stream made from a row after the date is in
             -- no build of it either
             AND p.profile_id = stream_identifiers.profile_id)));
{% endif %}
{% if has_stream_shared %}
{#- Sessions the stream made shared devices: the build's verdict replaces the stream's for those
    it saw (its date's only when it links the session to nobody, as above). -#}
DELETE FROM stream_shared_sessions
WHERE recorded_at <= (SELECT max(started_at) FROM {{ rs }}.build_started)
  AND (dt < DATE '{{ ds }}'
       OR (dt = DATE '{{ ds }}' AND NOT EXISTS (
           SELECT 1 FROM profile_identifiers p
           WHERE p.identifier_type = 'session_id'
             AND p.identifier_value = stream_shared_sessions.session_id)));
{% endif %}
{#- The largest table is a view over the current tables, not a copy: the copy was the build's
    single most expensive write (bench/README.md), and a view cannot drift from its sources. -#}
{% if interactions_is_table %}
DROP TABLE audience_profile_interactions;  -- a warehouse built before it became a view
{% endif %}
CREATE OR REPLACE VIEW audience_profile_interactions AS
{% with schema = "", ds = none %}{% include "profiles/audience_profile_interactions.sql" %}{% endwith %};
{% endif %}
CREATE TABLE IF NOT EXISTS profile_merges AS SELECT DATE '{{ ds }}' AS dt, * FROM {{ rs }}.profile_merges WHERE false;
DELETE FROM profile_merges WHERE dt = DATE '{{ ds }}';
INSERT INTO profile_merges SELECT DATE '{{ ds }}', * FROM {{ rs }}.profile_merges;
CREATE TABLE IF NOT EXISTS identity_link_audit AS SELECT * FROM {{ rs }}.identity_link_audit WHERE false;
DELETE FROM identity_link_audit WHERE dt = DATE '{{ ds }}';
INSERT INTO identity_link_audit SELECT * FROM {{ rs }}.identity_link_audit WHERE dt = DATE '{{ ds }}';
DELETE FROM published_snapshots WHERE dt = DATE '{{ ds }}';
INSERT INTO published_snapshots (table_name, dt, run_id, published_at, profiles)
SELECT 'all', DATE '{{ ds }}', {{ run_id | literal }}, CAST(current_timestamp AS TIMESTAMP), count(*)
FROM {{ rs }}.audience_profiles;
