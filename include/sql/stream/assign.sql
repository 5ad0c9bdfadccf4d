{% import "identity/_macros.sql" as idm with context %}
-- Profile ids for the components of the batch's graph (see graph.sql), by the daily build's
-- anchor rule (identity/profile_identifiers.sql):
-- - no known profile: a new profile, 'ap_' + md5 of its anchor, the identifier first seen
--   (an email or external_id before any session; earliest landing date, then that row's
--   observation; then by the id);
-- - one known profile: that profile;
-- - several: they merge; the one whose own anchor was seen first survives, as in a rebuild.
-- Also the profiles whose sessions interacted in the batch. Outputs: profile_identifiers (every
-- identifier of every touched profile, the shape profiles/audience_profiles.sql reads), changed
-- (identifiers whose profile is new or moved), profile_merges.

-- Every identifier of the batch's graph with its component: its own label, or the smallest
-- label a known profile joined it to (id_cc_map_s).
CREATE OR REPLACE TABLE {{ rs }}.id_nodes AS
SELECT l.node_id, coalesce(m.parent, l.label) AS label, l.node_type, l.node_value,
       l.node_type || ':' || l.node_value AS node, l.anchor_key
FROM id_labels l
LEFT JOIN id_cc_map_s m ON m.node = l.label;

-- Profiles the batch's interactions belong to (by session), before any merge.
CREATE OR REPLACE TABLE {{ rs }}.interaction_profiles AS
SELECT DISTINCT s.profile_id
FROM {{ rs }}.state s
JOIN {{ bs }}.interactions i ON s.identifier_type = 'session_id' AND s.identifier_value = i.session_id;

-- Every identifier the state gives those profiles and the ones the graph touches.
CREATE OR REPLACE TABLE {{ rs }}.members AS
SELECT s.identifier_type, s.identifier_value, s.profile_id
FROM {{ rs }}.state s
WHERE s.profile_id IN (SELECT profile_id FROM {{ rs }}.node_profile)
   OR s.profile_id IN (SELECT profile_id FROM {{ rs }}.interaction_profiles);

-- When each of those identifiers and the batch's was first seen, from the whole link history.
CREATE OR REPLACE TABLE {{ rs }}.identifier_stats AS
WITH wanted AS (
    SELECT identifier_type AS t, identifier_value AS v FROM {{ rs }}.members
    UNION
    SELECT node_type, node_value FROM {{ rs }}.id_nodes
),
seen AS (
    SELECT 'session_id' AS t, session_id AS v, dt, entry_datetime AS observed_at FROM {{ home }}.form_entries
    UNION ALL SELECT 'email', email, dt, entry_datetime FROM {{ home }}.form_entries
    UNION ALL SELECT 'session_id', session_id, dt, observed_at FROM {{ home }}.identities
    UNION ALL SELECT 'external_id', external_id, dt, observed_at FROM {{ home }}.identities
    UNION ALL SELECT 'email', email, dt, observed_at FROM {{ home }}.identities WHERE email IS NOT NULL
)
SELECT w.t AS identifier_type, w.v AS identifier_value, min(s.observed_at) AS first_seen,
       -- the daily anchor order (identity/_macros.sql)
       {{ idm.anchor_key("min(" ~ idm.row_seen_key("s.dt", "s.observed_at") ~ ")", "w.t") }} AS anchor_key
FROM wanted w LEFT JOIN seen s ON s.t = w.t AND s.v = w.v
GROUP BY w.t, w.v;

CREATE OR REPLACE TABLE {{ rs }}.component_known AS
SELECT DISTINCT n.label, np.profile_id
FROM {{ rs }}.node_profile np JOIN {{ rs }}.id_nodes n USING (node_id);

