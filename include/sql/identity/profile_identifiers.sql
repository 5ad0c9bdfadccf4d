{% import "identity/_macros.sql" as m with context %}
-- Each component is a profile, its id derived from its anchor: the email or external_id seen
-- first (earliest landing date, then that row's observation to the second; labels.sql), ties
-- broken by the id itself. A session anchors only a component without either, which the links
-- do not make (a session is a node only through a link to one). The anchor depends only on the
-- data as of the cutoff, so an incremental run and a full rebuild agree; a merged profile's anchor is the older of the two anchors, so the oldest
-- profile's id survives; and identifiers joining a profile land after its anchor did, so ids do
-- not churn as a profile grows.
-- The run's snapshot persists in its schema for the profile tasks; the previous-day snapshot
-- only serves profile_merges in this session.
CREATE OR REPLACE {{ "TABLE " ~ rs ~ "." if persist else "TEMP TABLE " }}profile_identifiers{{ suffix }} AS
WITH earliest AS (
    SELECT label, min(anchor_key) AS anchor_key, min(first_at) AS profile_first_seen
    FROM id_labels{{ suffix }}
    GROUP BY label
),
anchors AS (
    -- md5 only for the earliest identifiers (usually one or two per profile), not for all
    SELECT e.label, e.profile_first_seen,
           min({{ m.anchored_id("l.node_type", "l.node_value") }}) AS profile_id
    FROM earliest e
    JOIN id_labels{{ suffix }} l ON l.label = e.label AND l.anchor_key = e.anchor_key
    GROUP BY e.label, e.profile_first_seen
)
SELECT l.node_type AS identifier_type, l.node_value AS identifier_value, a.profile_id,
       l.first_at AS first_seen, a.profile_first_seen
FROM id_labels{{ suffix }} l
JOIN anchors a ON a.label = l.label;
