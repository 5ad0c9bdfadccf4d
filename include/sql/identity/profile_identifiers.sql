-- Each component is a profile, its id derived from its anchor: the identifier seen first
-- (earliest landing date, then earliest observation to the second), ties broken by the id
-- itself. The anchor depends only on the data as of the cutoff, so an incremental run and a full
-- rebuild agree; a merged profile's anchor is the older of the two anchors, so the oldest
-- profile's id survives; and identifiers joining a profile land after its anchor did, so ids do
-- not churn as a profile grows.
-- The run's snapshot persists in its schema for the profile tasks; the previous-day snapshot
-- only serves profile_merges in this session.
CREATE OR REPLACE {{ "TABLE " ~ rs ~ "." if persist else "TEMP TABLE " }}profile_identifiers{{ suffix }} AS
WITH earliest AS (
    SELECT label, min(seen_key) AS seen_key, min(first_at) AS profile_first_seen
    FROM id_labels{{ suffix }}
    GROUP BY label
),
anchors AS (
    -- md5 only for the earliest identifiers (usually one or two per profile), not for all
    SELECT e.label, e.profile_first_seen,
           'ap_' || min(substr(md5(l.node_type || ':' || l.node_value), 1, 20)) AS profile_id
    FROM earliest e
    JOIN id_labels{{ suffix }} l ON l.label = e.label AND l.seen_key = e.seen_key
    GROUP BY e.label, e.profile_first_seen
)
SELECT l.node_type AS identifier_type, l.node_value AS identifier_value, a.profile_id,
       l.first_at AS first_seen, a.profile_first_seen
FROM id_labels{{ suffix }} l
JOIN anchors a ON a.label = l.label;
