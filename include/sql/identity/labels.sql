{% import "identity/_macros.sql" as idm with context %}
-- The identity graph's nodes with their component label. Nodes: every usable email and
-- external_id, even when all its links were rejected (a kiosk entrant is still a person, with a
-- profile of their own), and every session with an accepted link (a session on its own is
-- anonymous, a shared device nobody): the sessions in id_cc_map, which holds every session with
-- an accepted link (the star round, cc_stars.sql). Label: the smallest email or external_id node
-- id of the component, or the node's own id when it has no accepted link.
CREATE OR REPLACE TEMP TABLE id_labels{{ suffix }} AS
SELECT v.node_id, coalesce(m.parent, v.node_id) AS label, v.node_type, v.node_value, v.first_at,
       -- the anchor order (profile_identifiers.sql): first seen first (links.sql seen_key), every
       -- email and external_id before any session. A session is a cookie: it can be seen long
       -- before it links to anyone (through links the rules rejected) and can pass from one
       -- person to another, so a profile named after one could be re-keyed by it or hand its
       -- id to someone else.
       {{ idm.anchor_key("v.seen_key", "v.node_type") }} AS anchor_key
FROM id_values{{ suffix }} v
LEFT JOIN id_cc_map{{ suffix }} m ON m.node = v.node_id
WHERE v.blocked IS NULL AND (v.node_type <> 'session_id' OR m.node IS NOT NULL);
-- Everything later reads the nodes from here.
DROP TABLE id_values{{ suffix }};
