-- Each component becomes a profile. Its id is derived from its anchor: the identifier first seen
-- (earliest landing partition, then earliest observation, then by value). Ids are therefore the
-- same in an incremental run and a full rebuild, and when profiles merge the anchor of the older
-- one comes first, so the older id survives.
CREATE OR REPLACE TABLE {{ rs }}.profile_identifiers{{ suffix }} AS
WITH members AS (
    SELECT l.label, n.node, n.node_type, n.node_value, n.first_dt, n.first_observed_at
    FROM {{ rs }}.id_labels{{ suffix }} l JOIN {{ rs }}.id_nodes{{ suffix }} n USING (node_id)
),
anchors AS (
    SELECT label, node AS anchor,
           min(first_observed_at) OVER (PARTITION BY label) AS profile_first_seen
    FROM members
    QUALIFY row_number() OVER (PARTITION BY label ORDER BY first_dt, first_observed_at, node) = 1
)
SELECT m.node_type AS identifier_type, m.node_value AS identifier_value,
       'ap_' || substr(md5(a.anchor), 1, 20) AS profile_id,
       m.first_observed_at AS first_seen, a.profile_first_seen
FROM members m JOIN anchors a USING (label);