-- identity.yml's per-profile limits (a profile holds one external_id: two SSO accounts never
-- merge). Splitting a component the way the daily build does needs its whole graph; a batch sees
-- only part of it, so a component over a limit is left to the daily build: its new identifiers
-- get no profile here and no known profile moves (nothing is emitted that the daily build would
-- contradict; the batch's interactions of known sessions still go out).
CREATE OR REPLACE TABLE {{ rs }}.over_limit AS
{% if per_profile %}
SELECT label FROM (
    SELECT label, node_type AS t, node_value AS v FROM {{ rs }}.id_nodes
    UNION
    SELECT k.label, s.identifier_type, s.identifier_value
    FROM {{ rs }}.component_known k JOIN {{ rs }}.state s USING (profile_id)
) identifiers
WHERE t IN ({% for t in per_profile %}{{ t | literal }}{{ ", " if not loop.last }}{% endfor %})
GROUP BY label
HAVING {% for t in per_profile %}count(DISTINCT CASE WHEN t = {{ t | literal }} THEN v END) > 1{{ " OR " if not loop.last }}{% endfor %};
{% else %}
SELECT CAST(NULL AS BIGINT) AS label WHERE false;
{% endif %}

CREATE OR REPLACE TABLE {{ rs }}.component_profile AS
WITH anchors AS (
    -- a known profile's anchor is the identifier its id was derived from
    SELECT m.profile_id, st.anchor_key,
           m.identifier_type || ':' || m.identifier_value AS node
    FROM {{ rs }}.members m
    JOIN {{ rs }}.identifier_stats st USING (identifier_type, identifier_value)
    WHERE {{ idm.anchored_id("m.identifier_type", "m.identifier_value") }} = m.profile_id
),
survivors AS (
    SELECT k.label, k.profile_id
    FROM {{ rs }}.component_known k LEFT JOIN anchors a USING (profile_id)
    QUALIFY row_number() OVER (
        PARTITION BY k.label
        ORDER BY a.anchor_key NULLS LAST, k.profile_id) = 1
),
fresh AS (
    SELECT n.label, {{ idm.anchored_id("n.node_type", "n.node_value") }} AS profile_id
    FROM {{ rs }}.id_nodes n
    WHERE n.label NOT IN (SELECT label FROM {{ rs }}.component_known)
    QUALIFY row_number() OVER (
        -- the daily build's anchor order (identity/labels.sql anchor_key, then the id itself)
        PARTITION BY n.label ORDER BY n.anchor_key, {{ idm.anchored_id("n.node_type", "n.node_value") }}) = 1
)
SELECT label, profile_id FROM survivors WHERE label NOT IN (SELECT label FROM {{ rs }}.over_limit)
UNION ALL
SELECT label, profile_id FROM fresh WHERE label NOT IN (SELECT label FROM {{ rs }}.over_limit);

CREATE OR REPLACE TABLE {{ rs }}.remap AS
SELECT k.profile_id AS merged_profile_id, c.profile_id AS surviving_profile_id
FROM {{ rs }}.component_known k JOIN {{ rs }}.component_profile c USING (label)
WHERE k.profile_id <> c.profile_id;

CREATE OR REPLACE TABLE {{ rs }}.profile_identifiers AS
WITH final AS (
    SELECT n.node_type AS identifier_type, n.node_value AS identifier_value, c.profile_id
    FROM {{ rs }}.id_nodes n
    JOIN {{ rs }}.component_profile c USING (label)
    UNION
    SELECT m.identifier_type, m.identifier_value, coalesce(r.surviving_profile_id, m.profile_id)
    FROM {{ rs }}.members m LEFT JOIN {{ rs }}.remap r ON r.merged_profile_id = m.profile_id
)
SELECT f.identifier_type, f.identifier_value, f.profile_id, st.first_seen,
       min(st.first_seen) OVER (PARTITION BY f.profile_id) AS profile_first_seen
FROM final f
LEFT JOIN {{ rs }}.identifier_stats st USING (identifier_type, identifier_value);

CREATE OR REPLACE TABLE {{ rs }}.changed AS
SELECT f.identifier_type, f.identifier_value, f.profile_id
FROM {{ rs }}.profile_identifiers f
LEFT JOIN {{ rs }}.state s USING (identifier_type, identifier_value)
WHERE s.profile_id IS NULL OR s.profile_id <> f.profile_id;

CREATE OR REPLACE TABLE {{ rs }}.profile_merges AS
WITH batch_links AS (
    SELECT left_type AS t, left_value AS v, observed_at FROM {{ rs }}.batch_links
),
merge_time AS (
    -- when the survivor gained the batch's links: the moment the merge happened
    SELECT p.profile_id, max(b.observed_at) AS merged_at
    FROM batch_links b
    JOIN {{ rs }}.profile_identifiers p ON p.identifier_type = b.t AND p.identifier_value = b.v
    GROUP BY p.profile_id
),
named AS (
    -- the merged-away profile's earliest-seen identifier
    SELECT m.profile_id, m.identifier_type, m.identifier_value
    FROM {{ rs }}.members m
    LEFT JOIN {{ rs }}.identifier_stats st USING (identifier_type, identifier_value)
    QUALIFY row_number() OVER (
        PARTITION BY m.profile_id
        ORDER BY st.first_seen NULLS LAST, m.identifier_type, m.identifier_value) = 1
)
SELECT r.merged_profile_id, r.surviving_profile_id, t.merged_at, 'shared_identifier' AS reason,
       n.identifier_type, n.identifier_value
FROM {{ rs }}.remap r
LEFT JOIN merge_time t ON t.profile_id = r.surviving_profile_id
LEFT JOIN named n ON n.profile_id = r.merged_profile_id;
